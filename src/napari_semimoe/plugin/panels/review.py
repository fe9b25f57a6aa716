"""Page 3 · Review and correct: predict the view, the tiles or the image in a worker thread,
show the output maps (one canvas per output at working scale, updated in place), Accept the
predicted glands into the annotations (add / replace, one undo step through the session),
Undo, and the on-disk annotation history with Restore.

*Predict view* reads the canvas size through :func:`..common.canvas_size` (public
``viewer.canvas.size`` where napari has it); without any, the whole image is predicted.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError
from ...core.sparse import BACKGROUND_LABEL, next_label
from ..accept import COVERED, PRED_SCALE, accept_key, class_patches, tile_parts
from ..class_layers import style_class_map
from ..common import camera, canvas_size, notify, qt_alive
from ..fresh_combo import FreshCombo as _FreshCombo
from ..gate_bars import show_gate_bars
from ..jobs import ProgressJob
from ..layer_styles import LEGEND, experts_words, label_style, legend_of, map_style, outline
from ..layers import NapariLayers
from ..legend import LegendWidget
from ..routing_view import ROUTING_LAYER, RoutingBox, RoutingRun
from ..session import Session

_notify = notify

ACCEPT_MODES = ("add: my painting wins", "replace my painting")
#: The suggestions' uncertainty map (made for families with the maps it needs).
UNCERTAINTY_LAYER = "Semi-MoE uncertainty"


def prediction_layer_names() -> set[str]:
    """Every layer a prediction may have made: each known family's, and the uncertainty."""
    from ...core.families import families, get_family

    names = {UNCERTAINTY_LAYER, ROUTING_LAYER}
    for n in families():
        names.update(get_family(n).layer_names().values())
    return names


