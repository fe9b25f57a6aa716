"""The Semi-MoE dock widget: project, training tiles, background training, review.

Threading model: training runs in a child process (:class:`TrainingJob`), polled by a
QTimer on the main thread; prediction runs in a napari ``thread_worker`` and hands its
arrays back to the main thread, which alone touches layers.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError
from ..core.slide import Slide
from .chart import LossChart
from .jobs import ProgressJob, fmt_time
from .layer_styles import LABEL_OPACITY, map_style
from .project import TRAINSET_FILE, ImageEntry, Project, Tile
from .training_process import TrainingJob

if TYPE_CHECKING:
    import napari

TILES_LAYER = "training tiles"
LABELS_LAYER = "annotations"
#: How training tiles are drawn, wherever they come from (added, restored, the sample's).
TILE_STYLE = {"edge_color": "yellow", "face_color": "transparent", "edge_width": 6}
#: Metadata of the segmentation layer: where a prediction exists (working-scale bool
#: canvas) and its scale; Accept never touches pixels outside it.
COVERED = "semimoe_covered"
PRED_SCALE = "semimoe_pred_scale"
UNDO_STEPS = 20
#: Re-cut trainset.npz this long after the last tile edit / stroke during training (ms).
TILES_RECUT_MS, PAINT_RECUT_MS = 1000, 5000
ACCEPT_MODES = ("add: my painting wins", "replace my painting")
NO_PROJECT = (
    "Choose a project folder first (type a path and press Enter, or Open…): painting and "
    "tiles stay locked until then, so nothing is left unsaved."
)
OUT = {
    "seg": "Semi-MoE segmentation",
    "prob": "Semi-MoE gland probability",
    "sdf": "Semi-MoE SDF",
    "boundary": "Semi-MoE boundary",
    "uncertainty": "Semi-MoE uncertainty",
    "gates": "Semi-MoE gates",
    "expert_prob": "Expert: segmentation",
    "expert_sdf": "Expert: SDF",
    "expert_boundary": "Expert: boundary",
}


def _notify(msg: str, level: str = "info") -> None:
    from napari.utils import notifications

    getattr(notifications, f"show_{level}")(msg)


class _Messages(QObject):
    """Carries messages from worker threads to the main thread (queued signal)."""

    error = Signal(str)


class _CloseWatcher(QObject):
    """Calls ``on_close`` when napari's main window closes: napari does not send
    closeEvent to docked widgets (napari#8071), so the widget would never hear of it."""

    def __init__(self, on_close, parent: QObject) -> None:
        super().__init__(parent)
        self.on_close = on_close

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            self.on_close()
        return False


class _FreshCombo(QComboBox):
    """A combo box that refills itself (``refill()``) each time its list opens."""

    def __init__(self, refill) -> None:
        super().__init__()
        self.refill = refill

    def showPopup(self) -> None:  # noqa: N802 (Qt API)
        self.refill()
        super().showPopup()


class SemiMoEWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer, project_dir: str | Path | None = None):
        super().__init__()
        self.viewer = viewer
        self.project: Project | None = None
        self.entry: ImageEntry | None = None
        self.job: TrainingJob | None = None
        self.worker = None
        #: undo steps: each one edit (an accept, a restore) as (region, pixels before) patches
        self._undo: list[list[tuple[tuple[slice, slice], np.ndarray]]] = []
        self._warned_unsaved = False
        self._last_pred: dict[str, Any] | None = None
        self._pending_ops: list = []
        self._cutter = None  # the worker cutting trainset.npz, if any
        self._pred_job: ProgressJob | None = None
        self._pending_its: list[dict] = []  # iteration events not drawn yet
        self._last_draw = 0.0
        self._recut: list = []
        self._t_start = 0.0
        self._supervised = False  # the running training has no unlabeled pool (no λ)
        self._supervised_cfg = False
        self._messages = _Messages(self)
        self._messages.error.connect(self._save_failed)

        lay = QVBoxLayout(self)
        box = self.toolbox = QToolBox()
        lay.addWidget(box, 1)
        box.addItem(self._build_project(), "1 · Project and tiles")
        box.addItem(self._build_train(), "2 · Train")
        box.addItem(self._build_review(), "3 · Review and correct")
        from .active_panel import ActivePanel

        self.active = ActivePanel(self)
        box.addItem(self.active.suggest_page, "4 · Label next (suggestions)")
        box.addItem(self.active.qa_page, "5 · Pseudo-labels (QA)")
        box.setCurrentIndex(1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # A fixed height: a new message must not re-layout the dock (and the canvas with it).
        self.status.setFixedHeight(3 * self.status.fontMetrics().lineSpacing() + 4)
        lay.addWidget(self.status)

        self._autosave = QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.setInterval(800)
        self._autosave.timeout.connect(self.save_annotations)
        # Tile changes update the unlabeled pool (trainset.npz) a moment after the last one;
        # while training runs, so does painting (a new tile is not trained on as blank).
        self._pool_timer = QTimer(self)
        self._pool_timer.setSingleShot(True)
        self._pool_timer.timeout.connect(self._refresh_pool)
        self._tile_key: list | None = None
        self._drawing_tiles = False
        self._poll = QTimer(self)
        self._poll.setInterval(100)
        # napari never sends closeEvent to dock widgets (napari#8071): save the last strokes
        # when the window closes or the annotations layer goes (viewer.close() removes the
        # layers first), and stop training gracefully when the application quits.
        qt_window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        if qt_window is not None:
            self._close_watcher = _CloseWatcher(self._save_now, self)
            qt_window.installEventFilter(self._close_watcher)
        viewer.layers.events.removing.connect(self._on_removing)
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._poll.timeout.connect(self._poll_training)

        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        box.currentChanged.connect(lambda i: i == 2 and self._fill_history())
        self._refresh_layers()
        if project_dir is not None:
            self.set_project(project_dir)
        else:
            self._say(NO_PROJECT)

    # ================================================================== building

    def _build_project(self) -> QWidget:
        w = QWidget()
        f = QFormLayout(w)
        row = QHBoxLayout()
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("type a folder + Enter: annotations, tiles, runs")
        self.project_edit.setToolTip(
            "the project folder (created if new): type its path and press Enter, or Open…"
        )
        self.project_edit.returnPressed.connect(self._project_typed)
        self.project_edit.editingFinished.connect(self._project_left)
        browse = QPushButton("Open…")
        browse.clicked.connect(self._browse_project)
        row.addWidget(self.project_edit)
        row.addWidget(browse)
        f.addRow("Project", row)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._switch_image)
        f.addRow("Slide", self.image_combo)
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(1.0, 64.0)
        self.scale_spin.setSingleStep(0.5)
        self.scale_spin.setValue(2.0)
        self.scale_spin.setToolTip("working scale: the model sees the slide downsampled by this")
        f.addRow("Working scale", self.scale_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(64, 1024)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setValue(256)
        f.addRow("Tile (model px)", self.tile_spin)
        add = QPushButton("Add training tile at view centre")
        add.clicked.connect(self.add_tile_at_center)
        f.addRow(add)
        hint = QLabel(
            "Paint glands in 'annotations' inside the yellow tiles; unpainted tile pixels are "
            "background. Tiles and painting are saved in the project folder as you work "
            "(within a second); earlier versions of each image's annotations are kept and "
            "can be restored in 3 · Review. Without a project, painting is locked."
        )
        hint.setWordWrap(True)
        f.addRow(hint)
        return w

    def _build_train(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        f = QFormLayout()
        self.width_spin = QSpinBox()
        self.width_spin.setRange(4, 64)
        self.width_spin.setSingleStep(4)
        self.width_spin.setValue(16)
        f.addRow("Model width b", self.width_spin)
        self.iter_spin = QSpinBox()
        self.iter_spin.setRange(1, 1_000_000)
        self.iter_spin.setValue(500)
        f.addRow("Iterations", self.iter_spin)
        self.lr_spin = _dspin(0.001, 5.0, 0.5, 3)
        f.addRow("Learning rate", self.lr_spin)
        self.gamma_spin = _dspin(0.0, 5.0, 0.4, 2)
        f.addRow("γ (task weights)", self.gamma_spin)
        self.lambda_spin = _dspin(0.0, 10.0, 0.5, 2)
        f.addRow("λ max (unlabeled)", self.lambda_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        f.addRow("Device", self.device_combo)
        v.addLayout(f)
        adv = QGroupBox("Advanced")
        adv.setCheckable(True)
        adv.setChecked(False)
        af = QFormLayout(adv)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("all")
        af.addRow("CPU threads", self.threads_spin)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "bf16", "fp32"])
        af.addRow("Precision", self.precision_combo)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        af.addRow("Seed", self.seed_spin)
        self.semi_check = QCheckBox("use unlabeled tissue (semi-supervised)")
        self.semi_check.setChecked(True)
        af.addRow(self.semi_check)
        adv.toggled.connect(lambda on: [c.setVisible(on) for c in adv.findChildren(QWidget)])
        for c in adv.findChildren(QWidget):
            c.setVisible(False)
        v.addWidget(adv)
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.clicked.connect(lambda: self.start_training(continue_from=False))
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.clicked.connect(self.stop_training)
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setToolTip(
            "fine-tune from the last checkpoint with the current tiles (after a first Start)"
        )
        self.continue_btn.clicked.connect(lambda: self.start_training(continue_from=True))
        for b in (self.start_btn, self.pause_btn, self.stop_btn, self.continue_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        v.addWidget(self.progress)
        self.eta_label = QLabel("idle")
        # its text changes every poll: keep it from resizing (re-laying out) the dock
        self.eta_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        v.addWidget(self.eta_label)
        self.chart = LossChart()
        v.addWidget(self.chart, 1)
        self._set_training_ui(False)
        return w

    def _build_review(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
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
        self.history_combo = _FreshCombo(self._fill_history)
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
        v.addStretch(1)
        return w

    # ================================================================== project

    def _browse_project(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Project folder")
        if d:
            self.set_project(d)

    def _project_typed(self) -> None:
        """Enter in the Project field opens (or creates) the typed folder."""
        text = self.project_edit.text().strip()
        if not text:
            return
        path = Path(text).expanduser()
        if self.project is not None and path.resolve() == self.project.root.resolve():
            return
        self.set_project(path)

    def _project_left(self) -> None:
        """Leaving the field (no Enter) opens nothing: a half-typed path must not become a
        folder. Say how to use it."""
        text = self.project_edit.text().strip()
        current = "" if self.project is None else str(self.project.root)
        if text and text != current:
            self._say(f"press Enter to open or create the project {text}")

    def set_project(self, path: str | Path) -> None:
        """Open (or create) a project folder and restore its annotations and tiles."""
        path = Path(path).expanduser()
        try:
            project = Project(path)
        except InputError as exc:
            self._project_failed(str(exc))
            return
        except OSError as exc:
            self._project_failed(f"{path}: cannot use as a project folder ({exc.strerror or exc})")
            return
        if self.project is not None:  # the last strokes belong to the project being left
            self._save_now()
        self.project = project
        self.project.writer.on_error = self._messages.error.emit
        self.project_edit.setText(str(path))
        st = self.project.state
        img = self.image_layer()
        if img is not None and not st.images:
            st.scale = float(img.metadata.get("semimoe_scale", self.scale_spin.value()))
        self.scale_spin.setValue(st.scale)
        self.tile_spin.setValue(st.tile)
        for key, widget in (("width", self.width_spin), ("iterations", self.iter_spin)):
            if key in st.settings:
                widget.setValue(int(st.settings[key]))
        self.entry = None
        self._switch_image()
        self._lock_without_project()
        self._set_training_ui(self.training)
        self._say("; ".join([f"project: {path}", *self.project.warnings]))
        for w in self.project.warnings:
            _notify(w, "warning")

    def _project_failed(self, msg: str) -> None:
        _notify(msg, "warning")
        self._say(msg)
        self.project_edit.setText("" if self.project is None else str(self.project.root))

    def _lock_without_project(self) -> None:
        """Without a project nothing painted could be saved: lock the annotations and the
        tiles (napari's own edit lock) until a folder is chosen."""
        for name in (LABELS_LAYER, TILES_LAYER):
            if name in self.viewer.layers:
                ly = self.viewer.layers[name]
                want = self.project is not None and not getattr(ly, "multiscale", False)
                if ly.editable != want:
                    ly.editable = want

    def _switch_image(self, *_: Any) -> None:
        """Show the selected image's annotations and tiles (saving the previous image's)."""
        if self.project is None:
            return
        img = self.image_layer()
        if self.entry is not None:
            self.save_annotations()
            self._sync_tiles()
        from .active_panel import LAYERS

        # Predictions, suggestions and pseudo-labels belong to the previous image.
        for name in (*OUT.values(), *LAYERS):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._undo.clear()  # undo steps are regions of the previous image's annotations
        self.undo_btn.setEnabled(False)
        if img is None:
            self.entry = None
            return
        fresh = all(e.name != img.name for e in self.project.state.images)
        self.entry = self.project.entry(img.name, img.metadata.get("semimoe_path"))
        # The first image of a new project adopts layers it came with (the sample's tiles
        # and annotations); any other image starts from its own saved (or empty) work.
        adopt = fresh and len(self.project.state.images) == 1
        if fresh:  # big slides are annotated at the working scale, so painting stays fast
            H, W = self._slide_shape()
            self.entry.labels_scale = 1.0 if H * W <= 64e6 else self.scale_spin.value()
            self.project.save()
        labels = self.labels_layer(create=True)
        saved = self.project.load_annotations(self.entry)
        if saved is not None:
            self._replace_labels(saved)
        elif not adopt or labels.data.shape != self._labels_shape():
            self._replace_labels(np.zeros(self._labels_shape(), np.uint16))
        self.tiles_layer(create=True)
        if adopt and not self.entry.tiles:
            self._sync_tiles()
        self._show_tiles([_rect(t.y, t.x, t.h, t.w) for t in self.entry.train_tiles()])
        self._tile_key = self._tiles_now()
        self.save_annotations()
        self._fill_history()

    def _show_tiles(self, rects: list[np.ndarray]) -> None:
        """Draw the training tiles in one style (restored ones were drawn 1 px wide: napari
        gives shapes set through ``data`` its default edge width)."""
        layer = self.tiles_layer(create=True)
        self._drawing_tiles = True  # not an edit of the user's: nothing to sync back
        try:
            layer.selected_data = set()
            layer.data = []
            if rects:
                layer.add_rectangles(rects, **TILE_STYLE)
        finally:
            self._drawing_tiles = False
        layer.current_edge_color = TILE_STYLE["edge_color"]
        layer.current_face_color = TILE_STYLE["face_color"]
        layer.current_edge_width = TILE_STYLE["edge_width"]
        layer.refresh()

    def _labels_shape(self) -> tuple[int, int]:
        H, W = self._slide_shape()
        ls = self.entry.labels_scale if self.entry is not None else 1.0
        return round(H / ls), round(W / ls)

    def _replace_labels(self, data: np.ndarray) -> None:
        layer = self.labels_layer()
        ls = self.entry.labels_scale if self.entry is not None else 1.0
        layer.data = data
        layer.scale = tuple(self._base_scale() * ls)

    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [
            ly.name
            for ly in self.viewer.layers
            if isinstance(ly, Image) and not ly.name.startswith(("Semi-MoE", "Expert"))
        ]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._switch_image()
        self._lock_without_project()
        for ly in self.viewer.layers:
            if ly.name == LABELS_LAYER and not getattr(ly, "_semimoe_hooked", False):
                ly.events.data.connect(self._schedule_save)
                if hasattr(ly.events, "paint"):
                    ly.events.paint.connect(self._schedule_save)
                ly._semimoe_hooked = True
            if ly.name == TILES_LAYER and not getattr(ly, "_semimoe_hooked", False):
                ly.events.data.connect(self._sync_tiles)
                ly._semimoe_hooked = True

    def _base_scale(self) -> np.ndarray:
        img = self.image_layer()
        return np.asarray(img.scale[-2:] if img is not None else (1.0, 1.0), float)

    def labels_layer(self, create: bool = False):
        if LABELS_LAYER in self.viewer.layers:
            return self.viewer.layers[LABELS_LAYER]
        img = self.image_layer()
        if not create or img is None:
            return None
        ls = self.entry.labels_scale if self.entry is not None else 1.0
        data = np.zeros(self._labels_shape(), np.uint16)
        return self.viewer.add_labels(
            data, name=LABELS_LAYER, opacity=0.5, scale=tuple(self._base_scale() * ls)
        )

    def tiles_layer(self, create: bool = False):
        if TILES_LAYER in self.viewer.layers:
            return self.viewer.layers[TILES_LAYER]
        if not create:
            return None
        return self.viewer.add_shapes(
            name=TILES_LAYER,
            shape_type="rectangle",
            scale=tuple(self._base_scale()),
            **TILE_STYLE,
        )

    def _slide_of(self, entry: ImageEntry) -> Slide | None:
        """An image of the project: its layer if open, else its file, else None."""
        if entry.name in self.viewer.layers:
            return self._slide(self.viewer.layers[entry.name])
        if entry.path and Path(entry.path).exists():
            from ..core.slide import open_slide

            return open_slide(entry.path)
        self._say(f"{entry.name}: not open and no file; its tiles are skipped")
        return None

    def _slide(self, img=None) -> Slide:
        """An image layer as a lazily read slide (pyramid levels or in-memory array)."""
        img = img if img is not None else self.image_layer()
        if img is None:
            raise InputError("no image layer: open a slide (File > Open) first")
        if img.multiscale:
            levels = list(img.data)
            h0 = levels[0].shape[0]
            downs = [h0 / lv.shape[0] for lv in levels]
            return Slide(Path(img.name), levels, downs, None)
        return Slide(Path(img.name), [img.data], [1.0], None)

    def _slide_shape(self) -> tuple[int, int]:
        img = self.image_layer()
        data = img.data[0] if img.multiscale else img.data
        return tuple(int(n) for n in data.shape[:2])

    def _schedule_save(self, *_: Any) -> None:
        """A stroke: save within the autosave interval of the FIRST unsaved change (restarting
        the timer on every stroke never saved a user who kept painting)."""
        if self.project is None:
            if not self._warned_unsaved:
                self._warned_unsaved = True
                msg = "Annotations are NOT saved: choose a project folder (1 · Project)"
                _notify(msg, "warning")
            self._say(NO_PROJECT)
            return
        if not self._autosave.isActive():
            self._autosave.start()
        if self.training and not (
            self._pool_timer.isActive() and self._pool_timer.interval() == TILES_RECUT_MS
        ):
            self._pool_timer.start(PAINT_RECUT_MS)

    def save_annotations(self, wait: bool = False) -> None:
        """Save the annotations. The copy is taken here (a few ms) and written in a thread,
        so painting never waits for the disk; ``wait`` writes before returning."""
        labels = self.labels_layer()
        if self.project is not None and self.entry is not None and labels is not None:
            if wait:
                try:
                    self.project.save_annotations(self.entry, labels.data)
                except OSError as exc:  # e.g. a full disk, while napari closes
                    self._save_failed(f"{self.project.annotations_path(self.entry)}: {exc}")
            else:
                self.project.save_annotations(self.entry, np.array(labels.data), background=True)

    def _save_failed(self, msg: str) -> None:
        _notify(f"Annotations NOT saved: {msg}", "error")
        self._say(f"annotations not saved: {msg}")

    def _sync_tiles(self, *_: Any) -> None:
        """Shapes layer -> project tiles (level-0 px). Rejected tiles are kept."""
        layer = self.tiles_layer()
        if self.project is None or self.entry is None or layer is None or self._drawing_tiles:
            return
        keep = [t for t in self.entry.tiles if t.kind != "train"]
        old = {(t.y, t.x, t.h, t.w): t for t in self.entry.train_tiles()}
        tiles = []
        for rect in layer.data:
            (y0, x0), (y1, x1) = np.floor(rect.min(0)), np.ceil(rect.max(0))
            key = (int(y0), int(x0), int(y1 - y0), int(x1 - x0))
            if key[2] < 1 or key[3] < 1:
                continue  # a degenerate click, not a tile
            tiles.append(old.pop(key, None) or Tile(*key))  # a tile keeps its id
        self.entry.tiles = tiles + keep
        self.project.save()
        now = self._tiles_now()
        if now != self._tile_key:
            self._tile_key = now
            self._pool_timer.start(TILES_RECUT_MS)

    def _tiles_now(self) -> list:
        tiles = [] if self.entry is None else self.entry.train_tiles()
        return [(t.y, t.x, t.h, t.w) for t in tiles]

    def _refresh_pool(self) -> None:
        """The tiles changed: re-cut the unlabeled pool the trainer and the QA page use (once
        there is a training set), without waiting for the next Start."""
        if self.project is None or not (self.project.root / TRAINSET_FILE).exists():
            return
        self.rebuild_trainset(quiet=True)

    def add_tile_at_center(self) -> None:
        """A training tile (one model tile at working scale) centred in the current view."""
        if self.image_layer() is None:
            _notify("open a slide first", "warning")
            return
        if self.project is None:
            _notify(NO_PROJECT, "warning")
            self._say(NO_PROJECT)
            return
        layer = self.tiles_layer(create=True)
        side = self.tile_spin.value() * self.scale_spin.value()
        cy, cx = np.asarray(camera(self.viewer).center[-2:]) / self._base_scale()
        H, W = self._slide_shape()
        y0 = float(np.clip(cy - side / 2, 0, max(0, H - side)))
        x0 = float(np.clip(cx - side / 2, 0, max(0, W - side)))
        layer.add_rectangles([_rect(y0, x0, side, side)], **TILE_STYLE)
        self.labels_layer(create=True)
        self.viewer.layers.selection.active = self.labels_layer()

    # ================================================================== training

    def _config(self) -> dict:
        from dataclasses import asdict

        from ..core.data import Geometry
        from ..core.train import TrainConfig

        cfg = TrainConfig(
            width=self.width_spin.value(),
            iterations=self.iter_spin.value(),
            lr=self.lr_spin.value(),
            gamma=self.gamma_spin.value(),
            lambda_max=self.lambda_spin.value(),
            device=self.device_combo.currentText(),
            threads=self.threads_spin.value() or None,
            precision=self.precision_combo.currentText(),
            seed=self.seed_spin.value(),
            supervised_only=not self.semi_check.isChecked(),
            geometry=Geometry(scale=self.scale_spin.value(), tile=self.tile_spin.value()).to_dict(),
            checkpoint_every=25,
        )
        cfg.validate()
        return asdict(cfg)

    def start_training(self, continue_from: bool = False) -> None:
        """Cut the tiles (in a thread), then train in a child process; ``continue_from``
        fine-tunes from the last checkpoint into a new run."""
        try:
            if self.project is None:
                raise InputError("choose a project folder first (1 · Project and tiles)")
            if self.training or self.cutting:
                raise InputError("training is already running")
            if self.labels_layer() is None:
                raise InputError("no annotations layer: add a training tile and paint glands")
            init = self.project.last_checkpoint() if continue_from else None
            if continue_from and init is None:
                raise InputError("no checkpoint to continue from yet: press Start first")
            config = self._config()
        except InputError as exc:
            _notify(str(exc), "warning")
            self._say(str(exc))
            return
        self.job = None  # the previous run's job (finished) is let go
        st = self.project.state
        st.scale, st.tile = self.scale_spin.value(), self.tile_spin.value()
        st.settings.update(width=self.width_spin.value(), iterations=self.iter_spin.value())
        self._set_training_ui(True)
        self.stop_btn.setEnabled(False)
        self.pause_btn.setEnabled(False)
        self.eta_label.setText("cutting the training tiles…")

        def launch(n: int) -> None:
            run_dir = self.project.new_run_dir()
            self.job = TrainingJob(
                config, self.project.root / TRAINSET_FILE, run_dir, init_from=init
            )
            self.job.start()
            self._supervised_cfg = bool(config["supervised_only"])
            self._supervised = self._supervised_cfg or n == 0
            if continue_from:  # the chart goes on where the last run ended
                self.chart.new_run()
            else:
                self.chart.clear()
            self._pending_its = []
            self.progress.setRange(0, config["iterations"])
            self.progress.setValue(0)
            self._t_start = time.monotonic()
            self.eta_label.setText("starting the training process…")
            if n == 0 and not config["supervised_only"]:
                self._say("no unlabeled tissue: training is supervised only")
            self._set_training_ui(True)
            self._poll.start()

        def failed(_msg: str) -> None:
            self.eta_label.setText("idle")
            self._set_training_ui(False)

        self.rebuild_trainset(then=launch, failed=failed)

    @property
    def training(self) -> bool:
        return self.job is not None and not self.job.finished

    @property
    def cutting(self) -> bool:
        """True while the training tiles are being cut in the background."""
        return self._cutter is not None

    def rebuild_trainset(self, then=None, failed=None, quiet: bool = False) -> None:
        """Re-cut the training tiles and the unlabeled pool into ``trainset.npz`` in a thread
        (reading tiles and the tissue mask would stall the UI for a second); a running
        training process reloads it before its next iteration. ``then(pool_size)`` and
        ``failed(message)`` run on the main thread; user errors become a notification
        (``quiet``: a line in the status only, for updates the user did not ask for)."""
        from napari.qt.threading import create_worker

        if self.project is None:
            _notify("choose a project folder first (1 · Project and tiles)", "warning")
            return
        if self._cutter is not None:  # cut again once the running cut is done
            self._recut.append((then, failed, quiet))
            return
        self._sync_tiles()
        self.save_annotations()
        labels = self.labels_layer()
        entry, project = self.entry, self.project
        snapshot = None if labels is None else np.array(labels.data)  # painting goes on
        slides = {e.id: self._slide_of(e) for e in project.state.images}

        def work() -> int:
            ts = project.build_training_set(
                lambda e: slides.get(e.id),
                lambda e: snapshot if e is entry else None,
            )
            return len(ts.unlabeled_images)

        # errors are ours to report (a notification), not a traceback in the event loop
        worker = self._cutter = create_worker(work, _ignore_errors=True)

        def release() -> None:
            # The cut is over once its result or error is here: Start must work again at
            # once (waiting for 'finished' made a quick retry say "already running").
            if self._cutter is worker:
                self._cutter = None

        def done(n: int) -> None:
            release()
            if self.training:  # the trainer reloads this set: λ means something or not
                self._supervised = self._supervised_cfg or n == 0
            self.active.pool_changed(n)
            if then is not None:
                then(n)

        def error(exc: Exception) -> None:
            release()
            msg = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            if quiet:
                self._say(f"unlabeled pool not updated: {msg}")
            else:
                _notify(msg, "warning")
                self._say(msg)
            if failed is not None:
                failed(msg)

        def finished() -> None:
            release()
            if self._recut and self._cutter is None:
                t, f, q = self._recut.pop(0)
                self.rebuild_trainset(then=t, failed=f, quiet=q)

        worker.returned.connect(done)
        worker.errored.connect(error)
        worker.finished.connect(finished)
        worker.start()

    def toggle_pause(self) -> None:
        if self.job is None or self.job.finished:
            return
        if self.job.paused:
            self.job.resume()
            self.pause_btn.setText("Pause")
        else:
            self.job.pause()
            self.pause_btn.setText("Resume")
            self.eta_label.setText("pausing after this iteration…")

    def stop_training(self) -> None:
        if self.job is not None and not self.job.finished:
            self.job.stop()
            self.eta_label.setText("stopping: saving the checkpoint…")

    def _poll_training(self) -> None:
        """Drain the training events every 100 ms; redraw the progress and chart at most
        twice a second (each redraw recomposes the window, which is what costs the UI)."""
        if self.job is None:
            return
        events = self.job.poll()
        self._pending_its += [e for e in events if e["kind"] == "iteration"]
        now = time.monotonic()
        force = self.job.finished or any(e["kind"] != "iteration" for e in events)
        if self._pending_its and (force or now - self._last_draw >= 0.5):
            self._last_draw = now
            its, self._pending_its = self._pending_its, []
            for e in its:
                self.chart.add(e, show_lambda=not self._supervised)
            e = its[-1]
            self.progress.setValue(e["iteration"])
            eta = e.get("eta")
            lo = e["losses"].get("total", float("nan"))
            lam = " · supervised only" if self._supervised else f" · λ {e['lam']:.2f}"
            self.eta_label.setText(
                f"iteration {e['iteration']}/{e['total']} · loss {lo:.3f}{lam}"
                + (f" · ETA {fmt_time(eta)}" if eta is not None else "")
            )
        for e in events:
            kind = e["kind"]
            if kind == "start":
                self._say(e.get("message", ""))
            elif kind == "data":
                self._say(f"training picked up the changed tiles at iteration {e['iteration']}")
            elif kind == "paused":
                self.eta_label.setText(f"paused at iteration {e['iteration']} (checkpoint saved)")
            elif kind == "error":
                _notify(f"Training failed: {e['message']}", "error")
                self._say(f"training failed: {e['message']}")
            elif kind == "exit":
                msg = (
                    "training finished"
                    if e["result"] == "done"
                    else "training stopped; checkpoint saved"
                )
                # the status line, not a pop-up: a napari notification blocks the UI ~0.2 s
                self.eta_label.setText(msg)
                self._say(f"{msg}: predict in 3 · Review, or label more and Continue")
        if self.job.finished:
            self._poll.stop()
            self._reap(self.job, time.monotonic())
            self._set_training_ui(False)

    def _reap(self, job: TrainingJob, since: float) -> None:
        """Join the finished process without blocking the UI on its teardown: poll until it
        is gone (no zombie until the next job); one that hangs 30 s is terminated."""
        job.join(0)
        if job.is_alive():
            if time.monotonic() - since > 30:
                job.kill()
            QTimer.singleShot(200, lambda: self._reap(job, since))

    def _set_training_ui(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        # Continue fine-tunes a checkpoint: none before a first training.
        can_continue = self.project is not None and self.project.last_checkpoint() is not None
        self.continue_btn.setEnabled(not running and can_continue)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setText("Pause")

    # ================================================================== prediction

    def _region(self, mode: str) -> list[tuple[int, int, int, int]]:
        """Level-0 boxes to predict for 'view', 'tiles' or 'image'."""
        H, W = self._slide_shape()
        if mode == "image":
            return [(0, 0, H, W)]
        if mode == "tiles":
            if self.entry is None or not self.entry.train_tiles():
                raise InputError("no training tiles on this image to predict")
            return [(t.y, t.x, t.h, t.w) for t in self.entry.train_tiles()]
        corners = np.asarray(self.viewer.layers.extent.world)[:, -2:]
        try:  # the canvas size in screen px, (h, w); napari has no public accessor for it
            size = np.asarray(self.viewer.window._qt_viewer.canvas.size, float)
            half = size / 2 / camera(self.viewer).zoom
            c = np.asarray(camera(self.viewer).center[-2:])
            corners = np.stack([c - half, c + half])
        except AttributeError:
            self._say("could not read the view's size; predicting the whole image")
        b = corners / self._base_scale()
        y0, x0 = np.clip(np.floor(b[0]), 0, [H, W]).astype(int)
        y1, x1 = np.clip(np.ceil(b[1]), 0, [H, W]).astype(int)
        if y1 - y0 < 16 or x1 - x0 < 16:
            raise InputError("the view does not show the slide; pan to the tissue")
        return [(int(y0), int(x0), int(y1 - y0), int(x1 - x0))]

    def predict(self, mode: str = "view") -> None:
        from napari.qt.threading import thread_worker

        from ..core.device import releasing_memory
        from ..core.predict import PredictOptions, Predictor, load_model
        from ..core.uncertainty import uncertainty_map

        try:
            ckpt = None if self.project is None else self.project.last_checkpoint()
            if ckpt is None:
                raise InputError("no trained model yet: train first (2 · Train)")
            boxes = self._region(mode)
            slide = self._slide()
        except InputError as exc:
            _notify(str(exc), "warning")
            return
        experts = self.experts_check.isChecked()
        job = self._pred_job = ProgressJob(self.pred_progress, self.cancel_btn, self)

        @thread_worker(ignore_errors=True)  # errors become a notification below
        @releasing_memory  # the GPU's cache back to the driver once the model is gone
        def work():
            loaded = load_model(ckpt, "auto")
            # Expert maps are always computed: the uncertainty map needs the seg expert.
            pred = Predictor(loaded, PredictOptions(experts=True))
            s = loaded.geometry.scale
            t = pred.tile
            sizes = [(max(16, round(h / s)), max(16, round(w / s))) for _, _, h, w in boxes]
            from ..core.predict import TileGrid

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
                maps = {k: np.asarray(v) for k, v in wp.maps.items()}
                maps["mask"] = (maps["prob"] >= 0.5).astype(np.uint8)
                maps["instances"] = pred.instances(maps)
                maps["uncertainty"] = uncertainty_map(maps)
                if not experts:
                    for k in [k for k in maps if k.startswith("expert_")]:
                        del maps[k]
                results.append(((ys, xs, hs, ws), maps, wp))
            return {"scale": s, "results": results}

        worker = work()
        self.worker = worker
        job.start()
        self._set_predict_ui(False)

        def finished() -> None:
            job.finish()
            self._set_predict_ui(True)

        worker.returned.connect(self._show_prediction)
        worker.errored.connect(lambda e: _notify(f"Prediction failed: {e}", "error"))
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
        if out is None:
            self._say("prediction cancelled")
            return
        s = out["scale"]
        base = self._base_scale()
        H, W = self._slide_shape()
        hs, ws = round(H / s), round(W / s)
        # One canvas per output at working scale, so predicting again updates in place.
        # Creating a napari layer blocks the event loop ~0.25 s, so layers are built one
        # per event-loop turn: the UI keeps painting in between.
        ops = []
        for (ys, xs, _h, _w), maps, _wp in out["results"]:
            for key in (
                "instances",
                "prob",
                "sdf",
                "boundary",
                "uncertainty",
                *(k for k in maps if k.startswith("expert_")),
            ):
                name = OUT["seg" if key == "instances" else key]
                ops.append(partial(self._paste, name, key, maps[key], (ys, xs), (hs, ws), s, base))
        ops.append(partial(self._show_gates, out, base))
        ops.append(partial(self._say, f"prediction shown for {len(out['results'])} region(s)"))
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

    def _paste(self, name: str, key: str, val, origin, shape, s: float, base) -> None:
        ys, xs = origin
        h, w = val.shape
        scale = tuple(base * s)
        translate = tuple(base * (s - 1) / 2)
        if (
            name in self.viewer.layers
            and self.viewer.layers[name].data.shape == shape
            and (key != "instances" or self.viewer.layers[name].metadata.get(PRED_SCALE) == s)
        ):
            layer = self.viewer.layers[name]
            if key == "instances":  # fresh ids per region so pasted regions don't collide
                val = np.where(val > 0, val + int(layer.data.max()), 0)
                self._cover(layer, ys, xs, h, w)
            layer.data[ys : ys + h, xs : xs + w] = val[: shape[0] - ys, : shape[1] - xs]
            layer.refresh()
            return
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        dtype = np.int32 if key == "instances" else np.float32
        fill = -1.0 if "sdf" in key else 0
        canvas = np.full(shape, fill, dtype)
        canvas[ys : ys + h, xs : xs + w] = val[: shape[0] - ys, : shape[1] - xs]
        kw = dict(name=name, scale=scale, translate=translate)
        if key == "instances":
            layer = self.viewer.add_labels(canvas, opacity=LABEL_OPACITY[key], **kw)
            layer.metadata[PRED_SCALE] = s
            layer.metadata[COVERED] = np.zeros(shape, bool)
            self._cover(layer, ys, xs, h, w)
        else:
            self.viewer.add_image(canvas, visible=False, **map_style(key), **kw)

    @staticmethod
    def _cover(layer, ys: int, xs: int, h: int, w: int) -> None:
        """Mark a predicted region (working-scale px) in the segmentation layer."""
        cov = layer.metadata.get(COVERED)
        if cov is not None:
            cov[max(0, ys) : ys + h, max(0, xs) : xs + w] = True

    def _show_gates(self, out: dict, base) -> None:
        """Per-tile gate weights as text at tile centres (task rows, expert columns)."""
        pts, text = [], []
        s = out["scale"]
        for (ys, xs, _, _), _maps, wp in out["results"]:
            for (y, x, h, w), g in zip(wp.tiles, wp.gates):
                pts.append(((ys + y + h / 2) * s, (xs + x + w / 2) * s))
                text.append("seg " + "/".join(f"{v:.2f}" for v in g[0]))
        if not pts:
            return
        if OUT["gates"] in self.viewer.layers:  # update in place: re-adding costs ~0.5 s
            layer = self.viewer.layers[OUT["gates"]]
            layer.data = np.asarray(pts)
            layer.features = {"label": text}
            return
        self.viewer.add_points(
            np.asarray(pts),
            name=OUT["gates"],
            size=8,
            face_color="cyan",
            scale=tuple(base),
            features={"label": text},
            text={
                "string": "{label}",
                "size": 9,
                "color": "cyan",
                "anchor": "upper_left",
                "translation": [-24.0, 8.0],
            },
            visible=False,
        )

    # ================================================================== correct

    def accept_prediction(self) -> None:
        """Put the predicted glands into the annotations inside the training tiles, and only
        where a prediction exists (a *Predict view* covers part of the tiles: the rest is
        left alone). 'add' (the default) never changes a painted pixel: it adds the predicted
        glands that touch none; 'replace' overwrites the painting where predicted. One undo
        step; the annotations before are kept in the on-disk history."""
        labels = self.labels_layer()
        seg = self.viewer.layers[OUT["seg"]] if OUT["seg"] in self.viewer.layers else None  # noqa: SIM401
        cov = None if seg is None else seg.metadata.get(COVERED)
        if labels is None or cov is None or self.project is None or self.entry is None:
            _notify("predict first, then accept", "warning")
            return
        replace = self.accept_mode.currentIndex() == 1
        ls, s = self.entry.labels_scale, float(seg.metadata[PRED_SCALE])
        H, W = labels.data.shape
        parts = []  # (region, painted, predicted ids, where the prediction may go)
        for t in self.entry.train_tiles():
            y0, x0 = max(0, round(t.y / ls)), max(0, round(t.x / ls))
            y1, x1 = min(H, round((t.y + t.h) / ls)), min(W, round((t.x + t.w) / ls))
            if y1 <= y0 or x1 <= x0:
                continue
            # nearest working-scale pixel of each annotation pixel (centre to centre)
            rows = np.floor((np.arange(y0, y1) + 0.5) * ls / s).astype(int)
            cols = np.floor((np.arange(x0, x1) + 0.5) * ls / s).astype(int)
            inside = (rows < cov.shape[0])[:, None] & (cols < cov.shape[1])[None, :]
            rows, cols = np.minimum(rows, cov.shape[0] - 1), np.minimum(cols, cov.shape[1] - 1)
            here = cov[np.ix_(rows, cols)] & inside
            if not here.any():
                continue
            sl = (slice(y0, y1), slice(x0, x1))
            pred = np.where(here, np.asarray(seg.data)[np.ix_(rows, cols)], 0)
            painted = labels.data[sl]
            if replace:
                parts.append((sl, painted, pred, here))
            else:  # a predicted gland that touches a painted pixel is the user's: skip it
                touched = np.unique(pred[painted > 0])
                pred = np.where(np.isin(pred, touched[touched > 0]), 0, pred)
                parts.append((sl, painted, pred, here & (painted == 0) & (pred > 0)))
        ids = np.unique(np.concatenate([p[np.where(w)] for _, _, p, w in parts] or [[]]))
        ids = ids[ids > 0].astype(np.int64)
        first = int(labels.data.max()) + 1  # fresh ids: no predicted gland merges with one
        if ids.size and first + ids.size - 1 > np.iinfo(labels.data.dtype).max:
            _notify("too many gland ids for the annotations layer's type", "error")
            return
        patches = []
        for sl, painted, pred, where in parts:
            fresh = np.where(pred > 0, first + np.searchsorted(ids, pred), 0)
            new = np.where(where, fresh, painted).astype(labels.data.dtype)
            if not np.array_equal(new, painted):
                patches.append((sl, new))
        covered = len(parts)
        if not self._edit_labels(patches, "replace" if replace else "accept"):
            self._say(
                "nothing to accept: no prediction in the training tiles yet"
                if not covered
                else "nothing to accept: every predicted gland there is already painted"
            )
            return
        self._say(
            f"accepted the prediction in {len(patches)} tile(s)"
            + (" (your painting there replaced)" if replace else " (your painting kept)")
            + "; Undo or correct it with the brush"
        )

    def _edit_labels(self, patches: list[tuple[tuple[slice, slice], np.ndarray]], why: str) -> bool:
        """Apply ``patches`` (region, new pixels) to the annotations as ONE undo step, keep
        the annotations before in the on-disk history, and save. False if nothing changed."""
        labels = self.labels_layer()
        if not patches or labels is None or self.project is None or self.entry is None:
            return False
        self.project.keep_version(self.entry, np.array(labels.data), f"before-{why}")
        step = []
        for sl, new in patches:
            step.append((sl, labels.data[sl].copy()))
            labels.data[sl] = new
        self._undo.append(step)
        del self._undo[:-UNDO_STEPS]
        labels.refresh()
        self.undo_btn.setEnabled(True)
        self.save_annotations()
        self._fill_history()
        return True

    def undo_accept(self) -> None:
        """Undo the last accept, restore or 'Label this tile' (all its tiles at once)."""
        labels = self.labels_layer()
        if not self._undo or labels is None:
            return
        for sl, old in reversed(self._undo.pop()):
            labels.data[sl] = old
        labels.refresh()
        self.undo_btn.setEnabled(bool(self._undo))
        self.save_annotations()
        self._say("undone")

    def _fill_history(self) -> None:
        """List the kept versions of the current image's annotations, newest first."""
        import datetime as dt

        combo = self.history_combo
        keep = combo.currentData()
        combo.clear()
        if self.project is None or self.entry is None:
            return
        today = dt.date.today()
        for path, t, reason in self.project.versions(self.entry, wait=False):
            when = dt.datetime.fromtimestamp(t)
            day = "today" if when.date() == today else when.strftime("%Y-%m-%d")
            combo.addItem(f"{day} {when:%H:%M:%S} · {reason}", str(path))
        i = combo.findData(keep)
        combo.setCurrentIndex(max(0, i))

    def restore_version(self) -> None:
        """Put the chosen earlier version of the annotations back (one undo step; the
        annotations replaced are kept in the history first)."""
        labels = self.labels_layer()
        path = self.history_combo.currentData()
        if self.project is None or self.entry is None or labels is None or not path:
            _notify("no earlier version of this image's annotations yet", "warning")
            return
        try:
            old = self.project.load_version(self.entry, path)
        except InputError as exc:
            _notify(str(exc), "warning")
            self._say(str(exc))
            return
        if old.shape != labels.data.shape:
            msg = f"that version is {old.shape[1]} x {old.shape[0]} px, the annotations are not"
            _notify(msg, "warning")
            self._say(msg)
            return
        diff = np.argwhere(old != labels.data)
        if diff.size == 0:
            self._say("that version is what the annotations are now")
            return
        (y0, x0), (y1, x1) = diff.min(0), diff.max(0) + 1  # only the changed box is kept
        sl = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        what = self.history_combo.currentText()
        self._edit_labels([(sl, old[sl].astype(labels.data.dtype))], "restore")
        self._say(f"restored the annotations of {what}; Undo puts back the ones before")

    # ================================================================== misc

    def _toolbox_review(self) -> None:
        self.toolbox.setCurrentIndex(2)

    def _say(self, msg: str) -> None:
        self.status.setText(msg)

    def _save_now(self) -> None:
        self._autosave.stop()
        self.save_annotations(wait=True)

    def _on_removing(self, event) -> None:
        if self.viewer.layers[event.index] is self.labels_layer():
            self._save_now()

    def shutdown(self) -> None:
        """napari is closing: write the annotations now (the autosave may be pending) and
        stop training so that it saves its checkpoint (it would otherwise be killed)."""
        if self.job is not None and not self.job.finished:
            self.job.stop()
            self.job.join(10)
            self.job.kill()
        self._save_now()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _rect(y: float, x: float, h: float, w: float) -> np.ndarray:
    return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], float)


def _dspin(lo: float, hi: float, value: float, decimals: int) -> QDoubleSpinBox:
    sp = QDoubleSpinBox()
    sp.setRange(lo, hi)
    sp.setDecimals(decimals)
    sp.setSingleStep(10 ** -(decimals - 1))
    sp.setValue(value)
    return sp
