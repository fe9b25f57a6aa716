"""Where is the model unsure? Per-pixel uncertainty and per-tile scores from one prediction
pass with the experts' outputs, and spread-out tile suggestions for active labeling.

Signals (each in [0, 1], 1 = unsure):

- ``entropy``: binary entropy of the gated gland probability (ilastik-style ambiguity);
- ``disagreement``: |gated probability - segmentation expert's probability|;
- ``sdf_consistency``: the SDF's sign disagrees with the segmentation,
  |sigmoid(k * sdf) - p|;
- ``boundary_consistency``: the boundary map disagrees with the edges of the segmented mask
  (boundary predicted where there is no mask edge, or a mask edge without boundary);
- ``gate_entropy`` (per tile): entropy of the segmentation gate's weights over the experts:
  the gates cannot tell which expert to trust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

PIXEL_SIGNALS = ("entropy", "disagreement", "sdf_consistency", "boundary_consistency")
#: Weights of the combined score (pixel signals averaged, then the tile's gate entropy).
WEIGHTS = {
    "entropy": 1.0,
    "disagreement": 1.0,
    "sdf_consistency": 1.0,
    "boundary_consistency": 0.5,
    "gate_entropy": 0.5,
}


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float32), 1e-6, 1 - 1e-6)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def pixel_signals(maps: dict[str, np.ndarray], sdf_gain: float = 10.0) -> dict[str, np.ndarray]:
    """The per-pixel signals from prediction maps (prob, sdf, boundary, expert_prob)."""
    p = np.asarray(maps["prob"], np.float32)
    out = {"entropy": binary_entropy(p)}
    expert = maps.get("expert_prob")
    out["disagreement"] = (
        np.abs(p - np.asarray(expert, np.float32)) if expert is not None else np.zeros_like(p)
    )
    sdf = np.asarray(maps["sdf"], np.float32)
    out["sdf_consistency"] = np.abs(1.0 / (1.0 + np.exp(-sdf_gain * sdf)) - p)
    mask = p >= 0.5
    edge = ndi.binary_dilation(mask, iterations=2) & ~mask
    soft_edge = ndi.uniform_filter(edge.astype(np.float32), 5)  # tolerate 1-2 px offsets
    bnd = np.asarray(maps["boundary"], np.float32)
    out["boundary_consistency"] = np.clip(np.abs(bnd - np.minimum(1.0, 2.5 * soft_edge)), 0, 1)
    return out


def uncertainty_map(maps: dict[str, np.ndarray]) -> np.ndarray:
    """One combined per-pixel map in [0, 1] (weighted mean of the pixel signals)."""
    sig = pixel_signals(maps)
    w = sum(WEIGHTS[k] for k in PIXEL_SIGNALS)
    return (sum(WEIGHTS[k] * sig[k] for k in PIXEL_SIGNALS) / w).astype(np.float32)


def gate_entropy(gates: np.ndarray) -> np.ndarray:
    """Normalised entropy of the segmentation gate's expert weights, per tile (N, 3, 3)."""
    g = np.clip(np.asarray(gates, np.float64)[:, 0], 1e-9, 1)
    return (-(g * np.log(g)).sum(-1) / np.log(g.shape[-1])).astype(np.float32)


@dataclass
class TileScore:
    """A candidate tile in working-scale pixels (and level-0 pixels for the user)."""

    y: int
    x: int
    size: int
    score: float
    components: dict[str, float] = field(default_factory=dict)
    y0: int = 0  # level-0
    x0: int = 0
    size0: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def score_tiles(
    maps: dict[str, np.ndarray],
    tile: int,
    *,
    tissue: np.ndarray | None = None,
    gates: np.ndarray | None = None,
    gate_tiles: np.ndarray | None = None,
    stride: int | None = None,
    min_tissue: float = 0.5,
) -> list[TileScore]:
    """Score every candidate tile (tissue only) by its mean pixel signals + gate entropy."""
    sig = pixel_signals(maps)
    h, w = maps["prob"].shape
    stride = stride or max(1, tile // 2)
    ge = None
    if gates is not None and gate_tiles is not None and len(gates):
        ge = gate_entropy(gates)
        centres = gate_tiles[:, :2] + gate_tiles[:, 2:] / 2
    wsum = sum(WEIGHTS.values()) if ge is not None else sum(WEIGHTS[k] for k in PIXEL_SIGNALS)
    out = []
    for y in range(0, max(1, h - tile + 1), stride):
        for x in range(0, max(1, w - tile + 1), stride):
            sl = (slice(y, y + tile), slice(x, x + tile))
            t = tissue[sl] if tissue is not None else None
            if t is not None and t.mean() < min_tissue:
                continue
            comp = {
                k: float(v[sl][t].mean() if t is not None else v[sl].mean()) for k, v in sig.items()
            }
            if ge is not None:
                d = np.hypot(centres[:, 0] - (y + tile / 2), centres[:, 1] - (x + tile / 2))
                comp["gate_entropy"] = float(ge[int(np.argmin(d))])
            score = sum(WEIGHTS[k] * comp[k] for k in comp) / wsum
            out.append(TileScore(y, x, tile, float(score), comp))
    return out


def suggest(
    candidates: list[TileScore],
    top: int,
    *,
    exclude: list[tuple[int, int, int, int]] = (),
    spread: float = 1.0,
) -> list[TileScore]:
    """Greedy pick of the highest scores, skipping tiles that overlap ``exclude`` boxes
    (y, x, h, w; working scale) and any tile overlapping a pick or within ``spread`` tile
    sides of it, so the suggestions are spread out rather than clustered."""
    picks: list[TileScore] = []
    for c in sorted(candidates, key=lambda t: -t.score):
        if len(picks) >= top:
            break
        if any(_overlap((c.y, c.x, c.size, c.size), b) for b in exclude):
            continue
        if any(
            np.hypot(c.y - p.y, c.x - p.x) < spread * c.size
            or _overlap((c.y, c.x, c.size, c.size), (p.y, p.x, p.size, p.size))
            for p in picks
        ):
            continue
        picks.append(c)
    return picks


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (
        a[0] >= b[0] + b[2] or a[0] + a[2] <= b[0] or a[1] >= b[1] + b[3] or a[1] + a[3] <= b[1]
    )
