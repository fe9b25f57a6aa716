"""Which expert each tile is routed to, on the Review page.

A model trained with attribute routing (dMoE blocks, :mod:`..core.routing`) routes each
image through its attribute's router; an image whose attribute is unknown or was not seen in
training goes through "any", and the page says so in one line. While the dock predicts,
:class:`RoutingRun` routes the predictor (``Predictor.use_attribute``) and, when the model has
routing blocks, reads the gate weights of the coarsest routed level (one token per 16 working
px at the bottleneck) in the predictor's own batches: a forward hook on that block, installed
only for this prediction, so a model without routing (and the CLI) runs as before. From them:

- the layer :data:`ROUTING_LAYER`: each coarse pixel's most-weighted routing expert (a
  Labels layer, expert ``i`` = label ``i + 1``, in the gate bars' colours);
- per-attribute gate histograms (:class:`GateTable`): the mean gate weight of each expert
  over the predicted tiles of each attribute value, for the table in the page.

A moe-k model without routing has per-tile gates over its K experts already (the predictor's
``gates``, drawn by :mod:`.gate_bars`); the table then shows those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .layer_styles import LEGEND, TASK_COLORS, legend_of

ROUTING_LAYER = "routing (which expert)"
UNKNOWN = "unknown"
ROUTING_HELP = (
    "Which of the shared experts the model's router sends each part of the tissue to "
    "(its most-weighted expert at the coarsest routed level, one square per 16 model px)."
)


def expert_colour(i: int) -> str:
    return TASK_COLORS[i % len(TASK_COLORS)]


def any_note(router: str | None, attribute: str | None) -> str:
    """The one line saying the "any" router answered ('' when the image's own did, or the
    model has no attribute routing)."""
    from ..core.routing import ANY

    if router != ANY:
        return ""
    if attribute:
        return f"'{attribute}' was not seen in training: the 'any' router is used"
    return "origin unknown (1 · Project, 'Comes from'): the 'any' router is used"


class RoutingProbe:
    """The coarsest routed level's gates of each tile the predictor sees (see the module)."""

    def __init__(self, predictor, routing) -> None:
        self.predictor = predictor
        key = max(routing.blocks.keys(), key=int)  # the coarsest level: its tokens are few
        self.block = routing.blocks[key]
        self._calls: list[np.ndarray] = []  # one per encoder pass of the current batch
        self.maps: list[np.ndarray] = []  # per tile: (h, w) uint8 expert index
        self.means: list[np.ndarray] = []  # per tile: (n,) mean gate weight
        self._handle = self.block.register_forward_hook(self._hook)
        self._batch = predictor.predict_batch
        self._own = "predict_batch" in vars(predictor)  # already wrapped on the instance
        predictor.predict_batch = self._predict_batch  # this instance only

    def _hook(self, module, inputs, _output) -> None:
        self._calls.append(module.gates(*inputs).float().cpu().numpy())

    def _predict_batch(self, tiles, *args, **kwargs):
        self._calls = []
        out = self._batch(tiles, *args, **kwargs)
        if self._calls:  # every encoder of the model passes the block: their mean
            g = np.mean(self._calls, axis=0)  # (B, h, w, n)
            self.maps.extend(g.argmax(-1).astype(np.uint8))
            self.means.extend(g.mean((1, 2)))
        return out

    def take(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The next ``n`` tiles' (maps, means), in the order they were predicted."""
        maps, means = self.maps[:n], self.means[:n]
        del self.maps[:n], self.means[:n]
        return maps, means

    def close(self) -> None:
        self._handle.remove()
        if self._own:
            self.predictor.predict_batch = self._batch
        else:  # the class's method again
            del self.predictor.predict_batch


class RoutingRun:
    """One prediction's routing (worker thread): routes the predictor through the image's
    attribute and collects, per region, what the page shows."""

    def __init__(self, predictor, attribute: str | None, overlay: bool = True) -> None:
        from ..core.routing import routing_of

        self.attribute = attribute
        self.router = predictor.use_attribute(attribute)
        routing = routing_of(predictor.net)
        self.n_route = 0 if routing is None else len(routing.first.experts)
        self.probe = RoutingProbe(predictor, routing) if routing is not None else None
        self.overlay = overlay
        self.regions: list[tuple[Any, list, list]] = []  # (tiles, coarse maps, mean gates)

    def region(self, wp) -> None:
        """A predicted region (``WorkingPrediction``): its tiles' routing, or its gates."""
        n = len(wp.tiles)
        if self.probe is not None:
            maps, means = self.probe.take(n)
            self.regions.append((list(wp.tiles), maps if self.overlay else [], means))
        elif np.asarray(wp.gates).ndim == 2 and np.asarray(wp.gates).shape[1] > 1:
            self.regions.append((list(wp.tiles), [], list(np.asarray(wp.gates, float))))

    def result(self) -> dict:
        if self.probe is not None:
            self.probe.close()
        return {
            "router": self.router,
            "attribute": self.attribute,
            "note": any_note(self.router, self.attribute),
            "routed": self.probe is not None,
            "regions": self.regions,
        }


def routing_canvas(
    regions: Sequence[tuple[tuple[int, int], Sequence, Sequence[np.ndarray]]],
    shape: tuple[int, int],
) -> np.ndarray:
    """A working-scale uint8 map, 0 = not predicted, else 1 + the most-weighted expert:
    ``regions`` are (region origin, its tiles' (y, x, h, w), their coarse maps); each coarse
    map is stretched over its tile (later tiles over the overlaps)."""
    out = np.zeros(shape, np.uint8)
    H, W = shape
    for (ys, xs), tiles, maps in regions:
        for (y, x, h, w), m in zip(tiles, maps):
            f = max(1, int(np.ceil(max(h, w) / max(1, max(m.shape)))))
            big = np.repeat(np.repeat(np.asarray(m, np.uint8) + 1, f, 0), f, 1)
            y0, x0 = ys + y, xs + x
            hh, ww = min(h, H - y0, big.shape[0]), min(w, W - x0, big.shape[1])
            if hh > 0 and ww > 0:
                out[y0 : y0 + hh, x0 : x0 + ww] = big[:hh, :ww]
    return out


class GateTable:
    """Per-attribute gate histograms: the latest gate weights of each predicted tile (by
    image and tile, so predicting again replaces), grouped by the image's attribute."""

    def __init__(self) -> None:
        self.model_key: Any = None
        self.tiles: dict[tuple[str, int, int], tuple[str, np.ndarray]] = {}

    def record(self, model_key: Any, image: str, attribute: str | None, boxes, means) -> None:
        """``boxes``: the tiles' level-agnostic keys (y, x); ``means``: their gate weights.
        A new model (or one with another number of experts) starts the table again."""
        means = [np.asarray(m, float) for m in means]
        if model_key != self.model_key or any(
            v.shape != means[0].shape for _a, v in self.tiles.values() if means
        ):
            self.tiles.clear()
            self.model_key = model_key
        for (y, x), m in zip(boxes, means):
            self.tiles[(image, int(y), int(x))] = (attribute or UNKNOWN, m)

    def rows(self) -> list[tuple[str, int, np.ndarray]]:
        """(attribute value, tiles, mean gate weight per expert), values sorted, unknown last."""
        groups: dict[str, list[np.ndarray]] = {}
        for a, m in self.tiles.values():
            groups.setdefault(a, []).append(m)
        order = sorted(groups, key=lambda a: (a == UNKNOWN, a))
        return [(a, len(groups[a]), np.mean(groups[a], axis=0)) for a in order]


class RoutingBox(QGroupBox):
    """The Review page's routing part: the overlay switch, the "any" line and the table."""

    def __init__(self, session, viewer) -> None:
        super().__init__("Routing: which expert each tile goes to")
        self.session, self.viewer = session, viewer
        self.table_data = GateTable()
        v = QVBoxLayout(self)
        self.overlay_check = QCheckBox("show the routing layer")
        self.overlay_check.setChecked(True)
        self.overlay_check.setToolTip(
            f"after a prediction with a model trained with routing, the layer '{ROUTING_LAYER}'"
            " shows which shared expert each part of the tissue was routed to"
        )
        self.overlay_check.toggled.connect(self._set_layer_visible)
        v.addWidget(self.overlay_check)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #ffb347")
        v.addWidget(self.note)
        self.table = QTableWidget(0, 0)
        self.table.setToolTip(
            "mean gate weight of each expert over the predicted tiles of each 'Comes from' "
            "value: do slides of one origin go to experts of their own?"
        )
        self.table.setMaximumHeight(140)
        v.addWidget(self.table)
        self.setVisible(False)  # until a model with routing or K experts has predicted

    @property
    def overlay(self) -> bool:
        return self.overlay_check.isChecked()

    def _set_layer_visible(self, on: bool) -> None:
        """The switch says what the canvas shows: the routing layer on or off."""
        if ROUTING_LAYER in self.viewer.layers:
            self.viewer.layers[ROUTING_LAYER].visible = on

    def show_routing(self, out: dict, base) -> None:
        """Main thread: the note, the layer and the table of a prediction's routing."""
        r = out.get("routing")
        if r is None:
            return
        ckpt = self.session.checkpoint()  # the table is one model's (a new checkpoint: anew)
        model_key = None if ckpt is None else (str(ckpt), ckpt.stat().st_mtime_ns)
        self.note.setText(r["note"])
        self.note.setVisible(bool(r["note"]))
        if r["note"]:
            self.session.say(r["note"])
        regions = r["regions"]
        if not regions and not r["router"]:
            self.setVisible(False)
            return
        self.setVisible(True)
        s = out["scale"]
        if r["routed"] and self.overlay and any(maps for _t, maps, _m in regions):
            self._show_layer(out, regions, s, base)
        entry = self.session.entry
        if entry is not None:
            for ((ys, xs, _h, _w), _maps, _wp), (tiles, _mp, means) in zip(out["results"], regions):
                boxes = [(ys + y, xs + x) for y, x, _hh, _ww in tiles]
                self.table_data.record(model_key, entry.name, r["attribute"], boxes, means)
        self.fill_table()

    def _show_layer(self, out: dict, regions, s: float, base) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        H, W = self.session.layers.slide_shape()
        shape = (round(H / s), round(W / s))
        parts = [
            ((ys, xs), tiles, maps)
            for ((ys, xs, _h, _w), _m, _wp), (tiles, maps, _g) in zip(out["results"], regions)
        ]
        canvas = routing_canvas(parts, shape)
        n = next((len(m) for _t, _mp, means in regions for m in means), int(canvas.max()))
        if (
            ROUTING_LAYER in self.viewer.layers
            and self.viewer.layers[ROUTING_LAYER].data.shape == shape
        ):
            layer = self.viewer.layers[ROUTING_LAYER]
            layer.data[canvas > 0] = canvas[canvas > 0]
            layer.refresh()
        else:
            if ROUTING_LAYER in self.viewer.layers:
                self.viewer.layers.remove(ROUTING_LAYER)
            layer = self.viewer.add_labels(
                canvas,
                name=ROUTING_LAYER,
                scale=tuple(base * s),
                translate=tuple(base * (s - 1) / 2),
                opacity=0.45,
                visible=self.overlay,  # "show the routing layer" is ticked: shown
            )
        colours: dict[Any, Any] = {0: (0, 0, 0, 0), None: (0, 0, 0, 0)}
        colours.update({i + 1: expert_colour(i) for i in range(n)})
        layer.colormap = DirectLabelColormap(color_dict=colours)
        layer.features = {"index": list(range(n + 1)), "expert": ["", *names(n)]}
        leg = legend_of(
            "swatches", "routing", items=[(expert_colour(i), e) for i, e in enumerate(names(n))]
        )
        leg["help"] = ROUTING_HELP
        layer.metadata[LEGEND] = leg

    def fill_table(self) -> None:
        rows = self.table_data.rows()
        n = max((len(m) for _a, _k, m in rows), default=0)
        t = self.table
        t.clear()
        t.setRowCount(len(rows))
        t.setColumnCount(n + 1)
        t.setHorizontalHeaderLabels(["tiles", *names(n)])
        t.setVerticalHeaderLabels([a for a, _k, _m in rows])
        for i, (_a, k, m) in enumerate(rows):
            t.setItem(i, 0, QTableWidgetItem(str(k)))
            for j, v in enumerate(m):
                t.setItem(i, j + 1, QTableWidgetItem(f"{v:.0%}"))
        t.resizeColumnsToContents()

    def clear(self) -> None:
        """A new image: its note is the next prediction's (the table keeps every image's)."""
        self.note.setText("")
        self.note.setVisible(False)


def names(n: int) -> list[str]:
    return [f"expert {i + 1}" for i in range(n)]
