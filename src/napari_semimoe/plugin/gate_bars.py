"""The experts' weights of each predicted tile as a small bar chart drawn in the tile (one
bar per expert, named, with its percentage), for a napari Shapes layer: rectangles, their
colours and their texts. Plain numpy: the review page adds the layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .layer_styles import TASK_COLORS

#: The bars' track (the 100 % length) and the chart's panel behind them.
TRACK_COLOR = "#1d1f24d0"
PANEL_COLOR = "#00000090"


@dataclass
class GateBars:
    """Rectangles (4 corners, level-0 px (y, x)), face colours and texts, one per shape."""

    rects: list[np.ndarray] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    #: Text size in level-0 px (the text zooms with the bars, so it always fits them).
    text_size: float = 10.0

    def add(self, y0: float, x0: float, y1: float, x1: float, color: str, text: str = "") -> None:
        self.rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float))
        self.colors.append(color)
        self.texts.append(text)


def expert_names(tasks, n: int) -> list[str]:
    """The experts' names: the tasks' expert titles (Semi-MoE: one expert per task)."""
    names = [getattr(t, "expert_title", "") or getattr(t, "name", "") for t in tasks]
    return names if len(names) == n else [f"expert {i + 1}" for i in range(n)]


#: The chart's place and size in its tile, in tile fractions: its top-left corner inside
#: the part of the tile no neighbour overlaps (tiles overlap by a quarter), 30 % of the
#: tile wide, bars 3.5 % of it high: a corner label, not a panel over the tissue.
CHART_AT, CHART_WIDTH, BAR_HEIGHT = 0.14, 0.3, 0.035


def gate_bars(
    tiles: Sequence[tuple[tuple[int, int, int, int], np.ndarray]], scale: float, names: list[str]
) -> GateBars:
    """One small bar chart per tile: ``tiles`` are ((y, x, h, w) in working px from the
    slide's origin, the tile's gate weights); a (task x expert) gate shows its first row (the
    segmentation's gate), a flat one its weights. Each chart sits in its tile's top-left
    corner: one track per expert, the weight's bar on it, the expert's name and percentage
    over it; the panel behind covers under 5 % of the tile."""
    out = GateBars()
    for (y, x, h, w), g in tiles:
        g = np.asarray(g, float)
        row = g[0] if g.ndim == 2 else g.ravel()
        Y, X, H, W = y * scale, x * scale, h * scale, w * scale
        left, width = X + CHART_AT * W, CHART_WIDTH * W
        line = BAR_HEIGHT * H  # one bar's height; bars 1.3 lines apart
        out.text_size = 0.3 * line  # napari's text size: about a third of its height
        top = Y + CHART_AT * H
        pad = 0.15 * line
        out.add(
            top - pad,
            left - pad,
            top + 1.3 * line * len(row) - 0.3 * line + pad,
            left + width + pad,
            PANEL_COLOR,
        )
        for i, v in enumerate(row):
            y0 = top + 1.3 * line * i
            color = TASK_COLORS[i % len(TASK_COLORS)]
            out.add(y0, left, y0 + line, left + width, TRACK_COLOR)
            out.add(y0, left, y0 + line, left + max(0.01, float(v)) * width, color)
            # the text over its own track (centred), not over the coloured part alone
            out.add(y0, left, y0 + line, left + width, "transparent", f"{names[i]} {v:.0%}")
    return out


def show_gate_bars(viewer, out: dict, base, name: str) -> None:
    """Add or update (in place: re-adding costs ~0.5 s) the bars layer of a prediction
    (``out``: the review page's result, its ``results`` hold each region's tiles, gates)."""
    from .layer_styles import LEGEND, legend_of

    s = out["scale"]
    tasks = out["family"].tasks
    tiles = [
        ((ys + y, xs + x, h, w), g)
        for (ys, xs, _, _), _maps, wp in out["results"]
        for (y, x, h, w), g in zip(wp.tiles, wp.gates)
    ]
    if not tiles:
        return
    first = np.asarray(tiles[0][1])
    names = expert_names(tasks, first.shape[-1] if first.ndim else 1)
    bars = gate_bars(tiles, s, names)
    legend = legend_of(
        "swatches",
        "gates",
        items=[(TASK_COLORS[i % len(TASK_COLORS)], n) for i, n in enumerate(names)],
    )
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = []
        layer.add_rectangles(bars.rects, face_color=bars.colors, edge_width=0)
        layer.features = {"label": bars.texts}
        layer.text.size = bars.text_size
        layer.metadata[LEGEND] = legend
        return
    layer = viewer.add_shapes(
        bars.rects,
        shape_type="rectangle",
        name=name,
        face_color=bars.colors,
        edge_width=0,
        scale=tuple(base),
        features={"label": bars.texts},
        text={
            "string": "{label}",
            "size": bars.text_size,  # in the layer's data px: the text zooms with the bars
            "scaling": True,
            "color": "white",
            "anchor": "center",
        },
        opacity=1.0,
        visible=False,
    )
    layer.metadata[LEGEND] = legend
