"""Training targets derived from a gland mask: signed distance field and boundary band (spec §2).

Sparse painting: a mask may carry :data:`UNKNOWN` (-1) where the user painted neither gland
nor background (masks with unknown pixels are signed integers; 0 = background, > 0 = gland
or instance id). Targets then mark the pixels they cannot know as ignored: :data:`IGNORE`
(-1) in integer targets, NaN in float targets; the losses skip both. A mask without unknown
pixels gives exactly the targets it always gave.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

_DISK2 = disk(2).astype(bool)

#: Mask value of a pixel that is neither painted gland nor (painted or implied) background.
UNKNOWN = -1
#: Integer target value that the losses ignore (float targets use NaN).
IGNORE = -1


def unknown_pixels(mask: np.ndarray) -> np.ndarray | None:
    """Boolean map of the unknown pixels (negative values), or None when there is none."""
    m = np.asarray(mask)
    if not np.issubdtype(m.dtype, np.signedinteger):
        return None
    unknown = m < 0
    return unknown if unknown.any() else None


def with_unknown(mask: np.ndarray, value: int) -> np.ndarray:
    """``mask`` with the pixels equal to ``value`` (e.g. 255 of an 8-bit mask) made
    :data:`UNKNOWN` (an int32 copy); unchanged when no pixel has that value."""
    m = np.asarray(mask)
    hit = m == value
    if not hit.any():
        return m
    out = m.astype(np.int32)
    out[hit] = UNKNOWN
    return out


def ignore_unknown(target: np.ndarray, unknown: np.ndarray | None) -> np.ndarray:
    """``target`` with the unknown pixels ignored (integer: IGNORE, float: NaN)."""
    if unknown is None:
        return target
    t = np.asarray(target)
    if np.issubdtype(t.dtype, np.floating):
        out = t.copy()
        out[unknown] = np.nan
    else:
        out = t.astype(np.int16 if t.dtype.itemsize <= 2 else np.int64)
        out[unknown] = IGNORE
    return out


def seg_target(mask: np.ndarray) -> np.ndarray:
    """0/1 gland target (uint8); unknown pixels IGNORE (int16) when the mask has any."""
    m = np.asarray(mask)
    return ignore_unknown((m > 0).astype(np.uint8), unknown_pixels(m))


def class_target(mask: np.ndarray) -> np.ndarray:
    """Class-id target of a multi-class mask (ids 0..C, uint8); unknown pixels IGNORE
    (int16) when the mask has any."""
    m = np.asarray(mask)
    return ignore_unknown(np.clip(m, 0, None).astype(np.uint8), unknown_pixels(m))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Normalised SDF, positive inside: +1 at the deepest inside pixel, -1 farthest outside.

    ``mask`` is any array where > 0 means gland. Inside and outside distances are min-max
    normalised over the tile separately; the inner boundary of the foreground is exactly 0.
    Upstream asserts on tiles that are all background / all foreground; those give -1 / +1.

    With unknown pixels, a painted gland is taken as painted whole (its inside distances are
    exact); a background pixel's distance to the nearest gland is only known where the
    nearest painted gland is no farther than the nearest unknown pixel (a gland hidden there
    cannot be closer). Every other pixel is NaN; the outside distances are normalised over
    the known ones.
    """
    unknown = unknown_pixels(mask)
    fg = np.asarray(mask) > 0
    if unknown is None:
        if not fg.any():
            return np.full(fg.shape, -1.0, dtype=np.float32)
        if fg.all():
            return np.full(fg.shape, 1.0, dtype=np.float32)
        d_in = ndi.distance_transform_edt(fg)
        d_out = ndi.distance_transform_edt(~fg)
        sdf = d_in / d_in.max() - d_out / d_out.max()  # both minima are 0 on a mixed tile
        sdf[find_boundaries(fg, mode="inner")] = 0.0
        return sdf.astype(np.float32)
    sdf = np.full(fg.shape, np.nan)
    if not fg.any():
        return sdf.astype(np.float32)  # no painted gland: no distance is known
    d_in = ndi.distance_transform_edt(fg)
    sdf[fg] = d_in[fg] / d_in.max()
    sdf[find_boundaries(fg, mode="inner")] = 0.0
    background = ~fg & ~unknown
    d_out = ndi.distance_transform_edt(~fg)
    trusted = background & (d_out <= ndi.distance_transform_edt(~unknown))
    if trusted.any():
        sdf[trusted] = -d_out[trusted] / d_out[trusted].max()
    return sdf.astype(np.float32)


def boundary_band(mask: np.ndarray, per_instance: bool = False) -> np.ndarray:
    """2-pixel band just outside the glands: dilation(mask, disk(2)) minus mask (uint8 0/1).

    With ``per_instance`` (and instance ids in ``mask``), pixels of a gland within 2 px of a
    *different* gland are boundary too, so touching glands are separated; upstream binarises
    first and gets no band between them.

    With unknown pixels (int16 then): the band around a painted (whole) gland is boundary
    even where it is unknown; any other pixel within 2 px of an unknown one is IGNORE,
    since a gland hidden there could put it in a band.
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
    unknown = unknown_pixels(labels)
    if unknown is None:
        return band.astype(np.uint8)
    near = ndi.binary_dilation(unknown, structure=_DISK2) & ~band
    if not per_instance:
        near &= ~fg  # a painted gland's own pixels are never band without per-instance
    return ignore_unknown(band.astype(np.uint8), near)


def make_targets(mask: np.ndarray, per_instance_boundary: bool = False) -> dict[str, np.ndarray]:
    """All three task targets for one (augmented) tile: seg (0/1), sdf (float32), bnd (0/1)."""
    return {
        "seg": seg_target(mask),
        "sdf": signed_distance(mask),
        "bnd": boundary_band(mask, per_instance=per_instance_boundary),
    }
