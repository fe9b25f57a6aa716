"""What Accept (3 · Review) puts into the annotations: a prediction layer sampled onto
each training tile of the annotations (nearest working-scale pixel, only where a
prediction exists), and in a multi-class project the class ids of the model's class map,
with the same "add: my painting wins" and "replace" meanings as a binary project's glands.
Viewer-free (numpy on layer data), so it is tested without napari's event loop too."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..core.classes import ClassTable
from ..core.errors import InputError

#: Metadata of a predicted label layer: where a prediction exists (working-scale bool
#: canvas) and its scale; Accept never touches pixels outside it.
COVERED = "semimoe_covered"
PRED_SCALE = "semimoe_pred_scale"


def tile_parts(entry: Any, labels: np.ndarray, seg: Any, add: bool) -> list:
    """Per training tile (region, painted, predicted ids, where the prediction may go),
    each annotation pixel taking its nearest working-scale pixel of ``seg`` (the layer:
    its data, the covered canvas and scale in its metadata); ``add``: a binary project's
    add mode (predicted glands touching painting left out)."""
    cov = seg.metadata[COVERED]
    ls, s = entry.labels_scale, float(seg.metadata[PRED_SCALE])
    H, W = labels.shape
    parts = []
    for t in entry.train_tiles():
        y0, x0 = max(0, round(t.y / ls)), max(0, round(t.x / ls))
        y1, x1 = min(H, round((t.y + t.h) / ls)), min(W, round((t.x + t.w) / ls))
        if y1 <= y0 or x1 <= x0:
            continue
        # nearest working-scale pixel of each annotation pixel (centre to centre)
        rows = np.floor((np.arange(y0, y1) + 0.5) * ls / s).astype(int)
        cols = np.floor((np.arange(x0, x1) + 0.5) * ls / s).astype(int)
        inside = (rows < cov.shape[0])[:, None] & (cols < cov.shape[1])[None, :]
        rows, cols = np.minimum(rows, cov.shape[0] - 1), np.minimum(cols, cov.shape[1] - 1)
        here = cov[np.ix_(rows, cols)] & inside
        if not here.any():
            continue
        sl = (slice(y0, y1), slice(x0, x1))
        pred = np.where(here, np.asarray(seg.data)[np.ix_(rows, cols)], 0)
        painted = labels[sl]
        if not add:
            parts.append((sl, painted, pred, here))
        else:  # a predicted gland that touches a painted pixel is the user's: skip it
            touched = np.unique(pred[painted > 0])
            pred = np.where(np.isin(pred, touched[touched > 0]), 0, pred)
            parts.append((sl, painted, pred, here & (painted == 0) & (pred > 0)))
    return parts


def class_patch(
    painted: np.ndarray, pred: np.ndarray, here: np.ndarray, replace: bool
) -> np.ndarray:
    """A tile's annotations after accepting a predicted class map ``pred`` (class ids)
    where ``here`` (a prediction exists). ``replace``: the prediction there, background
    included; else (add: my painting wins) each predicted region (4-connected, any class)
    that touches a painted pixel is skipped and the others fill only unpainted pixels."""
    pred = np.where(here, pred, 0)
    if replace:
        return np.where(here, pred, painted).astype(painted.dtype)
    comps, _n = ndi.label(pred > 0)
    touched = np.unique(comps[(painted > 0) & (comps > 0)])
    keep = (comps > 0) & ~np.isin(comps, touched) & (painted == 0)
    return np.where(keep, pred, painted).astype(painted.dtype)


def class_patches(parts: list, dtype, replace: bool, objects: bool = False) -> list:
    """(region, new annotations) of each tile whose annotations an Accept changes;
    ``parts``: (region, painted, predicted, where predicted) per tile, predicted class ids
    (``objects``: a binary model's objects, for a one-class table: class 1)."""
    patches = []
    for sl, painted, pred, here in parts:
        values = (pred > 0) if objects else pred
        new = class_patch(painted, np.asarray(values, dtype), here, replace)
        if not np.array_equal(new, painted):
            patches.append((sl, new))
    return patches


def accept_key(family: Any, table: ClassTable | None) -> str:
    """Which map Accept takes: the objects (``instances``) in a binary project; the
    model's class map (``classes``) in a multi-class one, whose classes must match (a
    one-class table also takes a binary model's objects). One line when they do not fit."""
    if table is None:
        return "instances"
    if "classes" in family.label_maps():
        if family.classes.n_foreground != table.n_foreground:
            raise InputError(
                f"the model knows {family.classes.n_foreground} classes, the project has "
                f"{table.n_foreground}: train again (2 · Train) before accepting"
            )
        return "classes"
    if table.n_foreground > 1:
        raise InputError(
            "this model was trained without the project's classes: train again "
            "(2 · Train) before accepting its prediction"
        )
    return "instances"
