"""Evaluate a trained model on a dataset folder at native resolution (fixed threshold 0.5)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .classes import read_classes
from .data import scan_folder
from .equity import equity_report
from .errors import InputError, plural, some
from .inference import Predictor
from .metrics import (
    GROUPS,
    ClassAccumulator,
    PixelAccumulator,
    evaluate_pairs,
    instances_from_mask,
)
from .slide import read_image, read_mask

log = logging.getLogger(__name__)

#: What ``evaluate`` says when it made objects of binary masks.
BINARY_NOTE = (
    "glands = connected components (a 0/1 or 0/255 mask cannot tell touching glands apart)"
)


def check_masks_folder(data_dir: str | Path) -> None:
    """A data folder without ``masks/`` is said as such (before any image is read)."""
    root = Path(data_dir)
    if root.is_dir() and (root / "images").is_dir() and not (root / "masks").is_dir():
        raise InputError(
            f"{root}: no 'masks' folder; evaluate needs {root / 'masks'}/<name>.png (or .tif) "
            "for the images to score"
        )


def iter_predictions(
    predictor: Predictor,
    data_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    binary: list[str] | None = None,
    class_masks: list[np.ndarray] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray]]:
    """Yield (name, prediction at native size, ground-truth instance mask) per image.

    Binary masks become one object per connected component; their names are appended to
    ``binary``. Masks that are all background or all gland are reported once, at the end.
    ``class_masks`` (a list): the masks hold class ids; each is appended there and its
    union foreground's connected components are the objects (always: class masks hold no
    instance ids, so they are not counted in ``binary``). ``attributes`` (``{name: value}``):
    each image goes through its attribute's router (attribute routing; unknown: "any").
    """
    check_masks_folder(data_dir)
    items = [it for it in scan_folder(data_dir) if it.mask_path is not None]
    if not items:
        raise InputError(f"{data_dir}: no image has a mask in {Path(data_dir) / 'masks'}")
    empty, full = [], []
    for k, it in enumerate(items):
        image = read_image(it.image_path)
        gt = read_mask(it.mask_path, shape=image.shape[:2])
        if not gt.any():
            empty.append(it.name)
        elif gt.all():
            full.append(it.name)
        if class_masks is not None:
            class_masks.append(gt)
            gt = (gt > 0).astype(np.uint8)
        gt, was_binary = instances_from_mask(gt)
        if was_binary and binary is not None and class_masks is None:
            binary.append(it.name)
        if attributes is not None:
            predictor.use_attribute(attributes.get(it.name))
        yield it.name, predictor.predict_image(image), gt
        if progress is not None:
            progress(k + 1, len(items))
    _warn_masks(empty, "no gland (all background)")
    _warn_masks(full, "no background (all gland)")


def _warn_masks(names: list[str], what: str) -> None:
    if names:
        shown = some(names)
        log.warning("%s %s: %s", plural(len(names), "mask"), f"with {what}", shown)


def evaluate_folder(
    predictor: Predictor,
    data_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    hausdorff: bool = True,
    split: dict[str, list[int]] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Pooled and per-image Dice/Jaccard plus GlaS object metrics over ``data_dir``;
    ``binary_masks`` counts the masks whose glands were taken as connected components.

    A multi-class model (its family has a class table) is scored per class too: the data
    folder's ``classes.json`` must name as many classes; the Dice/Jaccard/object metrics
    above are then the union foreground's, and :class:`~.metrics.ClassAccumulator` adds
    ``dice[<class>]``, ``iou[<class>]``, their means and, with a head / medium / tail
    ``split`` (default: the family's own, DCA's), the group means.

    ``attributes`` (``{image name: value}``): each image is routed by its attribute, and
    ``equity`` holds the per-attribute Dice / IoU (per-image, union foreground) and the
    equity-scaled ES-Dice / ES-IoU (:mod:`.equity`)."""
    table = getattr(predictor.family, "classes", None)
    pixels = PixelAccumulator()
    names: list[str] = []
    if table is None:
        metrics = _evaluate_binary(
            predictor, data_dir, progress, hausdorff, attributes, pixels, names
        )
        return _with_equity(metrics, pixels, names, attributes)
    data_table = read_classes(data_dir)
    if data_table is None or data_table.n_foreground != table.n_foreground:
        have = "no classes.json" if data_table is None else f"{data_table.n_foreground} classes"
        raise InputError(
            f"{data_dir}: the model has {table.n_foreground} classes but the data folder has {have}"
        )
    binary: list[str] = []
    gts: list[np.ndarray] = []
    acc = ClassAccumulator(table.names)

    def pairs():
        for name, pred, gt in iter_predictions(
            predictor, data_dir, progress, binary, gts, attributes
        ):
            data_table.check_mask(gts[-1], "a ground-truth mask")
            acc.add(pred["classes"], gts[-1])
            gts.clear()  # one image's mask at a time
            names.append(name)
            yield pred["instances"], gt

    metrics = evaluate_pairs(pairs(), hausdorff=hausdorff, pixels=pixels)
    split = split if split is not None else getattr(predictor.family, "split", None)
    metrics.update(acc.summary(split))
    metrics["binary_masks"] = len(binary)
    metrics["classes"] = list(table.names)
    if split:
        metrics["split"] = {g: [int(c) for c in split.get(g, [])] for g in GROUPS}
    return _with_equity(metrics, pixels, names, attributes)


def _evaluate_binary(
    predictor, data_dir, progress, hausdorff, attributes, pixels, names
) -> dict[str, float]:
    binary: list[str] = []

    def pairs():
        for name, pred, gt in iter_predictions(
            predictor, data_dir, progress, binary, attributes=attributes
        ):
            names.append(name)
            yield pred["instances"], gt

    metrics = evaluate_pairs(pairs(), hausdorff=hausdorff, pixels=pixels)
    metrics["binary_masks"] = len(binary)
    return metrics


def _with_equity(metrics: dict, pixels: PixelAccumulator, names: list[str], attributes) -> dict:
    """``metrics`` plus, with ``attributes``, the per-attribute and equity-scaled scores."""
    if attributes is None:
        return metrics
    attrs = [attributes.get(n) for n in names]
    metrics["equity"] = equity_report(
        {"dice": pixels.dice_per_image, "iou": pixels.jaccard_per_image}, attrs
    )
    metrics["attributes"] = dict(zip(names, attrs))
    return metrics
