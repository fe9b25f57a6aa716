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

Only entropy, disagreement and gate entropy enter the combined score. On GlaS
(``benchmarks/glas_active.py``, docs/benchmarks.md) the two consistency signals did not
predict a tile's error: SDF consistency was *negatively* correlated with 1 - Dice (it
measures how much gland edge a tile has, where sigmoid(sdf) ~ 0.5 by construction), and
boundary consistency changed sign between models. They are still computed and shown.

Suggestions (:func:`suggest`) group the tiles by what the model sees in them (the pooled
expert features the gates use). The default, ``coverage``, labels uncertain tiles of the
kinds of tissue the training tiles do not cover yet (TypiClust's rule for few labels); the
earlier ``uncertain`` rule (one tile per cluster of the most uncertain ones, Zhdanov 2019)
chased hard, similar tiles and lost to random choice on GlaS (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

#: Selection strategies of :func:`suggest`; the first is the default (docs/benchmarks.md).
STRATEGIES = ("coverage", "uncertain")
#: The maps the signals are made of (Semi-MoE's; ``expert_prob`` is optional): a model
#: family without them has no uncertainty map and no suggestions.
SIGNAL_MAPS = ("prob", "sdf", "boundary")
PIXEL_SIGNALS = ("entropy", "disagreement", "sdf_consistency", "boundary_consistency")
#: Weights of the combined score (pixel signals averaged, then the tile's gate entropy).
WEIGHTS = {
    "entropy": 1.0,
    "disagreement": 1.0,
    "sdf_consistency": 0.0,  # misleads (see above): shown, not scored
    "boundary_consistency": 0.0,  # unstable sign across models: shown, not scored
    "gate_entropy": 0.5,
}


def supports(maps) -> bool:
    """True when ``maps`` (names of a model's output maps) has what the signals need."""
    return set(SIGNAL_MAPS) <= set(maps)


def supports_class_target(maps, k: int) -> bool:
    """True when a suggestion can target class ``k``: the model writes the foreground
    probability and class k's (``prob_<k>``), whatever else it has (DCA has no SDF)."""
    return {"prob", f"prob_{int(k)}"} <= set(maps)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float32), 1e-6, 1 - 1e-6)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def pixel_signals(maps: dict[str, np.ndarray], sdf_gain: float = 10.0) -> dict[str, np.ndarray]:
    """The per-pixel signals from prediction maps (prob, sdf, boundary, expert_prob); a
    model without an SDF and boundary (DCA) gets the entropy and disagreement only."""
    p = np.asarray(maps["prob"], np.float32)
    out = {"entropy": binary_entropy(p)}
    expert = maps.get("expert_prob")
    out["disagreement"] = (
        np.abs(p - np.asarray(expert, np.float32)) if expert is not None else np.zeros_like(p)
    )
    if "sdf" not in maps or "boundary" not in maps:
        return out
    sdf = np.asarray(maps["sdf"], np.float32)
    out["sdf_consistency"] = np.abs(1.0 / (1.0 + np.exp(-sdf_gain * sdf)) - p)
    mask = p >= 0.5
    edge = ndi.binary_dilation(mask, iterations=2) & ~mask
    soft_edge = ndi.uniform_filter(edge.astype(np.float32), 5)  # tolerate 1-2 px offsets
    bnd = np.asarray(maps["boundary"], np.float32)
    out["boundary_consistency"] = np.clip(np.abs(bnd - np.minimum(1.0, 2.5 * soft_edge)), 0, 1)
    return out


def uncertainty_map(maps: dict[str, np.ndarray]) -> np.ndarray:
    """One combined per-pixel map in [0, 1] (weighted mean of the scored pixel signals)."""
    sig = pixel_signals(maps)
    w = sum(WEIGHTS[k] for k in PIXEL_SIGNALS)
    return (sum(WEIGHTS[k] * sig[k] for k in PIXEL_SIGNALS if WEIGHTS[k]) / w).astype(np.float32)


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
    size0: int = 0  # level-0 side (the mean of h0 and w0 where the working scale is anisotropic)
    h0: int = 0  # level-0 height and width of the box
    w0: int = 0
    #: pooled expert features of the nearest prediction tile (diversity), not serialised
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("embedding")
        return d


