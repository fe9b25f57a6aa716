"""Object-level GlaS metrics (detection F1, object Dice, object Hausdorff) and their accumulator.

Object metrics follow the GlaS challenge (Sirinukunwattana et al., MedIA 2017) and its official
MATLAB evaluation code (``F1score.m``, ``ObjectDice.m``, ``ObjectHausdorff.m``), including the
details the paper leaves implicit, so that numbers are comparable with published ones:

* **Detection (F1).** Each segmented object S is paired with the ground-truth object G it overlaps
  most. S is a true positive when ``|S ∩ G| / |G| > 0.5``: more than half *of the ground-truth
  object's* area (the challenge text says "at least 50% of its ground truth", the official code
  uses a strict ``>``; we follow the code). Because two disjoint objects cannot both cover more
  than half of the same G, every G is matched at most once. Other segmented objects are false
  positives; FN = #G - TP (the challenge text: a G with no partner, or covered by less than half,
  is a false negative).
* **Object Dice / Hausdorff.** Area-weighted over both directions, each object paired with the
  object of the other set it overlaps most (Dice 0 without overlap). For Hausdorff an object with
  no overlapping partner is paired with the object of the other set at minimum Hausdorff distance.
  Hausdorff is taken between the full pixel sets (not only contours), Euclidean, in pixels.
* Ties in "overlaps most" / "nearest" go to the smallest label (MATLAB ``mode`` / ``min``).
* A label value that occurs in several disconnected pieces is one object, as in the official code;
  relabel connected components first if that is not wanted. A *binary* mask (one value > 0, as
  0/1 or 0/255 exports) cannot name glands, so :func:`instances_from_mask` makes each connected
  component (8-connected) one gland; ``evaluate`` does so and says how many masks it relabelled.

Conventions where the official code is silent or undefined:

* both images empty: F1 = 1, object Dice = 1, object Hausdorff = 0 (and pixel Dice = Jaccard =
  1 in :mod:`.metrics`);
* exactly one image empty: F1 = 0, object Dice = 0, object Hausdorff = NaN (the Hausdorff distance
  to an empty set is undefined; the official code crashes or returns Inf). Averages skip NaN
  images and report how many were skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .errors import InputError


def _check_shapes(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")


def instances_from_mask(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """(instance labels, was binary): a mask with a single value > 0 (0/1, 0/255) gets one
    label per 8-connected component, so each gland is an object; instance masks are kept."""
    m = np.asarray(mask)
    present = np.unique(m[m > 0]) if m.size else np.empty(0)
    if present.size != 1:
        return m, False
    labels, _ = ndi.label(m > 0, structure=np.ones((3,) * m.ndim, bool))
    return labels.astype(np.int32), True


# --------------------------------------------------------------------------------------------
# Object metrics (GlaS)
# --------------------------------------------------------------------------------------------


def _consecutive_ids(labels: np.ndarray) -> np.ndarray:
    """Map labels to 0 (background, label <= 0) and 1..n in increasing label order.

    Keeping the order means "smallest id" tie-breaks equal "smallest label" ones. Small
    non-negative integer labels go through a lookup table, which is much faster than sorting.
    """
    lab = np.asarray(labels)
    if lab.dtype == bool:
        return lab.astype(np.int64)
    if np.issubdtype(lab.dtype, np.integer) and lab.size:
        lab = np.maximum(lab, 0)
        top = int(lab.max())
        if top <= 4 * lab.size + 1024:
            present = np.bincount(lab.ravel(), minlength=top + 1) > 0
            present[0] = False
            lut = np.cumsum(present)
            return lut[lab]
    lab = np.where(lab > 0, lab, 0)
    values, inverse = np.unique(lab, return_inverse=True)
    ids = inverse.reshape(lab.shape).astype(np.int64)
    if values.size and values[0] != 0:
        ids += 1  # no background pixel at all: every value is an object
    return ids


class _Objects:
    """Objects of one label image as consecutive ids 1..n, with areas, bounding boxes and, built
    lazily per object, its pixels split into edge / interior and a KD-tree of the edge."""

    def __init__(self, labels: np.ndarray) -> None:
        ids = _consecutive_ids(labels)
        self.ids = ids
        self.n = int(ids.max()) if ids.size else 0
        self.areas = np.bincount(ids.ravel(), minlength=self.n + 1).astype(np.int64)
        self.slices = ndi.find_objects(ids, max_label=self.n) if self.n else []
        # Inclusive bounding boxes, row k-1 for object k.
        self.lo = np.array([[s.start for s in sl] for sl in self.slices], dtype=np.int64)
        self.hi = np.array([[s.stop - 1 for s in sl] for sl in self.slices], dtype=np.int64)
        self._parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._trees: dict[int, cKDTree] = {}

    def parts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(edge, interior) pixel coordinates of object k, each (m, ndim).

        Edge pixels have a face (4-connected in 2D) neighbour outside the object.
        """
        if k not in self._parts:
            sl = self.slices[k - 1]
            mask = self.ids[sl] == k
            structure = ndi.generate_binary_structure(mask.ndim, 1)
            inner = ndi.binary_erosion(mask, structure=structure, border_value=0)
            offset = np.array([s.start for s in sl], dtype=np.int64)
            self._parts[k] = (np.argwhere(mask & ~inner) + offset, np.argwhere(inner) + offset)
        return self._parts[k]

    def tree(self, k: int) -> cKDTree:
        """KD-tree of the edge pixels of object k.

        For a pixel outside the object the nearest object pixel is always an edge pixel (an
        interior one has a neighbour one step closer), so distances to the object equal
        distances to this much smaller set.
        """
        if k not in self._trees:
            self._trees[k] = cKDTree(self.parts(k)[0])
        return self._trees[k]


