"""Gland instances from the predicted mask, split where the SDF says two glands touch."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed


def label_instances(
    mask: np.ndarray,
    sdf: np.ndarray | None = None,
    boundary: np.ndarray | None = None,
    *,
    min_size: int = 16,
    h: float = 0.25,
) -> np.ndarray:
    """Label glands (int32, 0 = background).

    Each connected component of ``mask`` is one gland unless its SDF has several peaks at
    least ``h`` high (two glands joined by a neck): then it is split by a watershed on the
    SDF seeded at those peaks, away from predicted boundary pixels. Components (and split
    pieces) smaller than ``min_size`` pixels are dropped or merged, since GlaS-style object
    metrics punish specks as false positives. Works one component at a time, so memory stays
    bounded by the largest gland.
    """
    fg = np.asarray(mask) > 0
    comp, _ = ndi.label(fg)
    out = np.zeros(fg.shape, np.int32)
    next_id = 1
    for i, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        region = comp[sl] == i
        area = int(region.sum())
        if area < min_size:
            continue
        pieces = None
        if sdf is not None and area >= 2 * min_size:
            pieces = _split(
                region,
                np.asarray(sdf[sl], np.float32),
                None if boundary is None else np.asarray(boundary[sl]) < 0.5,
                min_size,
                h,
            )
        view = out[sl]
        if pieces is None:
            view[region] = next_id
            next_id += 1
        else:
            n = int(pieces.max())
            view[region] = pieces[region] + (next_id - 1)
            next_id += n
    return out


def drop_small(
    mask: np.ndarray, min_size: int, keep_border: bool = False, diagonal: bool = False
) -> np.ndarray:
    """Remove connected components below ``min_size`` px (optionally keep those on the
    border); ``diagonal``: pixels touching at a corner are one component (8-connected)."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool) if diagonal else None)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    if keep_border:
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        keep[border] = True
    keep[0] = False
    return keep[lab]


def _h_maxima(s: np.ndarray, region: np.ndarray, h: float) -> np.ndarray:
    """``h_maxima(s, h) & region`` for one connected ``region`` (``s`` below it outside),
    without the grayscale reconstruction when the region is too flat for it to matter.

    skimage reconstructs the marker ``s - h - resolution`` under ``s``. When that marker's
    maximum m over the region lies below the region's minimum, every path inside the region
    stays above m, so the reconstruction equals m on the whole region and the maxima are
    the pixels with ``s - m >= h``: the same float operations, the same pixels. Most
    components of a mask (specks, small glands) are that flat; they cost a few array
    operations instead of a reconstruction each.
    """
    if h > np.ptp(s):  # skimage's own shortcut (a region filling its box has no rim)
        return np.zeros(s.shape, bool)
    vals = s[region]
    resolution = 2 * np.finfo(s.dtype).resolution * np.abs(vals)
    m = (vals - h - resolution).max()
    if m < vals.min():
        peaks = np.zeros(s.shape, bool)
        peaks[region] = (vals - m) >= h
        return peaks
    return h_maxima(s, h).astype(bool) & region


def _split(
    region: np.ndarray, sdf: np.ndarray, interior: np.ndarray | None, min_size: int, h: float
) -> np.ndarray | None:
    s = np.where(region, sdf, sdf[region].min() - 1.0)
    peaks = _h_maxima(s, region, h)
    if interior is not None:
        peaks &= interior
    markers, n = ndi.label(peaks)
    if n <= 1:
        return None
    ws = watershed(-s, markers, mask=region)
    sizes = np.bincount(ws.ravel(), minlength=n + 1)[1:]
    if (sizes < min_size).any():
        keep = np.flatnonzero(sizes >= min_size) + 1
        if len(keep) <= 1:
            return None
        markers = np.where(np.isin(markers, keep), markers, 0)
        ws = watershed(-s, markers, mask=region)
    labels = np.unique(ws[region])  # relabel the surviving pieces 1..k
    out = np.zeros(ws.shape, np.int32)
    out[region] = np.searchsorted(labels, ws[region]) + 1
    return out


def drop_off_tissue(instances: np.ndarray, tissue: np.ndarray, share: float = 0.5) -> np.ndarray:
    """``instances`` kept to the tissue: objects lying mostly (over ``1 - share``) on glass
    go, and the others lose their pixels on glass.

    A gland sits in tissue; an object on the slide's glass (bright, unstained: the gaps of a
    mosaic, a slide's margin, a tear), or the part of one that runs out onto it, is the
    model answering a question it was never taught, and a pathologist should not have to
    erase it by hand. ``tissue`` is the boolean mask on the same grid
    (:func:`..slide.tissue_mask`: lumina are inside it, so no gland loses its lumen). Ids
    are kept.
    """
    inst = np.asarray(instances)
    n = int(inst.max(initial=0))
    if n == 0:
        return inst
    tissue = np.asarray(tissue, bool)
    on = np.bincount(inst[tissue].ravel(), minlength=n + 1)
    total = np.bincount(inst.ravel(), minlength=n + 1)
    off = (total > 0) & (on < share * total)
    off[0] = False
    out = inst.copy()
    out[off[inst] | ~tissue] = 0
    return out
