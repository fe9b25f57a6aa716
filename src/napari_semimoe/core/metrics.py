"""Segmentation metrics for GlaS: pixel Dice/Jaccard and the official object-level metrics.

Pixel metrics binarise with ``> 0`` at whatever threshold produced the masks; nothing here tunes a
threshold, so reported numbers cannot be inflated by picking one on the test set.

Object metrics (GlaS) live in :mod:`.object_metrics` (re-exported here): how they follow the
challenge's official code, and the conventions for empty images, are documented there.

Dataset-level values (what the challenge ranked with) pool over all images: F1 from the summed
TP/FP/FN, object Dice/Hausdorff with weights |S_j| / Σ|S| and |G_i| / Σ|G| over all objects of
the test set. Per-image means are provided too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .errors import InputError
from .object_metrics import (
    ObjectAccumulator,
    ObjectStats,
    _check_shapes,
    instances_from_mask,
    object_dice,
    object_f1,
    object_hausdorff,
    object_metrics,
)

__all__ = [
    "ClassAccumulator",
    "ObjectAccumulator",
    "ObjectStats",
    "PixelAccumulator",
    "dice_jaccard",
    "evaluate_pairs",
    "format_class_table",
    "format_table",
    "instances_from_mask",
    "object_dice",
    "object_f1",
    "object_hausdorff",
    "object_metrics",
]


# --------------------------------------------------------------------------------------------
# Pixel metrics
# --------------------------------------------------------------------------------------------


def _confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """TP, FP, FN of the binarised (> 0) masks, as Python ints so sums never overflow."""
    p = np.asarray(pred) > 0
    g = np.asarray(gt) > 0
    _check_shapes(p, g)
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def _dice_jaccard_counts(tp: int, fp: int, fn: int) -> tuple[float, float]:
    """Dice and Jaccard from counts; nothing predicted and nothing to find counts as perfect."""
    if tp + fp + fn == 0:
        return 1.0, 1.0
    return 2.0 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def dice_jaccard(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Pixel Dice and Jaccard of ``pred > 0`` against ``gt > 0``; (1.0, 1.0) when both are empty."""
    return _dice_jaccard_counts(*_confusion(pred, gt))


class PixelAccumulator:
    """Pixel Dice/Jaccard over a test set, both pooled and per image.

    Pooled values sum TP/FP/FN over all pixels of all images (what upstream Semi-MoE reports), so
    large glands weigh more; per-image values give the spread (mean ± std) across images.
    """

    def __init__(self) -> None:
        self.tp = 0
        self.fp = 0
        self.fn = 0
        self.dice_per_image: list[float] = []
        self.jaccard_per_image: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
        """Add one image; returns its own (Dice, Jaccard)."""
        tp, fp, fn = _confusion(pred, gt)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        dice, jac = _dice_jaccard_counts(tp, fp, fn)
        self.dice_per_image.append(dice)
        self.jaccard_per_image.append(jac)
        return dice, jac

    @property
    def n_images(self) -> int:
        return len(self.dice_per_image)

    @property
    def dice_pooled(self) -> float:
        return _dice_jaccard_counts(self.tp, self.fp, self.fn)[0]

    @property
    def jaccard_pooled(self) -> float:
        return _dice_jaccard_counts(self.tp, self.fp, self.fn)[1]

    def summary(self) -> dict[str, float]:
        """Pooled and per-image values; std is the population std (ddof=0), NaN with no image."""
        dice = np.asarray(self.dice_per_image, dtype=np.float64)
        jac = np.asarray(self.jaccard_per_image, dtype=np.float64)
        empty = dice.size == 0
        return {
            "dice_pooled": math.nan if empty else self.dice_pooled,
            "jaccard_pooled": math.nan if empty else self.jaccard_pooled,
            "dice_per_image_mean": math.nan if empty else float(dice.mean()),
            "dice_per_image_std": math.nan if empty else float(dice.std()),
            "jaccard_per_image_mean": math.nan if empty else float(jac.mean()),
            "jaccard_per_image_std": math.nan if empty else float(jac.std()),
        }


