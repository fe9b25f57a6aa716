"""Evaluate a trained model on a dataset folder at native resolution (fixed threshold 0.5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .data import scan_folder
from .errors import InputError
from .metrics import evaluate_pairs
from .predict import Predictor
from .slide import read_image, read_mask


def iter_predictions(
    predictor: Predictor, data_dir: str | Path, progress: Callable[[int, int], None] | None = None
) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray]]:
    """Yield (name, prediction at native size, ground-truth instance mask) per image."""
    items = [it for it in scan_folder(data_dir) if it.mask_path is not None]
    if not items:
        raise InputError(f"{data_dir}: no image has a mask in {Path(data_dir) / 'masks'}")
    for k, it in enumerate(items):
        image = read_image(it.image_path)
        gt = read_mask(it.mask_path, shape=image.shape[:2])
        yield it.name, predictor.predict_image(image), gt
        if progress is not None:
            progress(k + 1, len(items))


def evaluate_folder(
    predictor: Predictor,
    data_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    hausdorff: bool = True,
) -> dict[str, float]:
    """Pooled and per-image Dice/Jaccard plus GlaS object metrics over ``data_dir``."""
    pairs = (
        (pred["instances"], gt) for _, pred, gt in iter_predictions(predictor, data_dir, progress)
    )
    return evaluate_pairs(pairs, hausdorff=hausdorff)