class ReviewPanel(QWidget):
    def __init__(self, session: Session, layers: NapariLayers) -> None:
        super().__init__()
        self.session, self.layers = session, layers
        self.viewer = layers.viewer
        self.worker = None
        self._last_pred: dict[str, Any] | None = None
        self._pending_ops: list = []
        self._pred_job: ProgressJob | None = None
        self._build()
        session.undo_changed.connect(lambda on: self.undo_btn.setEnabled(on))
        session.labels_edited.connect(lambda why: why != "undo" and self.fill_history())
        session.image_changed.connect(self._image_changed)

    def _image_changed(self, _entry) -> None:
        """Predictions belong to the previous image; the history is the new one's (a
        multi-class model's layers are named by its classes: the last one's go too)."""
        last = {} if self._last_pred is None else self._last_pred["family"].layer_names()
        self.layers.remove(prediction_layer_names() | set(last.values()))
        self.fill_history()
        self.routing_box.clear()

    def _build(self) -> None:
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.pred_view_btn = QPushButton("Predict view")
        self.pred_view_btn.clicked.connect(lambda: self.predict("view"))
        self.pred_tiles_btn = QPushButton("Predict tiles")
        self.pred_tiles_btn.clicked.connect(lambda: self.predict("tiles"))
        self.pred_all_btn = QPushButton("Predict image")
        self.pred_all_btn.clicked.connect(lambda: self.predict("image"))
        for b in (self.pred_view_btn, self.pred_tiles_btn, self.pred_all_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.experts_check = QCheckBox("also show each expert's outputs")
        v.addWidget(self.experts_check)
        prow = QHBoxLayout()
        self.pred_progress = QProgressBar()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel_prediction)
        prow.addWidget(self.pred_progress)
        prow.addWidget(self.cancel_btn)
        v.addLayout(prow)
        self.accept_mode = QComboBox()
        self.accept_mode.addItems(ACCEPT_MODES)
        self.accept_mode.setToolTip(
            "only where a prediction exists, inside the training tiles: 'add' never changes "
            "a painted pixel; 'replace' overwrites your painting there"
        )
        # long texts must not widen the page past the dock (it then scrolls sideways)
        self.accept_mode.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        mrow = QFormLayout()
        mrow.addRow("Accept mode", self.accept_mode)
        v.addLayout(mrow)
        arow = QHBoxLayout()
        self.accept_btn = QPushButton("Accept prediction in tiles")
        self.accept_btn.setToolTip(
            "put the predicted glands into the annotations inside the training tiles "
            "(one undo step; the annotations before are kept in the history)"
        )
        self.accept_btn.clicked.connect(self.accept_prediction)
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.setToolTip("undo the last accept, restore or 'Label this tile'")
        self.undo_btn.clicked.connect(self.undo_accept)
        self.undo_btn.setEnabled(False)
        arow.addWidget(self.accept_btn)
        arow.addWidget(self.undo_btn)
        v.addLayout(arow)
        hbox = QGroupBox("Annotation history (kept on disk)")
        hrow = QHBoxLayout(hbox)
        self.history_combo = _FreshCombo(self.fill_history)
        self.history_combo.setToolTip(
            "earlier versions of this image's annotations: before each accept or restore, "
            "and one a minute while you paint (the last 20)"
        )
        self.history_combo.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.history_combo.setPlaceholderText("no earlier version yet")
        self.restore_btn = QPushButton("Restore")
        self.restore_btn.setToolTip("put this version back (undoable; today's is kept first)")
        self.restore_btn.clicked.connect(self.restore_version)
        hrow.addWidget(self.history_combo, 1)
        hrow.addWidget(self.restore_btn)
        v.addWidget(hbox)
        self.routing_box = RoutingBox(self.session, self.viewer)  # attribute routing, K experts
        v.addWidget(self.routing_box)
        self.legend = LegendWidget(self.viewer)  # follows the layers shown
        v.addWidget(self.legend)
        v.addStretch(1)

    def _region(self, mode: str) -> list[tuple[int, int, int, int]]:
        """Level-0 boxes to predict for 'view', 'tiles' or 'image'."""
        H, W = self.layers.slide_shape()
        if mode == "image":
            return [(0, 0, H, W)]
        if mode == "tiles":
            if self.session.entry is None or not self.session.entry.train_tiles():
                raise InputError("no training tiles on this image to predict")
            return [(t.y, t.x, t.h, t.w) for t in self.session.entry.train_tiles()]
        corners = np.asarray(self.viewer.layers.extent.world)[:, -2:]
        size = canvas_size(self.viewer)
        if size is None:
            self.session.say("could not read the view's size; predicting the whole image")
        else:
            half = np.asarray(size) / 2 / camera(self.viewer).zoom
            c = np.asarray(camera(self.viewer).center[-2:])
            corners = np.stack([c - half, c + half])
        b = corners / self.layers.base_scale()
        y0, x0 = np.clip(np.floor(b[0]), 0, [H, W]).astype(int)
        y1, x1 = np.clip(np.ceil(b[1]), 0, [H, W]).astype(int)
        if y1 - y0 < 16 or x1 - x0 < 16:
            raise InputError("the view does not show the slide; pan to the tissue")
        return [(int(y0), int(x0), int(y1 - y0), int(x1 - x0))]

    def predict(self, mode: str = "view") -> None:
        from napari.qt.threading import thread_worker

        from ...core.device import releasing_memory
        from ...core.inference import PredictOptions, Predictor, load_model
        from ...core.instances import drop_off_tissue
        from ...core.slide import tissue_mask
        from ...core.uncertainty import supports, uncertainty_map

        try:
            ckpt = self.session.checkpoint()
            if ckpt is None:
                raise InputError("no trained model yet: train first (2 · Train)")
            boxes = self._region(mode)
            slide = self.layers.slide()
        except InputError as exc:
            _notify(str(exc), "warning")
            return
        experts = self.experts_check.isChecked()
        attribute, overlay = self.session.attribute, self.routing_box.overlay
        job = self._pred_job = ProgressJob(self.pred_progress, self.cancel_btn, self)

        @thread_worker(ignore_errors=True)  # errors become a notification below
        @releasing_memory  # the GPU's cache back to the driver once the model is gone
        def work():
            loaded = load_model(ckpt, "auto")
            family = loaded.family
            # Expert maps are always computed: the uncertainty map needs the seg expert.
            pred = Predictor(loaded, PredictOptions(experts=True))
            routing = RoutingRun(pred, attribute, overlay)  # the image's router; its gates
            expert_maps = set(family.output_maps(True))
            uncertain = supports(family.output_maps())
            s = loaded.geometry.scale
            t = pred.tile
            sizes = [(max(16, round(h / s)), max(16, round(w / s))) for _, _, h, w in boxes]
            from ...core.inference import TileGrid

            counts = [len(TileGrid(sz, t, pred.overlap)) for sz in sizes]
            total = sum(counts)
            results = []
            for i, ((y, x, _h, _w), (hs, ws)) in enumerate(zip(boxes, sizes)):
                base = sum(counts[:i])  # tiles of the regions before this one
                ys, xs = round(y / s), round(x / s)
                wp = pred.predict_region_reader(
                    lambda yy, xx, hh, ww, ys=ys, xs=xs: slide.read_scaled(
                        ys + yy, xs + xx, hh, ww, s
                    ),
                    (hs, ws),
                    progress=lambda d, _t, base=base: job.progress(base + d, total),
                    cancel=lambda: job.cancelled,
                )
                if wp.cancelled:
                    return None
                routing.region(wp)
                maps = {k: np.asarray(v) for k, v in wp.maps.items()}
                maps["mask"] = pred.mask(maps)
                on_tissue = tissue_mask(slide, s, (ys, xs, hs, ws))  # glands on glass go
                inst = drop_off_tissue(pred.instances(maps), on_tissue)
                maps["instances"] = inst
                maps["mask"] = maps["mask"] * (inst > 0)  # what is kept, as one mask
                for k, v in family.derived_maps(maps).items():  # a multi-class class map
                    maps[k] = v * on_tissue.astype(v.dtype)
                if uncertain:  # "check here" never points at glass
                    maps["uncertainty"] = uncertainty_map(maps) * on_tissue
                if not experts:
                    for k in expert_maps & set(maps):
                        del maps[k]
                results.append(((ys, xs, hs, ws), maps, wp))
            return {"scale": s, "results": results, "family": family, "routing": routing.result()}

        worker = work()
        self.worker = worker
        job.start()
        self._set_predict_ui(False)

        def finished() -> None:
            if not qt_alive(self.cancel_btn):  # the dock closed while it predicted
                return
            job.finish()
            self._set_predict_ui(True)

        worker.returned.connect(self._show_prediction)
        worker.errored.connect(lambda e: _notify(self.session.report("prediction", e), "error"))
        worker.finished.connect(finished)
        worker.start()

    def _set_predict_ui(self, enabled: bool) -> None:
        for b in (self.pred_view_btn, self.pred_tiles_btn, self.pred_all_btn, self.accept_btn):
            b.setEnabled(enabled)

    def cancel_prediction(self) -> None:
        if self._pred_job is not None:
            self._pred_job.cancel()

    def _show_prediction(self, out: dict | None) -> None:
        """Main thread: build or update the output layers (never pile up new ones)."""
        if not qt_alive(self.cancel_btn):  # the dock closed while it predicted
            return
        if out is None:
            self.session.say("prediction cancelled")
            return
        s, family = out["scale"], out["family"]
        names = family.layer_names() | {"uncertainty": UNCERTAINTY_LAYER}
        fills = family.fills()
        self._name_experts(family)
        base = self.layers.base_scale()
        H, W = self.layers.slide_shape()
        hs, ws = round(H / s), round(W / s)
        # One canvas per output at working scale, so predicting again updates in place.
        # Creating a napari layer blocks the event loop ~0.25 s, so layers are built one
        # per event-loop turn: the UI keeps painting in between.
        ops = []
        keys = (
            "instances",
            *family.label_maps(),
            *family.output_maps(),
            "uncertainty",
            *family.output_maps(True),
        )
        for (ys, xs, _h, _w), maps, _wp in out["results"]:
            for key in (k for k in keys if k in maps):
                at = ((ys, xs), (hs, ws), s, base, fills.get(key, 0.0))
                ops.append(partial(self._paste, names[key], key, maps[key], *at, family))
        if family.gate_shape and np.prod(family.gate_shape) > 0:
            ops.append(partial(show_gate_bars, self.viewer, out, base, names["gates"]))
        ops.append(partial(self.routing_box.show_routing, out, base))
        # napari selects each layer it adds: the annotations go back on top, selected, with
        # the brush at hand (correcting is the next step)
        ops.append(self.layers.select_annotations)
        ops.append(
            partial(self.session.say, f"prediction shown for {len(out['results'])} region(s)")
        )
        self._last_pred = out
        self._pending_ops = ops
        self._drain_ops()

    @property
    def showing_prediction(self) -> bool:
        """True while output layers are still being built or updated."""
        return bool(self._pending_ops)

    def _drain_ops(self) -> None:
        if self._pending_ops:
            self._pending_ops.pop(0)()
            QTimer.singleShot(30, self._drain_ops)  # let paint and input events run between

    def _name_experts(self, family) -> None:
        """The experts box in the model's words (DCA: its decoders and their attention)."""
        self.experts_check.setEnabled(bool(family.output_maps(True)))
        text, tip = experts_words(family)
        self.experts_check.setText(text)
        self.experts_check.setToolTip(tip)

    def _paste(
        self, name: str, key: str, val, origin, shape, s: float, base, fill=0.0, family=None
    ) -> None:
        ys, xs = origin
        h, w = val.shape
        scale = tuple(base * s)
        translate = tuple(base * (s - 1) / 2)
        labels = key == "instances" or key in (family.label_maps() if family else {})
        if (
            name in self.viewer.layers
            and self.viewer.layers[name].data.shape == shape
            and (not labels or self.viewer.layers[name].metadata.get(PRED_SCALE) == s)
        ):
            layer = self.viewer.layers[name]
            if key == "instances":  # fresh ids per region so pasted regions don't collide
                val = np.where(val > 0, val + int(layer.data.max()), 0)
            if labels:
                self._cover(layer, ys, xs, h, w)
            layer.data[ys : ys + h, xs : xs + w] = val[: shape[0] - ys, : shape[1] - xs]
            layer.refresh()
            return
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        dtype = np.int32 if key == "instances" else np.uint8 if labels else np.float32
        canvas = np.full(shape, fill, dtype)
        canvas[ys : ys + h, xs : xs + w] = val[: shape[0] - ys, : shape[1] - xs]
        kw = dict(name=name, scale=scale, translate=translate)
        if labels:
            style = label_style(key) if key == "instances" else {}
            layer = self.viewer.add_labels(canvas, **style, **kw)
            layer.metadata[PRED_SCALE] = s
            layer.metadata[COVERED] = np.zeros(shape, bool)
            if key == "instances":
                outline(layer, key)
            else:  # the class map, in the model's class names and colours
                style_class_map(layer, family.classes)
            self._cover(layer, ys, xs, h, w)
        else:
            layer = self.viewer.add_image(canvas, visible=False, **map_style(key), **kw)
            layer.metadata[LEGEND] = legend_of("map", key)
            layer.colorbar.visible = True  # napari's own bar on the canvas, while shown

    @staticmethod
    def _cover(layer, ys: int, xs: int, h: int, w: int) -> None:
        """Mark a predicted region (working-scale px) in the segmentation layer."""
        cov = layer.metadata.get(COVERED)
        if cov is not None:
            cov[max(0, ys) : ys + h, max(0, xs) : xs + w] = True

    def accept_prediction(self) -> None:
        """Put the predicted glands into the annotations inside the training tiles, and only
        where a prediction exists (a *Predict view* covers part of the tiles: the rest is
        left alone). 'add' (the default) never changes a painted pixel: it adds the predicted
        glands that touch none; 'replace' overwrites the painting where predicted. One undo
        step; the annotations before are kept in the on-disk history."""
        labels = self.layers.labels()
        seg = None  # the objects (or a multi-class project's class map) layer of the model
        table = self.session.classes
        if self._last_pred is not None:
            try:
                seg = self._accept_source(self._last_pred["family"], table)
            except InputError as exc:
                _notify(str(exc), "warning")
                self.session.say(str(exc))
                return
        cov = None if seg is None else seg.metadata.get(COVERED)
        if labels is None or cov is None or self.session.entry is None:
            _notify("predict first, then accept", "warning")
            return
        replace = self.accept_mode.currentIndex() == 1
        parts = tile_parts(self.session.entry, labels.data, seg, add=table is None and not replace)
        if table is not None:
            self._accept_classes(labels, parts, replace)
            return
        ids = np.unique(np.concatenate([p[np.where(w)] for _, _, p, w in parts] or [[]]))
        ids = ids[ids > 0].astype(np.int64)
        first = next_label(labels.data)  # fresh ids: no predicted gland merges with one
        top = min(np.iinfo(labels.data.dtype).max, BACKGROUND_LABEL - 1)  # not the brush's id
        if ids.size and first + ids.size - 1 > top:
            _notify("too many gland ids for the annotations layer's type", "error")
            return
        patches = []
        for sl, painted, pred, where in parts:
            fresh = np.where(pred > 0, first + np.searchsorted(ids, pred), 0)
            new = np.where(where, fresh, painted).astype(labels.data.dtype)
            if not np.array_equal(new, painted):
                patches.append((sl, new))
        covered = len(parts)
        if not self.session.edit_labels(patches, "replace" if replace else "accept"):
            self.session.say(
                "nothing to accept: no prediction in the training tiles yet"
                if not covered
                else "nothing to accept: every predicted gland there is already painted"
            )
            return
        self.session.say(
            f"accepted the prediction in {len(patches)} tile(s)"
            + (" (your painting there replaced)" if replace else " (your painting kept)")
            + "; Undo or correct it with the brush"
        )

    def _accept_source(self, family, table):
        """The layer Accept takes (:func:`..accept.accept_key`), if shown."""
        name = family.layer_names()[accept_key(family, table)]
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _accept_classes(self, labels, parts: list, replace: bool) -> None:
        """A multi-class project's Accept: class ids into the annotations (one undo step)."""
        objects = accept_key(self._last_pred["family"], self.session.classes) == "instances"
        patches = class_patches(parts, labels.data.dtype, replace, objects)
        if not self.session.edit_labels(patches, "replace" if replace else "accept"):
            why = "every predicted region there touches your painting" if parts else ""
            self.session.say(f"nothing to accept: {why or 'no prediction in the tiles yet'}")
            return
        self.session.say(
            f"accepted the class map in {len(patches)} tile(s)"
            + (" (your painting there replaced)" if replace else " (your painting kept)")
            + "; Undo or correct it with the brush"
        )

    def undo_accept(self) -> None:
        """Undo the last accept, restore or 'Label this tile' (all its tiles at once)."""
        if self.session.undo():
            self.session.say("undone")

    def fill_history(self) -> None:
        """List the kept versions of the current image's annotations, newest first."""
        import datetime as dt

        combo = self.history_combo
        keep = combo.currentData()
        combo.clear()
        if self.session.project is None or self.session.entry is None:
            return
        today = dt.date.today()
        for path, t, reason in self.session.project.versions(self.session.entry, wait=False):
            when = dt.datetime.fromtimestamp(t)
            day = "today" if when.date() == today else when.strftime("%Y-%m-%d")
            combo.addItem(f"{day} {when:%H:%M:%S} · {reason}", str(path))
        i = combo.findData(keep)
        combo.setCurrentIndex(max(0, i))

    def restore_version(self) -> None:
        """Put the chosen earlier version of the annotations back (one undo step; the
        annotations replaced are kept in the history first)."""
        labels = self.layers.labels()
        path = self.history_combo.currentData()
        if self.session.project is None or self.session.entry is None or labels is None or not path:
            _notify("no earlier version of this image's annotations yet", "warning")
            return
        try:
            old = self.session.project.load_version(self.session.entry, path)
        except InputError as exc:
            _notify(str(exc), "warning")
            self.session.say(str(exc))
            return
        if old.shape != labels.data.shape:
            msg = f"that version is {old.shape[1]} x {old.shape[0]} px, the annotations are not"
            _notify(msg, "warning")
            self.session.say(msg)
            return
        diff = np.argwhere(old != labels.data)
        if diff.size == 0:
            self.session.say("that version is what the annotations are now")
            return
        (y0, x0), (y1, x1) = diff.min(0), diff.max(0) + 1  # only the changed box is kept
        sl = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        what = self.history_combo.currentText()
        self.session.edit_labels([(sl, old[sl].astype(labels.data.dtype))], "restore")
        self.session.say(f"restored the annotations of {what}; Undo puts back the ones before")
