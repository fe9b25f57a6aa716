"""Sparse painting of training tiles: what the unpainted pixels of a tile are.

A pathologist who outlines 2 of the 8 glands of a tile has not said that the other 6 are
background. Each training tile says what its unpainted pixels are (``Tile.unpainted``):

- ``"background"``: everything not painted as a gland is background (the only meaning
  before sparse painting; old projects load with it);
- ``"unknown"``: only what is painted counts: glands (ids > 0) and the background brush
  (:data:`BACKGROUND_LABEL`); the rest is :data:`~.targets.UNKNOWN` in the training set,
  left out of every supervised loss;
- ``"auto"`` (new tiles): ``"unknown"`` once the tile holds background-brush paint (the user
  is saying where background is), else ``"background"``.

The background brush paints :data:`BACKGROUND_LABEL` into the annotations (uint16, the last
id: gland ids are counted up from 1 and never reach it); in a cut tile it becomes 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .targets import UNKNOWN

#: The annotations' label id of painted background (the largest uint16 value).
BACKGROUND_LABEL = 65535
UNPAINTED = ("auto", "background", "unknown")
#: A tile's meaning of unpainted pixels in words (the dock's choice and messages).
UNPAINTED_WORDS = {
    "auto": "auto (unknown once you paint background, else background)",
    "background": "background",
    "unknown": "unknown (only what is painted is learnt)",
}


def glands_of(labels: np.ndarray) -> np.ndarray:
    """Boolean map of painted gland pixels (ids > 0 other than the background brush)."""
    a = np.asarray(labels)
    return (a > 0) & (a != BACKGROUND_LABEL)


def next_label(labels: np.ndarray) -> int:
    """The first free gland id (one above the largest, the background brush not counted)."""
    a = np.asarray(labels)
    g = a[glands_of(a)]
    return int(g.max()) + 1 if g.size else 1


def resolve_unpainted(choice: str, labels: np.ndarray) -> str:
    """``"background"`` or ``"unknown"``: what a tile's choice means for its painted crop."""
    if choice == "auto":
        return "unknown" if (np.asarray(labels) == BACKGROUND_LABEL).any() else "background"
    if choice not in UNPAINTED:
        raise ValueError(f"unpainted must be one of {UNPAINTED}, got {choice!r}")
    return choice


def training_mask(labels: np.ndarray, unpainted: str) -> np.ndarray:
    """A tile's annotations as the trainer's mask: gland ids kept, background brush 0, and
    with ``unpainted == "unknown"`` the unpainted pixels UNKNOWN (int32 then); with
    ``"background"`` a crop without background paint is returned unchanged."""
    a = np.asarray(labels)
    bg = a == BACKGROUND_LABEL
    if unpainted == "unknown":
        out = a.astype(np.int32)
        out[a == 0] = UNKNOWN
        out[bg] = 0
        return out
    if not bg.any():
        return a
    out = a.copy()
    out[bg] = 0
    return out


def gland_like_unpainted(image: np.ndarray, labels: np.ndarray, sigma: float = 2.0) -> int:
    """How many unpainted regions of a tile look like the glands painted in it.

    A colour rule on the tile alone (no model needed): each pixel's colour, smoothed over
    ``sigma`` px, is compared with the mean colour of the painted glands and of the rest
    (painted background if any, else the unpainted pixels); unpainted pixels nearer the
    glands' colour, more than 2 px from a painted gland, opened by a 3 x 3 square, form
    regions, and those at least half the median painted gland's area count. 0 when no
    gland is painted.
    """
    a = np.asarray(labels)
    glands = glands_of(a)
    if not glands.any():
        return 0
    f = ndi.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
    unpainted = a == 0
    ref = a == BACKGROUND_LABEL
    if not ref.any():
        ref = unpainted
    if not ref.any():
        return 0
    g, b = f[glands].mean(0), f[ref].mean(0)
    near = ((f - g) ** 2).sum(-1) < ((f - b) ** 2).sum(-1)
    # Not the rim of a painted gland (a brush edge, anti-aliased masks): a missed gland is a
    # region of its own, so pixels within 2 px of painted glands do not count.
    rim = ndi.binary_dilation(glands, iterations=2)
    cand = ndi.binary_opening(unpainted & near & ~rim, structure=np.ones((3, 3), bool))
    regions, n = ndi.label(cand)
    if not n:
        return 0
    comps, k = ndi.label(glands)
    areas = ndi.sum_labels(np.ones(a.shape), comps, range(1, k + 1))
    sizes = ndi.sum_labels(np.ones(a.shape), regions, range(1, n + 1))
    return int((sizes >= 0.5 * float(np.median(areas))).sum())