def score_tiles(
    maps: dict[str, np.ndarray],
    tile: int,
    *,
    tissue: np.ndarray | None = None,
    gates: np.ndarray | None = None,
    gate_tiles: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    stride: int | None = None,
    min_tissue: float = 0.5,
    target: str | None = None,
) -> list[TileScore]:
    """Score every candidate tile (tissue only) by its mean pixel signals + gate entropy.
    ``gates``/``embeddings`` are per prediction tile (``gate_tiles``: y, x, h, w); each
    candidate takes those of the nearest prediction tile.

    ``target``: one class's probability map (``prob_<k>`` of a multi-class model): the
    score is then where the model is unsure of that class (the mean binary entropy of its
    probability, ``class_entropy``), so a rare class's doubtful places come first; the
    other signals are still computed and shown."""
    sig = pixel_signals(maps)
    if target is not None:
        sig["class_entropy"] = binary_entropy(maps[target])
    h, w = maps["prob"].shape
    stride = stride or max(1, tile // 2)
    ge = None
    centres = None
    if gate_tiles is not None and len(gate_tiles):
        centres = gate_tiles[:, :2] + gate_tiles[:, 2:] / 2
    if gates is not None and centres is not None and len(gates):
        ge = gate_entropy(gates)
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
            near = None
            if centres is not None:
                d = np.hypot(centres[:, 0] - (y + tile / 2), centres[:, 1] - (x + tile / 2))
                near = int(np.argmin(d))
            if ge is not None and near is not None:
                comp["gate_entropy"] = float(ge[near])
            if target is None:
                score = sum(WEIGHTS[k] * comp[k] for k in comp) / wsum
            else:
                score = comp["class_entropy"]
            emb = embeddings[near] if embeddings is not None and near is not None else None
            out.append(TileScore(y, x, tile, float(score), comp, embedding=emb))
    return out


def suggest(
    candidates: list[TileScore],
    top: int,
    *,
    exclude: list[tuple[int, int, int, int]] = (),
    spread: float = 1.0,
    prefilter: int = 5,
    seed: int = 0,
    strategy: str = STRATEGIES[0],
    labeled: Sequence[np.ndarray] | None = None,
) -> list[TileScore]:
    """Pick ``top`` tiles to label: uncertain, diverse, not overlapping ``exclude`` boxes
    (y, x, h, w; working scale) or each other (nor within ``spread`` tile sides).

    Both strategies need embeddings on the candidates (else: greedy by score).

    - ``"uncertain"``: the ``prefilter * top`` most uncertain allowed candidates are
      clustered into ``top`` groups (k-means weighted by score, on normalised embeddings)
      and each group gives its tile nearest the centre.
    - ``"coverage"``: uncertainty within what is not yet covered (TypiClust, Hacohen et al.
      2022, for the few-label regime): all allowed candidates and the ``labeled`` tiles'
      embeddings (default: per ``exclude`` box, the mean of the candidates under it) are
      clustered into |labeled| + ``top`` groups; the largest groups without a labeled
      tile come first, and each gives the most uncertain of its typical half (nearest the
      centre).

    The picks are returned most uncertain first.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    allowed: list[TileScore] = []
    covered: dict[int, list[np.ndarray]] = {}  # exclude box -> embeddings of tiles under it
    for c in sorted(candidates, key=lambda t: -t.score):
        box = (c.y, c.x, c.size, c.size)
        hits = [i for i, b in enumerate(exclude) if _overlap(box, b)]
        if not hits:
            allowed.append(c)
        elif strategy == "coverage" and c.embedding is not None:
            for i in hits:
                covered.setdefault(i, []).append(np.asarray(c.embedding, np.float64))
    pool = allowed if strategy == "coverage" else allowed[: max(top, prefilter * top)]
    if top < 1 or not pool:
        return []
    if any(c.embedding is None for c in pool) or len(pool) <= top:
        return _greedy(allowed, top, spread)
    if strategy == "coverage":
        if labeled is None:  # one embedding per labeled box: the mean of the tiles under it
            labeled = [np.mean(v, axis=0) for v in covered.values()]
        picks = _coverage(pool, list(labeled), top, spread, seed)
        if len(picks) < top:
            picks += _greedy(
                [c for c in allowed if c not in picks], top - len(picks), spread, picks
            )
        return sorted(picks, key=lambda t: -t.score)
    emb = _normalised([c.embedding for c in pool])
    w = np.array([max(c.score, 1e-6) for c in pool])
    labels, centres = _weighted_kmeans(emb, w, top, seed)
    picks: list[TileScore] = []
    for k in range(top):
        members = np.flatnonzero(labels == k)
        order = members[np.argsort(np.linalg.norm(emb[members] - centres[k], axis=1))]
        for i in order:  # nearest the centre that does not clash with earlier picks
            c = pool[i]
            if not _clashes(c, picks, spread):
                picks.append(c)
                break
    if len(picks) < top:  # empty clusters or clashes: fill up greedily
        picks += _greedy([c for c in allowed if c not in picks], top - len(picks), spread, picks)
    return sorted(picks, key=lambda t: -t.score)


def _normalised(emb: Sequence[np.ndarray]) -> np.ndarray:
    e = np.stack([np.asarray(v, np.float64) for v in emb])
    return e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)


def cluster_with_labeled(
    pool: list[TileScore], labeled: list[np.ndarray], top: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised embeddings of ``pool`` then ``labeled``, clustered (unweighted k-means)
    into |labeled| + ``top`` groups: returns (embeddings, group of each, group centres)."""
    x = _normalised([c.embedding for c in pool] + labeled)
    labels, centres = _weighted_kmeans(x, np.ones(len(x)), min(len(x), top + len(labeled)), seed)
    return x, labels, centres


def typical_by_score(
    pool: list[TileScore], members: np.ndarray, x: np.ndarray, centre: np.ndarray
) -> list[int]:
    """The typical half of a group (nearest its centre), most uncertain first."""
    dist = np.linalg.norm(x[members] - centre, axis=1)
    return sorted(members[dist <= np.median(dist)], key=lambda i: -pool[i].score)


def uncovered_first(labels: np.ndarray, n: int, k: int) -> list[int]:
    """Order in which coverage visits the ``k`` groups: those with no labeled member
    (``labels[n:]``) first, each part larger first (pool members, ``labels[:n]``); groups
    without pool members are left out."""
    covered = set(labels[n:].tolist())
    sizes = np.bincount(labels[:n], minlength=k)
    return sorted((j for j in range(k) if sizes[j]), key=lambda j: (j in covered, -sizes[j]))


def _coverage(
    pool: list[TileScore], labeled: list[np.ndarray], top: int, spread: float, seed: int
) -> list[TileScore]:
    n = len(pool)
    x, labels, centres = cluster_with_labeled(pool, labeled, top, seed)
    # Covered groups are visited only if picks are still missing.
    order = uncovered_first(labels, n, len(centres))
    picks: list[TileScore] = []
    for j in order:
        if len(picks) >= top:
            break
        for i in typical_by_score(pool, np.flatnonzero(labels[:n] == j), x, centres[j]):
            if not _clashes(pool[i], picks, spread):
                picks.append(pool[i])
                break
    return picks


def _greedy(
    cands: list[TileScore], top: int, spread: float, taken: list[TileScore] | None = None
) -> list[TileScore]:
    taken = list(taken or [])
    out: list[TileScore] = []
    for c in sorted(cands, key=lambda t: -t.score):
        if len(out) >= top:
            break
        if not _clashes(c, taken + out, spread):
            out.append(c)
    return out


def _clashes(c: TileScore, picks: list[TileScore], spread: float) -> bool:
    return any(
        np.hypot(c.y - p.y, c.x - p.x) < spread * c.size
        or _overlap((c.y, c.x, c.size, c.size), (p.y, p.x, p.size, p.size))
        for p in picks
    )


def _weighted_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, seed: int, iters: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding and Lloyd steps with sample weights; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    centres = [x[int(np.argmax(w))]]  # start from the most uncertain
    near = ((x - centres[0]) ** 2).sum(1)  # squared distance to the nearest centre so far
    for _ in range(1, k):
        d2 = near * w
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[0])
        near = np.minimum(near, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    labels = np.zeros(len(x), int)
    xx = (x**2).sum(1)[:, None]
    for _ in range(iters):
        # |x - c|^2 without the N x k x D array (a whole slide has ~10^5 candidates)
        labels = np.argmin(xx - 2 * x @ c.T + (c**2).sum(1)[None], axis=1)
        mass = np.bincount(labels, weights=w, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x * w[:, None])
        new = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], c)
        if np.allclose(new, c):
            break
        c = new
    return labels, c


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (
        a[0] >= b[0] + b[2] or a[0] + a[2] <= b[0] or a[1] >= b[1] + b[3] or a[1] + a[3] <= b[1]
    )
