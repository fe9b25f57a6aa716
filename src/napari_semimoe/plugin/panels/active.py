"""Active labeling and pseudo-label QA pages of the Semi-MoE dock widget.

- *Label next*: rank the image's unlabeled tissue tiles by the model's uncertainty
  (:func:`core.active.suggest_tiles`), list them, centre the view on one, and turn it into a
  training tile that starts from the model's prediction.
- *Pseudo-labels*: show what the model currently teaches itself on the unlabeled pool
  (:func:`core.active.pseudo_label_tiles`) with a confidence per tile; reject a tile (out of
  the pool from the trainer's next iteration) or promote it to a training tile.

Both rebuild ``trainset.npz`` (through the session's cutter; a running training reloads it
between iterations). Heavy work runs in ``thread_worker``s; layers are only touched on the
main thread.

Over 500 lines for a reason: the two pages share one model job at a time (one worker, one
busy state), the candidate lists and their navigation, and *promote*; splitting them would
put that shared half in a third module both import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError
from ...core.sparse import next_label
from ..common import camera, canvas_size
from ..common import notify as _notify
from ..common import rect as _rect
from ..fresh_combo import FreshCombo as _FreshCombo
from ..jobs import ProgressJob

if TYPE_CHECKING:
    from ..cutter import TrainsetCutter
    from ..layers import NapariLayers
    from ..session import Session

SUGGEST_LAYER = "suggested tiles"
PSEUDO_LAYER = "Semi-MoE pseudo-labels"
PSEUDO_SDF_LAYER = "Semi-MoE pseudo SDF"
PSEUDO_TILES_LAYER = "pseudo-label tiles"
LAYERS = (SUGGEST_LAYER, PSEUDO_LAYER, PSEUDO_SDF_LAYER, PSEUDO_TILES_LAYER)
NO_POOL = "no unlabeled tissue: training is supervised only"


@dataclass
class Candidate:
    """A tile shown in one of the lists (level-0 px) with the model's starting annotation."""

    y0: int
    x0: int
    side: int
    score: float
    components: dict[str, float]
    mask: np.ndarray  # working-scale instance labels of the model's prediction
    name: str = ""
    status: str = "open"  # open | promoted | rejected
    classes: bool = False  # ``mask`` holds class ids (a multi-class project's tile)


def suggestion_words(n: int, asked: int, picks) -> str:
    """The status line after suggesting: how many, and why fewer than asked."""
    if not n:
        return (
            "no tile left to suggest: every place on this image that is at least half "
            "tissue overlaps a training tile"
        )
    line = f"{n} tile{'s' if n > 1 else ''} suggested (most uncertain first); click one to go to it"
    if n < asked:
        side = picks[0].side
        line += (
            f". Only {n} of the {asked} asked: that is every place left for a {side}-px tile "
            "that is at least half tissue, overlaps no training tile and keeps a tile's "
            "distance from the other suggestions"
        )
    return line


