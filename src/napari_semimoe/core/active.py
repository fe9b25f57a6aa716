"""Active labeling and pseudo-label QA.

- :func:`suggest_tiles`: predict a whole image or slide once (with the experts), score its
  tissue tiles, return spread-out suggestions in level-0 pixels.
- :func:`pseudo_label_tiles`: the pseudo-labels the trainer derives from unlabeled tiles
  (argmax of the gated segmentation and boundary, tanh of the gated SDF) with a per-tile
  confidence, so the user can veto bad ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .inference import Predictor, working_reader, working_tissue
from .slide import Slide
from .uncertainty import (
    STRATEGIES,
    TileScore,
    binary_entropy,
    score_tiles,
    suggest,
    supports_class_target,
)


def suggest_tiles(
    predictor: Predictor,
    slide: Slide,
    *,
    tile: int | None = None,
    top: int = 10,
    exclude: list[tuple[int, int, int, int]] = (),
    scratch: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    return_maps: bool = False,
    strategy: str = STRATEGIES[0],
    target_class: int | None = None,
) -> list[TileScore] | tuple[list[TileScore], dict[str, np.ndarray] | None]:
    """Rank unlabeled tissue tiles by uncertainty. ``exclude``: level-0 (y, x, h, w) boxes
    (e.g. the training tiles). Returned tiles carry working-scale and level-0 positions.
    ``target_class``: rank by the uncertainty of that class (a multi-class model's
    ``prob_<k>``, :func:`.uncertainty.score_tiles`), e.g. a rare class.

    With ``return_maps`` returns ``(tiles, maps)``, the working-scale prediction maps (so a
    suggestion can start from the model's prediction); ``([], None)`` when cancelled."""
    target = None if target_class is None else f"prob_{int(target_class)}"
    if target is not None and not supports_class_target(
        predictor.family.output_maps(), target_class
    ):
        from .errors import InputError

        raise InputError(
            f"this model has no class {target_class}: train it with the project's classes "
            "(2 · Train) to target a class"
        )
    g = predictor.m.geometry
    H, W = slide.shape
    hw, ww = g.working_shape((H, W))
    fy, fx = H / hw, W / ww
    predictor.opt.experts = True
    if g.input_size:
        work = g.image_to_working(slide.read_region(0, 0, H, W))
        wp = predictor.predict_region_reader(
            lambda y, x, h, w: work[y : y + h, x : x + w],
            (hw, ww),
            progress=progress,
            cancel=cancel,
        )
    else:
        wp = predictor.predict_region_reader(
            working_reader(slide, (hw, ww)),
            (hw, ww),
            out_dir=scratch,
            progress=progress,
            cancel=cancel,
        )
    if wp.cancelled:
        return ([], None) if return_maps else []
    tissue = working_tissue(slide, (hw, ww))
    t = int(tile or default_suggestion_tile(g, (hw, ww)))
    cands = score_tiles(
        {k: np.asarray(v) for k, v in wp.maps.items()},
        t,
        tissue=tissue,
        gates=wp.gates if np.asarray(wp.gates).size else None,  # DCA has no gates
        gate_tiles=np.asarray(wp.tiles).reshape(-1, 4),
        embeddings=wp.embeddings,
        target=target,
    )
    ex = [(round(y / fy), round(x / fx), round(h / fy), round(w / fx)) for y, x, h, w in exclude]
    picks = suggest(cands, top, exclude=ex, strategy=strategy)
    for p in picks:
        p.y0, p.x0 = round(p.y * fy), round(p.x * fx)
        p.h0, p.w0 = min(H - p.y0, round(p.size * fy)), min(W - p.x0, round(p.size * fx))
        p.size0 = round((p.h0 + p.w0) / 2)
    return (picks, wp.maps) if return_maps else picks


def default_suggestion_tile(geometry, working: tuple[int, int]) -> int:
    """Suggestion side at working scale: the training tile, or for a model trained on whole
    images resized to N x N (whose training unit is the whole image) a quarter of it."""
    if geometry.input_size:
        return max(16, min(working) // 4)
    return min(geometry.tile, *working)


@dataclass
class PseudoLabel:
    """What the trainer learns from one unlabeled tile (working-scale arrays)."""

    name: str
    seg: np.ndarray  # uint8 0/1: argmax of the gated segmentation
    boundary: np.ndarray  # uint8 0/1: argmax of the gated boundary head
    sdf: np.ndarray  # float32 tanh of the gated SDF, in [-1, 1]
    confidence: float  # 1 - mean binary entropy of the gated gland probability
    components: dict[str, float] = field(default_factory=dict)
    #: uint8 0/1: pixels the run's confidence masking (``pseudo_confidence``) leaves out of
    #: the unsupervised seg and SDF losses; None when the run trained without it
    unsure: np.ndarray | None = None


def pseudo_label_tiles(
    predictor: Predictor,
    tiles: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    batch: int = 4,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[PseudoLabel] | None:
    """Pseudo-labels of unlabeled tiles as the trainer sees them: each tile whole, in one
    pass (the trainer's crops are tile-sized), in eval mode; with the run's confidence
    masking, the pixels it leaves out. Give a predictor of ``load_model(..., weights=
    "labeller")`` so that a run with a mean teacher shows the teacher's. None when
    cancelled."""
    cfg = predictor.m.meta.get("config") or {}
    tau = float(cfg.get("pseudo_confidence") or 0.0) if isinstance(cfg, dict) else 0.0
    out: list[PseudoLabel] = []
    for i in range(0, len(tiles), batch):
        if cancel is not None and cancel():
            return None
        chunk = np.stack([_pad16(t) for t in tiles[i : i + batch]])
        maps, _ = predictor.predict_batch(chunk)
        for j, name in enumerate(names[i : i + batch]):
            h, w = tiles[i + j].shape[:2]
            p, b = maps["prob"][j, :h, :w], maps["boundary"][j, :h, :w]
            seg_conf = 1.0 - float(binary_entropy(p).mean())
            bnd_conf = 1.0 - float(binary_entropy(b).mean())
            unsure = (np.maximum(p, 1.0 - p) < tau).astype(np.uint8) if tau > 0 else None
            extra = {} if unsure is None else {"left_out": float(unsure.mean())}
            out.append(
                PseudoLabel(
                    name,
                    (p >= 0.5).astype(np.uint8),
                    (b >= 0.5).astype(np.uint8),
                    maps["sdf"][j, :h, :w].astype(np.float32),
                    seg_conf,
                    {
                        "segmentation": seg_conf,
                        "boundary": bnd_conf,
                        "gland_fraction": float((p >= 0.5).mean()),
                    }
                    | extra,
                    unsure,
                )
            )
        if progress is not None:
            progress(min(i + batch, len(tiles)), len(tiles))
    return out


def _pad16(t: np.ndarray) -> np.ndarray:
    h, w = t.shape[:2]
    ph, pw = -h % 16, -w % 16
    return np.pad(t, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else t