# --------------------------------------------------------------------------------------------
# Per-class metrics (multi-class)
# --------------------------------------------------------------------------------------------

GROUPS = ("head", "medium", "tail")


class ClassAccumulator:
    """Per-class pixel Dice / IoU of class maps over a test set, pooled (summed TP/FP/FN).

    A class that neither the ground truth nor the prediction holds anywhere in the set has
    no Dice (NaN), and means skip it: a class that was never there cannot be "perfect".
    Ground-truth pixels < 0 (unknown) are not scored."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)
        n = len(self.names)
        self.tp = np.zeros(n, np.int64)
        self.fp = np.zeros(n, np.int64)
        self.fn = np.zeros(n, np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        p, g = np.asarray(pred).astype(np.int64), np.asarray(gt).astype(np.int64)
        _check_shapes(p, g)
        n = len(self.names)
        known = g >= 0
        p, g = p[known], g[known]
        if (p >= n).any() or (g >= n).any() or (p < 0).any():
            raise InputError(f"class maps hold ids outside 0..{n - 1}")
        conf = np.bincount(g * n + p, minlength=n * n).reshape(n, n)  # rows: truth
        tp = np.diag(conf)
        self.tp += tp
        self.fp += conf.sum(0) - tp
        self.fn += conf.sum(1) - tp

    def per_class(self) -> tuple[np.ndarray, np.ndarray]:
        """(Dice, IoU) of every class, background first; NaN where never present."""
        tp, fp, fn = (a.astype(np.float64) for a in (self.tp, self.fp, self.fn))
        total = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(total > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            iou = np.where(total > 0, tp / total, np.nan)
        return dice, iou

    def summary(self, split: dict[str, list[int]] | None = None) -> dict[str, float]:
        """``dice[<name>]`` / ``iou[<name>]`` per class, their means over the foreground
        classes and, with a head / medium / tail ``split`` (class ids), each group's mean."""
        dice, iou = self.per_class()
        out: dict[str, float] = {}
        for k, name in enumerate(self.names):
            out[f"dice[{name}]"] = float(dice[k])
            out[f"iou[{name}]"] = float(iou[k])
        out["dice_mean_classes"] = _nanmean(dice[1:])
        out["iou_mean_classes"] = _nanmean(iou[1:])
        for g in GROUPS if split else ():
            ids = [int(c) for c in split.get(g, [])]
            if ids:
                out[f"dice_{g}_mean"] = _nanmean(dice[ids])
                out[f"iou_{g}_mean"] = _nanmean(iou[ids])
        return out


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def format_class_table(metrics: dict[str, float], names: tuple[str, ...], split=None) -> str:
    """Per-class rows (Dice, IoU in %, the class's group) and the means, aligned."""
    group = {int(c): g for g, ids in (split or {}).items() if g in GROUPS for c in ids}
    rows = [
        (n, _fmt(metrics[f"dice[{n}]"], "pct"), _fmt(metrics[f"iou[{n}]"], "pct"), group.get(k, ""))
        for k, n in enumerate(names)
    ]
    rows.append(("mean of classes", _fmt(metrics["dice_mean_classes"], "pct"),
                 _fmt(metrics["iou_mean_classes"], "pct"), ""))  # fmt: skip
    for g in GROUPS:
        if f"dice_{g}_mean" in metrics:
            rows.append((f"{g} mean", _fmt(metrics[f"dice_{g}_mean"], "pct"),
                         _fmt(metrics[f"iou_{g}_mean"], "pct"), ""))  # fmt: skip
    head = ("Class", "Dice (%)", "IoU (%)", "Group")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Whole evaluation
# --------------------------------------------------------------------------------------------