def _directed(src: _Objects, i: int, dst: _Objects, j: int) -> float:
    """Directed Hausdorff distance: max over pixels a of src object i of dist(a, dst object j).

    Only edge pixels of i, and interior pixels strictly inside j's bounding box on every axis,
    can attain the maximum: from an interior pixel at or beyond j's box on some axis, stepping
    outward along that axis increases the distance to every pixel of j, and repeating ends on an
    edge pixel of i. This keeps the exact value while querying far fewer points.
    """
    edge, inner = src.parts(i)
    lo, hi = dst.lo[j - 1], dst.hi[j - 1]
    if inner.size:
        inner = inner[np.all((inner > lo) & (inner < hi), axis=1)]
        pts = np.concatenate([edge, inner]) if inner.size else edge
    else:
        pts = edge
    pts = pts[dst.ids[tuple(pts.T)] != j]
    if not pts.size:
        return 0.0
    dist, _ = dst.tree(j).query(pts)
    return float(np.max(dist))


class _Pairing:
    """Overlaps and (cached) Hausdorff distances between the objects of S and G."""

    def __init__(self, seg: _Objects, gt: _Objects) -> None:
        self.seg = seg
        self.gt = gt
        size = (gt.n + 1) * (seg.n + 1)
        flat = gt.ids.ravel() * (seg.n + 1) + seg.ids.ravel()
        self.overlap = np.bincount(flat, minlength=size).reshape(gt.n + 1, seg.n + 1)
        self._haus: dict[tuple[int, int], float] = {}

    def gt_partner(self, j: int) -> int:
        """G object overlapping S_j most (smallest label on ties), 0 when none overlaps."""
        col = self.overlap[1:, j]
        if col.size == 0:
            return 0
        g = int(np.argmax(col)) + 1
        return g if col[g - 1] > 0 else 0

    def seg_partner(self, i: int) -> int:
        """S object overlapping G_i most (smallest label on ties), 0 when none overlaps."""
        row = self.overlap[i, 1:]
        if row.size == 0:
            return 0
        s = int(np.argmax(row)) + 1
        return s if row[s - 1] > 0 else 0

    def dice(self, i: int, j: int) -> float:
        """Dice(G_i, S_j); 0 when either is the empty placeholder 0."""
        if i == 0 or j == 0:
            return 0.0
        return 2.0 * self.overlap[i, j] / (self.gt.areas[i] + self.seg.areas[j])

    def hausdorff(self, i: int, j: int) -> float:
        """Symmetric Hausdorff distance between the pixel sets of G_i and S_j."""
        key = (i, j)
        if key not in self._haus:
            self._haus[key] = max(
                _directed(self.gt, i, self.seg, j), _directed(self.seg, j, self.gt, i)
            )
        return self._haus[key]

    def nearest(self, k: int, side: str) -> tuple[int, float]:
        """Object of the other set at minimum Hausdorff distance from object k of ``side``.

        The official code computes all distances; we visit candidates by a lower bound (the
        largest difference of bounding-box extents, which any Hausdorff distance exceeds or
        equals) and stop once it passes the best distance, which gives the same answer.
        """
        if side == "seg":
            other, lo, hi = self.gt, self.seg.lo[k - 1], self.seg.hi[k - 1]
        else:
            other, lo, hi = self.seg, self.gt.lo[k - 1], self.gt.hi[k - 1]
        bound = np.maximum(np.abs(other.lo - lo), np.abs(other.hi - hi)).max(axis=1)
        best, best_id = math.inf, 0
        for idx in np.lexsort((np.arange(other.n), bound)):
            if bound[idx] > best:
                break
            cand = int(idx) + 1
            h = self.hausdorff(cand, k) if side == "seg" else self.hausdorff(k, cand)
            if h < best or (h == best and cand < best_id):
                best, best_id = h, cand
        return best_id, best


