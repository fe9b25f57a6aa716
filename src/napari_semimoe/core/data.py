"""Training data: dataset folders, labeled/unlabeled split, working scale, augmentation, sampling.

Everything here works on in-memory uint8 RGB arrays at the model's *working scale*; the
napari plugin hands the trainer tiles cut from slides, the CLI hands it whole images.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.transform import resize

from .errors import InputError, plural, some
from .targets import make_targets, with_unknown

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".tif", ".tiff")

#: GlaS statistics used upstream; the trainer computes the statistics of the user's own data.
GLAS_MEAN = (0.7878, 0.5120, 0.7849)
GLAS_STD = (0.4282, 0.5078, 0.4264)


@dataclass(frozen=True)
class DataItem:
    """One image of a dataset folder; ``mask_path`` is None when it has no mask."""

    name: str
    image_path: Path
    mask_path: Path | None


def scan_folder(root: str | Path) -> list[DataItem]:
    """List ``root/images/<name>.<ext>`` with their masks ``root/masks/<name>.<png|tif>``."""
    root = Path(root)
    img_dir = root / "images"
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file, not a folder (expected {root}/images and /masks)")
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if not img_dir.is_dir():
        raise InputError(
            f"{root}: no 'images' folder (expected {root}/images/<name>.png and "
            f"{root}/masks/<name>.png)"
        )
    items = []
    for p in sorted(img_dir.iterdir(), key=lambda q: _natural_key(q.name)):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        mask = None
        for suf in MASK_SUFFIXES:
            cand = root / "masks" / (p.stem + suf)
            if cand.exists():
                mask = cand
                break
        items.append(DataItem(p.stem, p, mask))
    if not items:
        raise InputError(f"{img_dir}: no images with suffix {', '.join(IMAGE_SUFFIXES)}")
    mask_dir = root / "masks"
    if mask_dir.is_dir():
        names = {it.name for it in items}
        orphans = sorted(
            q.name
            for q in mask_dir.iterdir()
            if q.suffix.lower() in MASK_SUFFIXES
            and not q.name.startswith(".")
            and q.stem not in names
        )
        if orphans:
            shown = some(orphans)
            log.warning(
                "%s in %s without an image in %s (ignored): %s",
                plural(len(orphans), "mask"),
                mask_dir,
                img_dir,
                shown,
            )
    return items


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def choose_labeled(
    items: Sequence[DataItem],
    n: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    classes=None,
) -> tuple[list[DataItem], list[DataItem]]:
    """Pick the labeled images at random (seeded); all others are used unlabeled.

    Only images with a mask can be labeled. With a multi-class table (``classes``), every
    class present in some mask gets at least one labeled image: the rarest class (fewest
    images) first, each from the seeded order, then the rest of that order; this can take
    more than ``n`` images (said in the log). Binary selection is unchanged. Returns
    (labeled, unlabeled), each sorted by name.
    """
    with_mask = [it for it in items if it.mask_path is not None]
    if not with_mask and items:
        root = Path(items[0].image_path).parent.parent
        where = "is missing" if not (root / "masks").is_dir() else "has no mask of these images"
        raise InputError(
            f"no labeled image: {root / 'masks'} {where} (masks/<name>.png for images/<name>.*)"
        )
    if n is None:
        if fraction is None:
            n = len(with_mask)
        else:
            if not 0 < fraction <= 1:
                raise InputError(f"--labeled-fraction must be in (0, 1], got {fraction}")
            n = max(1, round(fraction * len(items)))
    if n < 1:
        raise InputError("at least one labeled image is needed")
    if n > len(with_mask):
        have = (
            f"{len(with_mask)} has a mask"
            if len(with_mask) == 1
            else f"{len(with_mask)} have masks"
        )
        raise InputError(f"{n} labeled images asked for, but only {have}")
    rng = np.random.default_rng(seed)
    if classes is not None and classes.n_foreground > 1:
        picked = _cover_classes(with_mask, n, rng, classes.n_foreground)
    else:
        picked = set(rng.choice(len(with_mask), size=n, replace=False).tolist())
    labeled_names = {with_mask[i].name for i in picked}
    labeled = [it for it in items if it.name in labeled_names]
    unlabeled = [it for it in items if it.name not in labeled_names]
    return labeled, unlabeled


# ----------------------------------------------------------------------------- working scale


def _cover_classes(with_mask: Sequence[DataItem], n: int, rng, n_classes: int) -> set[int]:
    """Indices of ``n`` (or more) images, seeded, holding every class of the masks."""
    from .slide import read_mask

    present = []
    for it in with_mask:
        ids = np.unique(read_mask(it.mask_path))
        present.append({int(k) for k in ids if 0 < k <= n_classes})
    order = rng.permutation(len(with_mask)).tolist()
    images_of = {k: sum(k in p for p in present) for k in range(1, n_classes + 1)}
    picked: list[int] = []
    for k in sorted((k for k, c in images_of.items() if c), key=lambda k: (images_of[k], k)):
        if not any(k in present[i] for i in picked):
            picked.append(next(i for i in order if k in present[i]))
    needed = len(picked)
    picked += [i for i in order if i not in picked][: max(0, n - needed)]
    if needed > n:
        log.warning(
            "%d labeled images asked for, %d taken: one image of every class needs that many",
            n,
            needed,
        )
    return set(picked)


@dataclass(frozen=True)
class Geometry:
    """How native pixels map to the model's input.

    ``input_size`` set: each whole image is resized to input_size x input_size (the upstream
    GlaS/CRAG protocol). Otherwise images are downsampled by ``scale`` (1 = native) and the
    model works on ``tile`` x ``tile`` crops / tiles.
    """

    scale: float = 1.0
    input_size: int | None = None
    tile: int = 256

    def to_dict(self) -> dict:
        return {"scale": self.scale, "input_size": self.input_size, "tile": self.tile}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(float(d.get("scale", 1.0)), d.get("input_size"), int(d.get("tile", 256)))

    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        if self.input_size:
            return (self.input_size, self.input_size)
        return (max(1, round(shape[0] / self.scale)), max(1, round(shape[1] / self.scale)))

    def image_to_working(self, image: np.ndarray) -> np.ndarray:
        shape = self.working_shape(image.shape[:2])
        if shape == image.shape[:2]:
            return image
        out = resize(image, shape, order=1, anti_aliasing=True, preserve_range=True)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def mask_to_working(self, mask: np.ndarray) -> np.ndarray:
        shape = self.working_shape(mask.shape[:2])
        if shape == mask.shape[:2]:
            return mask
        out = resize(mask, shape, order=0, anti_aliasing=False, preserve_range=True)
        return out.astype(mask.dtype)


# ----------------------------------------------------------------------------- normalisation


def channel_stats(images: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) over all pixels of the given images."""
    s = np.zeros(3)
    ss = np.zeros(3)
    n = 0
    for im in images:
        x = im.reshape(-1, 3).astype(np.float64) / 255.0
        s += x.sum(0)
        ss += (x * x).sum(0)
        n += x.shape[0]
    if n == 0:
        return list(GLAS_MEAN), list(GLAS_STD)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 1e-8))
    return mean.tolist(), std.tolist()


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, (x/255 - mean) / std."""
    x = image.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# ----------------------------------------------------------------------------- augmentation


def _pad_to(arr: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - arr.shape[0]), max(0, size - arr.shape[1])
    if not (ph or pw):
        return arr
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="symmetric")


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows and weights of linear resampling, pixel centres aligned, mirrored edges."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(pos).astype(np.intp)
    frac = (pos - i0).astype(np.float32)
    i1 = i0 + 1
    last = n_in - 1
    i0, i1 = (np.where(i < 0, -i, np.where(i > last, 2 * last - i, i)) for i in (i0, i1))
    return i0, i1, frac


def upscale_linear(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (H, W[, C]) image to size x size, as float32.

    The same sampling as ``skimage.transform.resize(order=1)`` when enlarging (no
    anti-aliasing then), done separably: ~5 ms instead of 23 ms for a 224 -> 256 RGB crop,
    which the augmentation does for every other sample.
    """
    r0, r1, fr = _linear_taps(image.shape[0], size)
    c0, c1, fc = _linear_taps(image.shape[1], size)
    a = image.astype(np.float32)
    extra = (None,) * (a.ndim - 2)
    fr, fc = fr[(slice(None), None, *extra)], fc[(slice(None), *extra)]
    a = a[r0] + (a[r1] - a[r0]) * fr
    return a[:, c0] + (a[:, c1] - a[:, c0]) * fc


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray | None,
    tile: int,
    crop_p: float = 0.5,
    crop_frac: float = 224 / 256,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upstream augmentations on one sample: a random tile crop (when the image is larger),
    random crop of 224/256 resized back (p 0.5), flips, transpose and rot90."""
    image = _pad_to(image, tile)
    if mask is not None:
        mask = _pad_to(mask, tile)
    h, w = image.shape[:2]
    y, x = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
    image = image[y : y + tile, x : x + tile]
    mask = None if mask is None else mask[y : y + tile, x : x + tile]
    if rng.random() < crop_p:
        c = round(tile * crop_frac)
        y, x = rng.integers(0, tile - c + 1), rng.integers(0, tile - c + 1)
        image = np.clip(np.rint(upscale_linear(image[y : y + c, x : x + c], tile)), 0, 255)
        image = image.astype(np.uint8)
        if mask is not None:
            sub = mask[y : y + c, x : x + c]
            mask = resize(sub, (tile, tile), order=0, preserve_range=True, anti_aliasing=False)
            mask = mask.astype(sub.dtype)
    ops = rng.integers(0, 2, size=3)
    k = int(rng.integers(0, 4))

    def geo(a: np.ndarray) -> np.ndarray:
        if ops[0]:
            a = a[:, ::-1]
        if ops[1]:
            a = a[::-1]
        if ops[2]:
            a = a.swapaxes(0, 1)
        return np.ascontiguousarray(np.rot90(a, k))

    return geo(image), None if mask is None else geo(mask)


# ----------------------------------------------------------------------------- sampling


@dataclass
class TrainingSet:
    """Images (uint8 HxWx3) and masks at working scale. Labeled images come with masks."""

    labeled_images: list[np.ndarray]
    labeled_masks: list[np.ndarray]
    unlabeled_images: list[np.ndarray] = field(default_factory=list)
    labeled_names: list[str] = field(default_factory=list)
    unlabeled_names: list[str] = field(default_factory=list)
    #: Per-image attributes (site, scanner, ...; None = unknown) for attribute routing;
    #: empty: all unknown.
    labeled_attributes: list[str | None] = field(default_factory=list)
    unlabeled_attributes: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.labeled_images:
            raise InputError("no labeled image or tile: annotate at least one training tile")
        if len(self.labeled_images) != len(self.labeled_masks):
            raise InputError("every labeled image needs exactly one mask")
        for i, (im, m) in enumerate(zip(self.labeled_images, self.labeled_masks)):
            name = self.labeled_names[i] if i < len(self.labeled_names) else f"#{i}"
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise InputError(
                    f"labeled image {name}: expected HxWx3 uint8, got {im.shape} {im.dtype}"
                )
            if m.shape != im.shape[:2]:
                raise InputError(
                    f"mask of {name} is {m.shape[0]}x{m.shape[1]} but its image is "
                    f"{im.shape[0]}x{im.shape[1]}"
                )


class CyclicSampler:
    """Draws indices epoch by epoch in a fresh random order, as a shuffled DataLoader does.

    Its state is JSON-serialisable so that a resumed run draws the same batches.
    """

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.rng = rng
        self.order: list[int] = []
        self.pos = 0

    def draw(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self.pos >= len(self.order):
                self.order = self.rng.permutation(self.n).tolist()
                self.pos = 0
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def resize_pool(self, n: int) -> None:
        """The pool changed (tiles added or rejected): start a new epoch order."""
        self.n, self.order, self.pos = n, [], 0

    def state(self) -> dict:
        return {"n": self.n, "order": list(self.order), "pos": self.pos}

    def load_state(self, s: dict) -> None:
        if s.get("n") == self.n:
            self.order, self.pos = list(s["order"]), int(s["pos"])


def make_batch(
    rng: np.random.Generator,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None,
    idx: Sequence[int],
    tile: int,
    mean: Sequence[float],
    std: Sequence[float],
    per_instance_boundary: bool = False,
    augment_data: bool = True,
    targets: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    colour: Callable[[np.random.Generator, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Augment and normalise the chosen samples; targets are computed after augmentation,
    by ``targets(mask)`` (the model family's) or, by default, Semi-MoE's. ``colour(rng,
    tile)``: a colour augmentation after the geometric one (stain jitter); None draws
    nothing, so runs without it are unchanged."""
    if targets is None:
        targets = functools.partial(make_targets, per_instance_boundary=per_instance_boundary)
    xs, tgts = [], {}
    for i in idx:
        m = None if masks is None else masks[i]
        if augment_data:
            im, m = augment(rng, images[i], m, tile)
            if colour is not None:
                im = colour(rng, im)
        else:
            im = _pad_to(images[i], tile)[:tile, :tile]
            m = None if m is None else _pad_to(m, tile)[:tile, :tile]
        xs.append(normalise(im, mean, std))
        if m is not None:
            for k, v in targets(m).items():
                tgts.setdefault(k, []).append(v)
    x = np.stack(xs)
    if masks is None:
        return x, None
    return x, {k: np.stack(v) for k, v in tgts.items()}