def evaluate_pairs(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    hausdorff: bool = True,
    pixels: PixelAccumulator | None = None,
) -> dict[str, float]:
    """Pixel and object metrics over (pred_labels, gt_labels) pairs of instance label images.

    Pixel metrics binarise with ``> 0``. Object metrics without a ``_per_image_mean`` suffix are
    dataset-level as in the GlaS challenge. Values are plain floats/ints (NaN where undefined,
    which ``json.dumps`` writes as ``NaN``). Raises ``InputError`` when ``pairs`` is empty.
    ``pixels``: the caller's accumulator, to read the per-image scores afterwards.
    """
    pixels = PixelAccumulator() if pixels is None else pixels
    objects = ObjectAccumulator(hausdorff=hausdorff)
    for pred, gt in pairs:
        pixels.add(pred, gt)
        objects.add(pred, gt)
    if pixels.n_images == 0:
        raise InputError("no image pairs to evaluate")
    out: dict[str, float] = {"n_images": pixels.n_images}
    out.update(pixels.summary())
    out.update(objects.summary())
    return out


_ROWS: list[tuple[str, str, str]] = [
    ("n_images", "Images", "int"),
    ("dice_pooled", "Dice, pooled (%)", "pct"),
    ("jaccard_pooled", "Jaccard, pooled (%)", "pct"),
    ("dice_per_image_mean", "Dice, per-image mean (%)", "pct"),
    ("dice_per_image_std", "Dice, per-image std (%)", "pct"),
    ("jaccard_per_image_mean", "Jaccard, per-image mean (%)", "pct"),
    ("jaccard_per_image_std", "Jaccard, per-image std (%)", "pct"),
    ("object_f1", "Object F1 (%)", "pct"),
    ("object_dice", "Object Dice (%)", "pct"),
    ("object_hausdorff", "Object Hausdorff (px)", "px"),
    ("object_f1_per_image_mean", "Object F1, per-image mean (%)", "pct"),
    ("object_dice_per_image_mean", "Object Dice, per-image mean (%)", "pct"),
    ("object_hausdorff_per_image_mean", "Object Hausdorff, per-image mean (px)", "px"),
    ("object_hausdorff_undefined", "Images with undefined Hausdorff", "int"),
    ("object_tp", "Object TP", "int"),
    ("object_fp", "Object FP", "int"),
    ("object_fn", "Object FN", "int"),
    ("binary_masks", "Binary masks (glands = connected components)", "int"),
]


def _per_class_key(key: str) -> bool:
    return key.startswith(("dice[", "iou[")) or key in {
        f"{m}_{g}_mean" for m in ("dice", "iou") for g in (*GROUPS, "mean")
    } | {"dice_mean_classes", "iou_mean_classes", "classes", "split"}


def _fmt(value: float, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return value
    if kind == "pct":
        return f"{100.0 * value:.2f}"
    if kind == "px":
        return f"{value:.1f}"
    if kind == "int":
        return f"{int(value)}"
    return f"{value:.4g}"


def format_table(metrics: dict[str, float]) -> str:
    """Aligned two-column text table: ratios as percentages (2 decimals), Hausdorff in pixels
    (1 decimal), counts as integers; known keys in a fixed order, any others after them
    (the per-class keys are :func:`format_class_table`'s, the equity report has its own)."""
    known = {key for key, _, _ in _ROWS}
    metrics = {
        k: v
        for k, v in metrics.items()
        if not _per_class_key(k) and k not in ("equity", "attributes")
    }
    rows = [(label, _fmt(metrics[key], kind)) for key, label, kind in _ROWS if key in metrics]
    rows += [(key, _fmt(metrics[key], "")) for key in metrics if key not in known]
    if not rows:
        return ""
    width = max(len(label) for label, _ in rows)
    vwidth = max(len("Value"), *(len(value) for _, value in rows))
    lines = [f"{'Metric':<{width}}  {'Value':>{vwidth}}", f"{'-' * width}  {'-' * vwidth}"]
    lines += [f"{label:<{width}}  {value:>{vwidth}}" for label, value in rows]
    return "\n".join(lines)