@dataclass(frozen=True)
class ObjectStats:
    """Object-level counts and area-weighted sums of one image, enough to pool over a dataset.

    ``dice_seg_sum`` is Σ_j |S_j| Dice(G*(S_j), S_j), ``dice_gt_sum`` is Σ_i |G_i| Dice(G_i,
    S*(G_i)); the Hausdorff sums likewise. The Hausdorff sums are NaN when undefined (exactly one
    image empty) or not computed.
    """

    tp: int
    fp: int
    fn: int
    n_seg: int
    n_gt: int
    area_seg: int
    area_gt: int
    dice_seg_sum: float
    dice_gt_sum: float
    hausdorff_seg_sum: float
    hausdorff_gt_sum: float

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when there is no object in either image."""
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2.0 * self.tp / denom

    @property
    def dice(self) -> float:
        """Object Dice of this image: 1.0 if both empty, 0.0 if exactly one is."""
        if self.n_seg == 0 and self.n_gt == 0:
            return 1.0
        if self.n_seg == 0 or self.n_gt == 0:
            return 0.0
        return 0.5 * (self.dice_seg_sum / self.area_seg + self.dice_gt_sum / self.area_gt)

    @property
    def hausdorff(self) -> float:
        """Object Hausdorff of this image in pixels: 0.0 if both empty, NaN if exactly one is."""
        if self.n_seg == 0 and self.n_gt == 0:
            return 0.0
        if self.n_seg == 0 or self.n_gt == 0:
            return math.nan
        return 0.5 * (self.hausdorff_seg_sum / self.area_seg + self.hausdorff_gt_sum / self.area_gt)


def object_metrics(pred: np.ndarray, gt: np.ndarray, *, hausdorff: bool = True) -> ObjectStats:
    """GlaS object-level statistics of one image from instance label images (0 = background).

    ``hausdorff=False`` skips the (most expensive) Hausdorff part; its sums are then NaN.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _check_shapes(pred, gt)
    seg, ref = _Objects(pred), _Objects(gt)
    pair = _Pairing(seg, ref)
    n_seg, n_gt = seg.n, ref.n

    seg_partner = [pair.gt_partner(j) for j in range(1, n_seg + 1)]
    gt_partner = [pair.seg_partner(i) for i in range(1, n_gt + 1)]

    tp = sum(
        1
        for j, i in enumerate(seg_partner, start=1)
        if i and pair.overlap[i, j] / ref.areas[i] > 0.5
    )

    dice_seg = sum(seg.areas[j] * pair.dice(i, j) for j, i in enumerate(seg_partner, start=1))
    dice_gt = sum(ref.areas[i] * pair.dice(i, j) for i, j in enumerate(gt_partner, start=1))

    h_seg = h_gt = math.nan
    if hausdorff and (n_seg == 0) == (n_gt == 0):
        h_seg = 0.0
        for j, i in enumerate(seg_partner, start=1):
            h = pair.hausdorff(i, j) if i else pair.nearest(j, "seg")[1]
            h_seg += seg.areas[j] * h
        h_gt = 0.0
        for i, j in enumerate(gt_partner, start=1):
            h = pair.hausdorff(i, j) if j else pair.nearest(i, "gt")[1]
            h_gt += ref.areas[i] * h

    return ObjectStats(
        tp=tp,
        fp=n_seg - tp,
        fn=n_gt - tp,
        n_seg=n_seg,
        n_gt=n_gt,
        area_seg=int(seg.areas[1:].sum()),
        area_gt=int(ref.areas[1:].sum()),
        dice_seg_sum=float(dice_seg),
        dice_gt_sum=float(dice_gt),
        hausdorff_seg_sum=float(h_seg),
        hausdorff_gt_sum=float(h_gt),
    )