class ActivePanel:
    """Builds the two toolbox pages and their behaviour over a :class:`Session`."""

    def __init__(self, session: Session, layers: NapariLayers, cutter: TrainsetCutter) -> None:
        self.session, self.layers, self.cutter = session, layers, cutter
        self.suggestions: list[Candidate] = []
        self.pseudo: list[Candidate] = []
        self.worker = None
        self._job: ProgressJob | None = None
        self.suggest_page = self._build_suggest()
        self.qa_page = self._build_qa()
        session.pool_changed.connect(self.pool_changed)
        # suggestions and pseudo-labels belong to the image they were made on
        session.image_changed.connect(lambda _entry: layers.remove(LAYERS))

    # ================================================================== pages

    def _build_suggest(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.suggest_btn = QPushButton("Suggest tiles to label")
        self.suggest_btn.setToolTip(
            "predict the whole image and rank its unlabeled tissue tiles by how unsure the "
            "model is (entropy, expert disagreement, gate entropy), one per kind of tissue"
        )
        self.suggest_btn.clicked.connect(self.suggest)
        self.top_spin = QSpinBox()
        self.top_spin.setRange(1, 50)
        self.top_spin.setValue(8)
        self.top_spin.setPrefix("top ")
        row.addWidget(self.suggest_btn, 1)
        row.addWidget(self.top_spin)
        v.addLayout(row)
        # A multi-class project: where the model is unsure of one class (a rare one).
        self.target_combo = _FreshCombo(self.fill_targets)  # painting changes the shares
        self.target_combo.setToolTip(
            "rank by the uncertainty of every class (any class), or of one class: where the "
            "model is unsure of it (its class probability's entropy); the rarest painted "
            "class is listed first"
        )
        self.target_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.target_combo.setMinimumContentsLength(8)
        v.addWidget(self.target_combo)
        self.session.project_changed.connect(lambda _p: self.fill_targets())
        self.session.classes_changed.connect(lambda _t: self.fill_targets())
        self.session.labels_edited.connect(lambda _why: self.fill_targets())
        self.fill_targets()
        prow = QHBoxLayout()
        self.suggest_progress = QProgressBar()
        self.suggest_cancel = QPushButton("Cancel")
        self.suggest_cancel.setEnabled(False)
        self.suggest_cancel.clicked.connect(self.cancel)
        prow.addWidget(self.suggest_progress)
        prow.addWidget(self.suggest_cancel)
        v.addLayout(prow)
        self.suggest_list = QListWidget()
        self.suggest_list.setToolTip("click a tile to go to it")
        self.suggest_list.currentRowChanged.connect(
            lambda r: self._go_to_row(self.suggestions, self.suggest_list, r)
        )
        v.addWidget(self.suggest_list, 1)
        self.label_btn = QPushButton("Label this tile (start from the prediction)")
        self.label_btn.setToolTip(
            "make it a training tile, paste the model's prediction into 'annotations' "
            "(undo with 'Undo' in 3 · Review), then correct it with the brush"
        )
        self.label_btn.clicked.connect(self.label_suggestion)
        v.addWidget(self.label_btn)
        return page

    def fill_targets(self) -> None:
        """'any class', then the project's classes rarest painted first (hidden: binary)."""
        table, project = self.session.classes, self.session.project
        keep = self.target_combo.currentData()
        self.target_combo.clear()
        self.target_combo.addItem("any class (all uncertainty)", None)
        if table is not None and table.n_foreground > 1:
            counts = project.class_pixel_counts(self.session.live_labels)
            total = max(1, int(counts.sum()))
            for k in sorted(range(1, table.n_foreground + 1), key=lambda k: (counts[k - 1], k)):
                share = 100 * counts[k - 1] / total
                self.target_combo.addItem(
                    f"unsure of {table.names[k]} ({share:.0f} % of painted)", k
                )
        self.target_combo.setCurrentIndex(max(0, self.target_combo.findData(keep)))
        self.target_combo.setVisible(self.target_combo.count() > 1)

    def _build_qa(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        self.qa_btn = QPushButton("Show pseudo-labels of the unlabeled pool")
        self.qa_btn.setToolTip(
            "what the model teaches itself on the unlabeled tiles it trains on: argmax of the "
            "gated segmentation and boundary, tanh of the gated SDF"
        )
        self.qa_btn.clicked.connect(self.show_pseudo_labels)
        v.addWidget(self.qa_btn)
        prow = QHBoxLayout()
        self.qa_progress = QProgressBar()
        self.qa_cancel = QPushButton("Cancel")
        self.qa_cancel.setEnabled(False)
        self.qa_cancel.clicked.connect(self.cancel)
        prow.addWidget(self.qa_progress)
        prow.addWidget(self.qa_cancel)
        v.addLayout(prow)
        hint = QLabel("Least confident first. Reject a tile whose pseudo-label is wrong.")
        hint.setWordWrap(True)
        v.addWidget(hint)
        self.pool_label = QLabel("unlabeled pool: cut at the next Start or pseudo-label view")
        self.pool_label.setWordWrap(True)
        v.addWidget(self.pool_label)
        self.qa_list = QListWidget()
        self.qa_list.currentRowChanged.connect(
            lambda r: self._go_to_row(self.pseudo, self.qa_list, r)
        )
        v.addWidget(self.qa_list, 1)
        row = QHBoxLayout()
        self.reject_btn = QPushButton("Reject tile")
        self.reject_btn.setToolTip("exclude it from the unlabeled pool from the next iteration on")
        self.reject_btn.clicked.connect(self.reject_selected)
        self.promote_btn = QPushButton("Promote to training tile")
        self.promote_btn.clicked.connect(self.promote_selected)
        row.addWidget(self.reject_btn)
        row.addWidget(self.promote_btn)
        v.addLayout(row)
        return page

    # ================================================================== shared

    def _model(self, what: str, target: int | None = None):
        """The active checkpoint; a one-line InputError when there is none, or when its
        model family lacks the maps that uncertainty and pseudo-labels are made of (a
        class ``target`` needs only the class probabilities: checked when it is loaded)."""
        from ...core.uncertainty import SIGNAL_MAPS, supports

        ckpt = self.session.require_model()
        family = self.session.family
        if family is not None and target is None and not supports(family.output_maps()):
            raise InputError(
                f"{what} need a model with {', '.join(SIGNAL_MAPS)} maps; this model "
                f"({family.label or family.name}) has {', '.join(family.output_maps())}"
            )
        return ckpt

    def _run(self, fn, on_done, bar: QProgressBar, cancel_btn: QPushButton, what: str) -> None:
        from napari.qt.threading import thread_worker

        from ...core.device import releasing_memory

        job = self._job = ProgressJob(bar, cancel_btn, self.suggest_page)
        worker = self.worker = thread_worker(releasing_memory(fn), ignore_errors=True)(job)
        job.start()
        for b in (self.suggest_btn, self.qa_btn):
            b.setEnabled(False)

        def finished() -> None:
            job.finish()
            for b in (self.suggest_btn, self.qa_btn):
                b.setEnabled(True)

        worker.returned.connect(on_done)
        worker.errored.connect(lambda e: _notify(self.session.report(what, e), "error"))
        worker.finished.connect(finished)
        worker.start()

    @property
    def busy(self) -> bool:
        return self._job is not None and self._job.cancel_btn.isEnabled()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancelled = True

    def _go_to_row(self, items: list[Candidate], lst: QListWidget, row: int) -> None:
        if 0 <= row < lst.count():
            idx = lst.item(row).data(Qt.UserRole)
            c = items[idx]
            self.go_to(c.y0, c.x0, c.side)

    def go_to(self, y0: float, x0: float, side: float) -> None:
        """Centre the view on a tile (level-0 px) and zoom so it fills about half the view."""
        base = self.layers.base_scale()
        cam = camera(self.layers.viewer)
        cam.center = ((y0 + side / 2) * base[0], (x0 + side / 2) * base[1])
        size = canvas_size(self.layers.viewer)
        view = 600.0 if size is None else float(min(size))
        cam.zoom = 0.5 * view / (side * float(base[0]))

    def _selected(self, items: list[Candidate], lst: QListWidget) -> Candidate | None:
        it = lst.currentItem()
        if it is None:
            _notify("select a tile in the list first", "warning")
            return None
        return items[it.data(Qt.UserRole)]

    def promote(self, c: Candidate, then=None) -> None:
        """Make ``c`` a training tile whose annotation starts from the model's prediction;
        the training data is re-cut in the background, then ``then(pool_size)`` runs."""
        from ...core.inference import resample

        labels = self.layers.labels(create=True)
        ls = self.session.entry.labels_scale
        H, W = labels.data.shape
        y0, x0 = round(c.y0 / ls), round(c.x0 / ls)
        y1, x1 = min(H, round((c.y0 + c.side) / ls)), min(W, round((c.x0 + c.side) / ls))
        if y1 > y0 and x1 > x0:
            full = resample(c.mask, (round(c.side / ls), round(c.side / ls)), nearest=True)
            new = full[: y1 - y0, : x1 - x0].astype(labels.data.dtype)
            sl = (slice(y0, y1), slice(x0, x1))
            old = labels.data[sl]
            # class ids as they are; gland ids after the painted ones (the brush's not counted)
            offset = 0 if c.classes else next_label(labels.data) - 1
            # what the user already painted there wins over the prediction
            pasted = np.where(new > 0, new + offset, 0)
            merged = np.where(old > 0, old, pasted).astype(labels.data.dtype)
            self.session.edit_labels([(sl, merged)], "label-tile")  # one undo step, history kept
        self.layers.add_tile(_rect(c.y0, c.x0, c.side, c.side))
        self.session.sync_tiles()
        c.status = "promoted"
        self.layers.viewer.layers.selection.active = labels
        self.go_to(c.y0, c.x0, c.side)
        self.cutter.rebuild(then=then)

    # ================================================================== suggestions

    def suggest(self) -> None:
        from ...core.active import suggest_tiles
        from ...core.inference import PredictOptions, Predictor, load_model
        from ...core.instances import label_instances

        target = self.target_combo.currentData()
        try:
            ckpt = self._model("suggestions", target)
            slide = self.layers.slide()
        except InputError as exc:
            _notify(str(exc), "warning")
            self.session.say(str(exc))
            return
        self.session.sync_tiles()
        exclude = [(t.y, t.x, t.h, t.w) for t in self.session.entry.train_tiles()]
        # The side comes from the model's own geometry (its checkpoint), never from the form's
        # tile box, which is what the NEXT training will use.
        top = self.top_spin.value()
        scratch = self.session.project.root / "cache"
        classes = self.session.classes is not None

        def work(job: ProgressJob):
            pred = Predictor(load_model(ckpt, "auto"), PredictOptions(experts=True))
            scratch.mkdir(exist_ok=True)
            picks, maps = suggest_tiles(
                pred,
                slide,
                top=top,
                exclude=exclude,
                scratch=scratch,
                progress=job.progress,
                cancel=lambda: job.cancelled,
                return_maps=True,
                target_class=target,
            )
            if maps is None:
                return None
            out = []
            derive = pred.family.derived_maps  # a multi-class model's class map
            for p in picks:
                sl = (slice(p.y, p.y + p.size), slice(p.x, p.x + p.size))
                m = {k: np.asarray(maps[k][sl]) for k in maps if k in pred.family.output_maps()}
                fg = m["prob"] >= 0.5
                if "sdf" in m and "boundary" in m:
                    inst = label_instances(fg, m["sdf"], m["boundary"])
                else:  # a family without them (DCA): the mask's components
                    inst = label_instances(fg)
                if classes:  # the project paints class ids: start from the class map
                    cm = derive(m).get("classes")
                    inst = (inst > 0).astype(np.uint8) if cm is None else cm * (inst > 0)
                c = Candidate(p.y0, p.x0, p.size0, p.score, p.components, inst, classes=classes)
                out.append(c)
            return out

        self._run(
            work, self._show_suggestions, self.suggest_progress, self.suggest_cancel, "suggestions"
        )

    def _show_suggestions(self, picks: list[Candidate] | None) -> None:
        if picks is None:
            self.session.say("suggestion cancelled")
            return
        self.suggestions = picks
        self._fill_list(self.suggest_list, picks, "score")
        self._draw_suggestions()
        self.session.say(suggestion_words(len(picks), self.top_spin.value(), picks))

    def _fill_list(self, lst: QListWidget, items: list[Candidate], what: str) -> None:
        lst.blockSignals(True)
        lst.clear()
        rank = 0
        for i, c in enumerate(items):
            if c.status != "open":
                continue
            rank += 1
            it = QListWidgetItem(
                f"{rank:2d}.  {what} {c.score:.3f}   at y {c.y0}, x {c.x0} ({c.side} px)"
            )
            it.setData(Qt.UserRole, i)
            it.setToolTip("\n".join(f"{k}: {v:.3f}" for k, v in c.components.items()))
            lst.addItem(it)
        lst.blockSignals(False)

    def _draw_suggestions(self) -> None:
        v = self.layers.viewer
        open_ = [c for c in self.suggestions if c.status == "open"]
        rects = [_rect(c.y0, c.x0, c.side, c.side) for c in open_]
        labels = [f"#{i + 1}  {c.score:.2f}" for i, c in enumerate(open_)]
        if SUGGEST_LAYER in v.layers:
            v.layers.remove(SUGGEST_LAYER)
        if not rects:
            return
        self._show_boxes(SUGGEST_LAYER, rects, labels, "cyan", 5, 11, "cyan")

    def _show_boxes(self, name, rects, labels, edge_color, edge_width, size, text_color) -> None:
        """A Shapes layer of labelled tile outlines (level-0 px); painting stays selected."""
        v = self.layers.viewer
        v.add_shapes(
            rects,
            shape_type="rectangle",
            name=name,
            edge_color=edge_color,
            face_color="transparent",
            edge_width=edge_width,
            scale=tuple(self.layers.base_scale()),
            features={"label": labels},
            text={"string": "{label}", "size": size, "color": text_color, "anchor": "upper_left"},
        )
        v.layers.selection.active = self.layers.labels() or v.layers[name]

    def label_suggestion(self) -> None:
        c = self._selected(self.suggestions, self.suggest_list)
        if c is None:
            return
        self.promote(c)
        self._fill_list(self.suggest_list, self.suggestions, "score")
        self._draw_suggestions()
        self.session.say("new training tile from the suggestion: correct the glands with the brush")

    # ================================================================== pseudo-label QA

    def show_pseudo_labels(self) -> None:
        from ...core.active import pseudo_label_tiles
        from ...core.inference import Predictor, load_model
        from ...core.trainset import (
            TRAINSET_FILE,
            is_pool_tile_of,
            load_pool,
            parse_pool_name,
            trainset_names,
        )

        try:
            ckpt = self._model("pseudo-labels")
        except InputError as exc:
            _notify(str(exc), "warning")
            self.session.say(str(exc))
            return
        path = self.session.project.root / TRAINSET_FILE
        if not path.exists() or self.cutter.busy:  # cut the pool first, then come back
            self.cutter.rebuild(then=lambda _n: self.show_pseudo_labels())
            return
        name, s = self.session.entry.name, self.session.project.state.scale
        if not any(is_pool_tile_of(n, name) for n in trainset_names(path)[1]):
            self._show_pseudo([], s)  # nothing to predict: no job, no busy bar
            return

        def work(job: ProgressJob):
            pool = load_pool(path, lambda n: is_pool_tile_of(n, name))
            pred = Predictor(load_model(ckpt, "auto", weights="labeller"))
            pls = pseudo_label_tiles(
                pred,
                [img for _, img in pool],
                [n for n, _ in pool],
                progress=job.progress,
                cancel=lambda: job.cancelled,
            )
            if pls is None:
                return None
            return [(*parse_pool_name(n)[1:], pl) for (n, _), pl in zip(pool, pls)]

        def done(res) -> None:
            self._show_pseudo(res, s)

        self._run(work, done, self.qa_progress, self.qa_cancel, "pseudo-label view")

    def _show_pseudo(self, res: list[tuple[int, int, Any]] | None, s: float) -> None:
        from ...core.instances import label_instances

        if res is None:
            self.session.say("pseudo-label view cancelled")
            return
        v = self.layers.viewer
        H, W = self.layers.slide_shape()
        hs, ws = round(H / s), round(W / s)
        seg = np.zeros((hs, ws), np.uint8)
        sdf = np.full((hs, ws), -1.0, np.float32)
        items = []
        masked = False
        for y, x, pl in res:
            h, ww = pl.seg.shape
            h, ww = min(h, hs - y), min(ww, ws - x)
            view = seg[y : y + h, x : x + ww]
            # 1 = gland, 2 = boundary (the boundary head's pseudo-label drawn over it),
            # 3 = left out of the losses (the run's confidence masking), over both
            tile = np.where(pl.boundary[:h, :ww] > 0, 2, pl.seg[:h, :ww])
            if pl.unsure is not None:
                tile = np.where(pl.unsure[:h, :ww] > 0, 3, tile)
                masked = True
            view[:] = np.maximum(view, tile)
            sdf[y : y + h, x : x + ww] = pl.sdf[:h, :ww]
            inst = label_instances(pl.seg.astype(bool), pl.sdf, pl.boundary.astype(np.float32))
            items.append(
                Candidate(
                    round(y * s),
                    round(x * s),
                    round(pl.seg.shape[0] * s),
                    pl.confidence,
                    pl.components,
                    inst,
                    pl.name,
                )
            )
        items.sort(key=lambda c: c.score)  # least confident first
        self.pseudo = items
        base = self.layers.base_scale()
        kw = dict(scale=tuple(base * s), translate=tuple(base * (s - 1) / 2))
        for layer in (PSEUDO_LAYER, PSEUDO_SDF_LAYER):
            if layer in v.layers:
                v.layers.remove(layer)
        from ..layer_styles import sdf_colormap

        v.add_image(
            sdf,
            name=PSEUDO_SDF_LAYER,
            colormap=sdf_colormap(),
            contrast_limits=(-1, 1),
            opacity=0.6,
            visible=False,
            **kw,
        )
        lab = v.add_labels(seg, name=PSEUDO_LAYER, opacity=0.55, **kw)
        try:  # gland = green, boundary = magenta: unlike the annotation colours
            from napari.utils.colormaps import DirectLabelColormap

            lab.colormap = DirectLabelColormap(
                color_dict={
                    None: "transparent",
                    0: "transparent",
                    1: "lime",
                    2: "magenta",
                    3: "#9e9e9e",
                }  # fmt: skip
            )
        except (ImportError, TypeError, ValueError):
            pass
        self._fill_list(self.qa_list, self.pseudo, "confidence")
        self._draw_pseudo_tiles()
        grey = "; grey: left out, the model is unsure there" if masked else ""
        self.session.say(
            f"pseudo-labels of {len(items)} unlabeled tiles (green gland, magenta boundary"
            f"{grey}); least confident first"
            if items
            else self._pool_text()
        )

    def _draw_pseudo_tiles(self) -> None:
        v = self.layers.viewer
        rects, colors, text = [], [], []
        for c in self.pseudo:
            if c.status in ("promoted", "out"):
                continue
            rects.append(_rect(c.y0, c.x0, c.side, c.side))
            if c.status == "rejected":
                colors.append([0.6, 0.6, 0.6, 1.0])
                text.append("rejected")
            else:  # red (unsure) .. green (confident)
                t = float(np.clip((c.score - 0.5) / 0.5, 0, 1))
                colors.append([1.0 - t, 0.25 + 0.75 * t, 0.2, 1.0])
                text.append(f"{c.score:.2f}")
        if PSEUDO_TILES_LAYER in v.layers:
            v.layers.remove(PSEUDO_TILES_LAYER)
        if not rects:
            return
        self._show_boxes(PSEUDO_TILES_LAYER, rects, text, np.asarray(colors), 4, 10, "white")

    def _pool_text(self) -> str:
        """What the pool means for training, from the saved training set."""
        from ...core.trainset import TRAINSET_FILE, is_pool_tile_of, trainset_names

        path = self.session.project.root / TRAINSET_FILE
        if not path.exists():
            return "unlabeled pool: cut at the next Start or pseudo-label view"
        pool = trainset_names(path)[1]
        if not pool:
            return NO_POOL
        entry = self.session.entry
        mine = sum(is_pool_tile_of(n, entry.name) for n in pool) if entry else 0
        return f"unlabeled pool: {len(pool)} tissue tiles ({mine} on this image)"

    def pool_changed(self, n: int) -> None:
        """The training set was cut again (tiles added, deleted, rejected, promoted): show
        the pool as the trainer will see it and drop listed tiles that left it."""
        text = self._pool_text()
        self.pool_label.setText(text)
        self.pool_label.setStyleSheet("color: #ffb347" if n == 0 else "")
        if n == 0:
            self.session.say(NO_POOL)
        if self.pseudo:
            added = self._sync_with_pool()
            self._fill_list(self.qa_list, self.pseudo, "confidence")
            self._draw_pseudo_tiles()
            if added:
                self.pool_label.setText(
                    f"{text}; {added} not shown: press 'Show pseudo-labels' to see them"
                )

    def reject_selected(self) -> None:
        c = self._selected(self.pseudo, self.qa_list)
        if c is None:
            return
        self.session.project.add_tile(self.session.entry, c.y0, c.x0, c.side, "rejected")
        c.status = "rejected"
        self._fill_list(self.qa_list, self.pseudo, "confidence")
        self._draw_pseudo_tiles()

        def done(n: int) -> None:
            added = self._sync_with_pool()
            self._fill_list(self.qa_list, self.pseudo, "confidence")
            self._draw_pseudo_tiles()
            self.session.say(
                f"tile at y {c.y0}, x {c.x0} rejected: out of the unlabeled pool"
                + (" from the trainer's next iteration" if self.session.training else "")
                + f"; the pool has {n} tiles"
                + (f" ({added} new: press 'Show pseudo-labels' to see them)" if added else "")
            )

        self.cutter.rebuild(then=done)

    def _sync_with_pool(self) -> int:
        """Drop listed tiles that left the pool; return how many pool tiles are not shown."""
        from ...core.trainset import TRAINSET_FILE, is_pool_tile_of, trainset_names

        path = self.session.project.root / TRAINSET_FILE
        if not path.exists():
            return 0
        image = self.session.entry.name
        pool = {n for n in trainset_names(path)[1] if is_pool_tile_of(n, image)}
        for c in self.pseudo:
            if c.status == "open" and c.name not in pool:
                c.status = "out"
        return len(pool - {c.name for c in self.pseudo})

    def promote_selected(self) -> None:
        c = self._selected(self.pseudo, self.qa_list)
        if c is None:
            return

        def done(_n: int) -> None:
            self._sync_with_pool()
            self._fill_list(self.qa_list, self.pseudo, "confidence")
            self._draw_pseudo_tiles()

        self.promote(c, then=done)
        self._fill_list(self.qa_list, self.pseudo, "confidence")  # c is no longer open
        self._draw_pseudo_tiles()
        self.session.say("promoted to a training tile: correct its pseudo-label with the brush")