def load_training_set(
    labeled: Sequence[DataItem],
    unlabeled: Sequence[DataItem],
    geometry: Geometry,
    progress=None,
    unknown_value: int | None = None,
    classes=None,
) -> TrainingSet:
    """Read a folder split into memory at working scale (masks of unlabeled items are
    never read). ``progress`` is an optional callable(done, total). ``unknown_value``: mask
    pixels of that value are unknown (sparse painting: ignored by the supervised losses).
    ``classes`` (a :class:`~.classes.ClassTable`): masks must hold its class ids."""
    from .slide import read_image, read_mask

    total = len(labeled) + len(unlabeled)
    li, lm, ui = [], [], []
    for k, it in enumerate(list(labeled) + list(unlabeled)):
        im = read_image(it.image_path)
        if k < len(labeled):
            assert it.mask_path is not None
            m = read_mask(it.mask_path, shape=im.shape[:2])
            if unknown_value is not None:
                m = with_unknown(m, unknown_value)
            if classes is not None:
                classes.check_mask(m, f"mask {it.mask_path}")
            li.append(geometry.image_to_working(im))
            lm.append(geometry.mask_to_working(m))
        else:
            ui.append(geometry.image_to_working(im))
        if progress is not None:
            progress(k + 1, total)
    empty = [it.name for it, m in zip(labeled, lm) if not (m > 0).any()]
    full = [it.name for it, m in zip(labeled, lm) if not (m == 0).any()]
    for names, what in ((empty, "no gland (all background)"), (full, "no background (all gland)")):
        if names:
            shown = some(names)
            log.warning(
                "%s with %s: %s%s",
                plural(len(names), "mask"),
                what,
                shown,
                "; the model cannot learn glands from these alone"
                if len(names) == len(labeled)
                else "",
            )
    return TrainingSet(li, lm, ui, [it.name for it in labeled], [it.name for it in unlabeled])
