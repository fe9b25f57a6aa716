"""Active labeling on a whole image or slide: predict once (with the experts), score tissue
tiles, return spread-out suggestions in level-0 pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .predict import Predictor, working_reader, working_tissue
from .slide import Slide
from .uncertainty import TileScore, score_tiles, suggest


def suggest_tiles(
    predictor: Predictor,
    slide: Slide,
    *,
    tile: int | None = None,
    top: int = 10,
    exclude: list[tuple[int, int, int, int]] = (),
    scratch: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TileScore]:
    """Rank unlabeled tissue tiles by uncertainty. ``exclude``: level-0 (y, x, h, w) boxes
    (e.g. the training tiles). Returned tiles carry working-scale and level-0 positions."""
    g = predictor.m.geometry
    H, W = slide.shape
    hw, ww = g.working_shape((H, W))
    fy, fx = H / hw, W / ww
    predictor.opt.experts = True
    if g.input_size:
        work = g.image_to_working(slide.read_region(0, 0, H, W))
        wp = predictor.predict_region_reader(
            lambda y, x, h, w: work[y : y + h, x : x + w], (hw, ww), progress=progress
        )
    else:
        wp = predictor.predict_region_reader(
            working_reader(slide, (hw, ww)), (hw, ww), out_dir=scratch, progress=progress
        )
    tissue = working_tissue(slide, (hw, ww))
    t = int(tile or min(g.tile, hw, ww))
    cands = score_tiles(
        {k: np.asarray(v) for k, v in wp.maps.items()},
        t,
        tissue=tissue,
        gates=wp.gates,
        gate_tiles=np.asarray(wp.tiles).reshape(-1, 4),
    )
    ex = [(round(y / fy), round(x / fx), round(h / fy), round(w / fx)) for y, x, h, w in exclude]
    picks = suggest(cands, top, exclude=ex)
    for p in picks:
        p.y0, p.x0, p.size0 = round(p.y * fy), round(p.x * fx), round(p.size * (fy + fx) / 2)
    return picks