def object_f1(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS detection F1 of one image (1.0 when both have no object)."""
    return object_metrics(pred, gt, hausdorff=False).f1


def object_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object Dice of one image (1.0 both empty, 0.0 one empty)."""
    return object_metrics(pred, gt, hausdorff=False).dice


def object_hausdorff(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object Hausdorff of one image in pixels (0.0 both empty, NaN one empty)."""
    return object_metrics(pred, gt).hausdorff


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


class ObjectAccumulator:
    """GlaS object metrics over a test set, pooled (challenge ranking) and per-image means.

    Pooled: F1 from summed TP/FP/FN; object Dice/Hausdorff weighted by object area over all
    objects of all images. Images whose Hausdorff is undefined (exactly one side empty) are left
    out of both Hausdorff aggregates and counted in ``n_hausdorff_undefined``.
    """

    def __init__(self, *, hausdorff: bool = True) -> None:
        self.compute_hausdorff = hausdorff
        self.stats: list[ObjectStats] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> ObjectStats:
        """Add one image (instance labels); returns its statistics."""
        st = object_metrics(pred, gt, hausdorff=self.compute_hausdorff)
        self.stats.append(st)
        return st

    @property
    def n_images(self) -> int:
        return len(self.stats)

    @property
    def f1(self) -> float:
        tp = sum(s.tp for s in self.stats)
        fp = sum(s.fp for s in self.stats)
        fn = sum(s.fn for s in self.stats)
        denom = 2 * tp + fp + fn
        if not self.stats:
            return math.nan
        return 1.0 if denom == 0 else 2.0 * tp / denom

    @property
    def dice(self) -> float:
        """Pooled object Dice: 1.0 if no object anywhere, 0.0 if one side never has any."""
        if not self.stats:
            return math.nan
        area_s = sum(s.area_seg for s in self.stats)
        area_g = sum(s.area_gt for s in self.stats)
        if area_s == 0 and area_g == 0:
            return 1.0
        if area_s == 0 or area_g == 0:
            return 0.0
        return 0.5 * (
            sum(s.dice_seg_sum for s in self.stats) / area_s
            + sum(s.dice_gt_sum for s in self.stats) / area_g
        )

    @property
    def n_hausdorff_undefined(self) -> int:
        return sum(1 for s in self.stats if (s.n_seg == 0) != (s.n_gt == 0))

    @property
    def hausdorff(self) -> float:
        """Pooled object Hausdorff over images where it is defined; NaN if there is none."""
        if not self.compute_hausdorff:
            return math.nan
        ok = [s for s in self.stats if (s.n_seg == 0) == (s.n_gt == 0)]
        if not ok:
            return math.nan
        area_s = sum(s.area_seg for s in ok)
        area_g = sum(s.area_gt for s in ok)
        if area_s == 0:  # only images with no object on either side
            return 0.0
        return 0.5 * (
            sum(s.hausdorff_seg_sum for s in ok) / area_s
            + sum(s.hausdorff_gt_sum for s in ok) / area_g
        )

    def summary(self) -> dict[str, float]:
        """Pooled values, per-image means and counts under JSON-friendly keys."""
        haus = [s.hausdorff for s in self.stats] if self.compute_hausdorff else []
        empty = not self.stats
        return {
            "object_f1": self.f1,
            "object_dice": self.dice,
            "object_hausdorff": self.hausdorff,
            "object_f1_per_image_mean": math.nan if empty else _nanmean([s.f1 for s in self.stats]),
            "object_dice_per_image_mean": (
                math.nan if empty else _nanmean([s.dice for s in self.stats])
            ),
            "object_hausdorff_per_image_mean": _nanmean(haus),
            "object_hausdorff_undefined": self.n_hausdorff_undefined,
            "object_tp": sum(s.tp for s in self.stats),
            "object_fp": sum(s.fp for s in self.stats),
            "object_fn": sum(s.fn for s in self.stats),
        }
