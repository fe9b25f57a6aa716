"""Training targets derived from a gland mask: signed distance field and boundary band (spec §2)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

_DISK2 = disk(2).astype(bool)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Normalised SDF, positive inside: +1 at the deepest inside pixel, -1 farthest outside.

    ``mask`` is any array where > 0 means gland. Inside and outside distances are min-max
    normalised over the tile separately; the inner boundary of the foreground is exactly 0.
    Upstream asserts on tiles that are all background / all foreground; those give -1 / +1.
    """
    fg = np.asarray(mask) > 0
    if not fg.any():
        return np.full(fg.shape, -1.0, dtype=np.float32)
    if fg.all():
        return np.full(fg.shape, 1.0, dtype=np.float32)
    d_in = ndi.distance_transform_edt(fg)
    d_out = ndi.distance_transform_edt(~fg)
    sdf = d_in / d_in.max() - d_out / d_out.max()  # both minima are 0 on a mixed tile
    sdf[find_boundaries(fg, mode="inner")] = 0.0
    return sdf.astype(np.float32)


def boundary_band(mask: np.ndarray, per_instance: bool = False) -> np.ndarray:
    """2-pixel band just outside the glands: dilation(mask, disk(2)) minus mask (uint8 0/1).

    With ``per_instance`` (and instance ids in ``mask``), pixels of a gland within 2 px of a
    *different* gland are boundary too, so touching glands are separated; upstream binarises
    first and gets no band between them.
    """
    labels = np.asarray(mask)
    fg = labels > 0
    band = ndi.binary_dilation(fg, structure=_DISK2) & ~fg
    if per_instance and labels.max() > 1:
        lab = labels.astype(np.int64)
        big = np.iinfo(np.int64).max
        hi = ndi.maximum_filter(lab, footprint=_DISK2, mode="nearest")
        lo = ndi.minimum_filter(np.where(fg, lab, big), footprint=_DISK2, mode="nearest")
        band |= fg & ((hi != lab) | ((lo != lab) & (lo != big)))
    return band.astype(np.uint8)


def make_targets(mask: np.ndarray, per_instance_boundary: bool = False) -> dict[str, np.ndarray]:
    """All three task targets for one (augmented) tile: seg (0/1), sdf (float32), bnd (0/1)."""
    return {
        "seg": (np.asarray(mask) > 0).astype(np.uint8),
        "sdf": signed_distance(mask),
        "bnd": boundary_band(mask, per_instance=per_instance_boundary),
    }
