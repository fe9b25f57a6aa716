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


#: Smoothing scales (px) of the warning's pixel features: colour and local contrast from a
#: nucleus to a small gland, so that stroma's scattered nuclei do not read as epithelium.
FEATURE_SIGMAS = (1.0, 2.0, 4.0, 8.0)
#: Where between the painted background's and the glands' projected means a pixel starts
#: counting as gland-like (0.5: halfway; nearer the glands: fewer false alarms).
GLAND_SIDE = 0.7


def _pixel_features(image: np.ndarray) -> np.ndarray:
    """(H, W, 4 x len(FEATURE_SIGMAS)): smoothed RGB and local grey-level spread per scale."""
    x = image[..., :3].astype(np.float32) / 255
    grey = x.mean(-1)
    out = []
    for s in FEATURE_SIGMAS:
        out.append(ndi.gaussian_filter(x, (s, s, 0)))
        m, m2 = ndi.gaussian_filter(grey, s), ndi.gaussian_filter(grey * grey, s)
        out.append(np.sqrt(np.clip(m2 - m * m, 0, None))[..., None])
    return np.concatenate(out, -1)


def gland_like_unpainted(image: np.ndarray, labels: np.ndarray) -> int:
    """How many unpainted regions of a tile look like the glands painted in it.

    A rule on the tile alone (no model needed): a linear discriminant (Fisher's, pooled
    covariance) between the painted glands' pixels and the rest's (painted background if
    any, else the unpainted pixels), on colour and local contrast at several scales, sorts
    each unpainted pixel; those on the glands' side (:data:`GLAND_SIDE`), more than 2 px from
    a painted gland, opened by a 3 x 3 square, form regions, and those at least half the
    median painted gland's area count. 0 when no gland is painted. On GlaS train (half
    resolution) it warns on 11 % of fully painted images and finds 82 % of half-painted
    ones; the colour-mean rule it replaced: 46 % and 88 % (benchmarks/sparse_warning.py).
    """
    a = np.asarray(labels)
    glands = glands_of(a)
    if not glands.any():
        return 0
    unpainted = a == 0
    ref = a == BACKGROUND_LABEL
    if not ref.any():
        ref = unpainted
    if not ref.any():
        return 0
    f = _pixel_features(np.asarray(image))
    g, b = f[glands], f[ref]
    mg, mb = g.mean(0), b.mean(0)
    cov = (np.cov(g.T, bias=True) * len(g) + np.cov(b.T, bias=True) * len(b)) / (len(g) + len(b))
    cov = np.atleast_2d(cov) + np.eye(f.shape[-1]) * 1e-4  # flat tiles: a ridge, not a crash
    w = np.linalg.solve(cov, mg - mb)
    near = f @ w > GLAND_SIDE * float(mg @ w) + (1 - GLAND_SIDE) * float(mb @ w)
    return count_gland_sized(near & unpainted, glands)


def count_gland_sized(candidates: np.ndarray, glands: np.ndarray) -> int:
    """Regions of gland-like unpainted pixels at least half the median painted gland.

    Not the rim of a painted gland (a brush edge, anti-aliased masks): a missed gland is a
    region of its own, so pixels within 2 px of painted glands do not count; the rest is
    opened by a 3 x 3 square before the regions are counted."""
    rim = ndi.binary_dilation(glands, iterations=2)
    cand = ndi.binary_opening(candidates & ~rim, structure=np.ones((3, 3), bool))
    regions, n = ndi.label(cand)
    if not n:
        return 0
    comps, k = ndi.label(glands)
    areas = ndi.sum_labels(np.ones(glands.shape), comps, range(1, k + 1))
    sizes = ndi.sum_labels(np.ones(glands.shape), regions, range(1, n + 1))
    return int((sizes >= 0.5 * float(np.median(areas))).sum())
