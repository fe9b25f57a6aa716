"""The Semi-MoE dock widget: a thin container of panels over one :class:`.session.Session`.

Pages: 1 project and tiles (:mod:`.panels.project`), 2 train (:mod:`.panels.train`),
3 review and correct (:mod:`.panels.review`), 4 suggestions and 5 pseudo-label QA
(:mod:`.panels.active`), 6 export (:mod:`.panels.export`), 7 cohort (:mod:`.panels.cohort`).
The panels share state only
through the session (and the training-set cutter and layer access it goes with); they never
call each other: the container wires the train page's signals to the live preview
(:mod:`.preview`) and to the prediction of the view when training ends.

Threads and processes: the GUI thread alone touches layers and widgets; prediction,
suggestions, QA and the training-set cut run in napari worker threads and hand their arrays
back; training runs in a child process (:class:`.training_process.TrainingJob`), polled by a
QTimer. Everything logged goes to the session log (:mod:`.session_log`).

napari private attributes still used, because napari has no public API for them:
``viewer.window._qt_window`` (the main window: napari sends no closeEvent to dock widgets,
napari#8071, so the dock filters the window's Close event), and, only on a napari without
the public ``viewer.canvas.size`` (napari#8633), ``viewer.window._qt_viewer.canvas.size``
(napari#4148; see :func:`.common.canvas_size`). ``create_worker(..., _ignore_errors=True)``
is that function's public keyword (underscored so as not to clash with the work's own).
Each degrades gracefully when absent.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QLabel, QToolBox, QVBoxLayout, QWidget

from .common import camera
from .cutter import TrainsetCutter
from .layers import LABELS_LAYER, TILE_STYLE, TILES_LAYER, NapariLayers
from .panels.active import ActivePanel
from .panels.cohort import CohortPanel
from .panels.export import ExportPanel
from .panels.project import NO_PROJECT, ProjectPanel
from .panels.review import COVERED, PRED_SCALE, ReviewPanel
from .panels.train import TrainPanel
from .preview import LivePreview
from .session import Session
from .session_log import SessionLog

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

__all__ = [
    "COVERED",
    "LABELS_LAYER",
    "NO_PROJECT",
    "PRED_SCALE",
    "TILES_LAYER",
    "TILE_STYLE",
    "SemiMoEWidget",
    "camera",
]


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


class SemiMoEWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer, project_dir: str | Path | None = None):
        super().__init__()
        self.viewer = viewer
        self.layers = NapariLayers(viewer, lambda: self.project_panel.image_combo.currentText())
        self.session = Session(self.layers)
        self.layers.entry = lambda: self.session.entry
        self.layers.classes = lambda: self.session.classes
        self.cutter = TrainsetCutter(self.session, self.layers)
        self.log = SessionLog()

        lay = QVBoxLayout(self)
        box = self.toolbox = QToolBox()
        lay.addWidget(box, 1)
        self.project_panel = ProjectPanel(self.session, self.layers, self.cutter)
        self.train_panel = TrainPanel(self.session, self.cutter)
        self.review_panel = ReviewPanel(self.session, self.layers)
        self.active = ActivePanel(self.session, self.layers, self.cutter)
        self.cohort_panel = CohortPanel(self.session, viewer)
        box.addItem(self.project_panel, "1 · Project and tiles")
        box.addItem(self.train_panel, "2 · Train")
        box.addItem(self.review_panel, "3 · Review and correct")
        box.addItem(self.active.suggest_page, "4 · Label next (suggestions)")
        box.addItem(self.active.qa_page, "5 · Pseudo-labels (QA)")
        self.export_panel = ExportPanel(self.session, self.layers)
        box.addItem(self.export_panel, "6 · Export (QuPath, TIFF, OME-Zarr)")
        box.addItem(self.cohort_panel, "7 · Cohort (many slides)")
        # While training: a live preview of the view at each checkpoint; when it ends, the
        # view is predicted with the final model (non-modal: nothing is changed that the
        # user painted, and Accept stays a click).
        self.preview = LivePreview(self.session, self.layers)
        self._closing = False
        self.train_panel.checkpoint_saved.connect(self.preview.refresh)
        self.train_panel.training_ended.connect(self._training_ended)
        # Without a project nothing can be done but choose one: open on that page. Once a
        # project with painted tiles is open (the sample's), the next step is 2 · Train.
        box.setCurrentIndex(0)
        self._auto_page = True
        box.currentChanged.connect(self._page_chosen)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # A fixed height: a new message must not re-layout the dock (and the canvas with it).
        self.status.setFixedHeight(3 * self.status.fontMetrics().lineSpacing() + 4)
        lay.addWidget(self.status)
        self.session.message.connect(lambda msg: self.status.setText(msg))
        self.session.project_changed.connect(self._project_opened)
        self.session.image_changed.connect(self._choose_page)
        self.session.image_changed.connect(self.preview.prepare)  # its layer, ahead of time

        # napari never sends closeEvent to dock widgets (napari#8071): save the last strokes
        # when the window closes or the annotations layer goes (viewer.close() removes the
        # layers first), and stop training gracefully when the application quits.
        qt_window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        if qt_window is not None:
            self._close_watcher = _CloseWatcher(self._window_closed, self)
            qt_window.installEventFilter(self._close_watcher)
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        box.currentChanged.connect(lambda i: i == 2 and self.review_panel.fill_history())
        self._remember_paths()
        viewer.layers.events.inserted.connect(self._remember_paths, position="first")
        self.project_panel.refresh_layers()
        if project_dir is not None:
            self.set_project(project_dir)
        else:
            self.session.say(NO_PROJECT)
        # napari's, Qt's and torch's millions of long-lived objects leave the collector's
        # view: a full (generation 2) collection then no longer walks them, which stalled the
        # UI for ~150 ms each time the live preview or a prediction allocated enough to
        # trigger one (benchmarks/ui_responsiveness.py). Only what exists now is frozen.
        gc.collect()
        gc.freeze()

    # ------------------------------------------------------------------ the dock's API

    @property
    def project(self):
        return self.session.project

    @property
    def entry(self):
        return self.session.entry

    @property
    def cutting(self) -> bool:
        return self.cutter.busy

    def set_project(self, path: str | Path) -> None:
        """Open (or create) a project folder and restore its annotations and tiles."""
        self.project_panel.set_project(path)

    def _project_opened(self, project) -> None:
        self.session.log_path = self.log.open_in(project.root)

    def _remember_paths(self, *_) -> None:
        """Plain PNG/TIFF open with napari's own reader (the plugin claims only what it adds,
        napari.yaml): keep their file where the project looks for it, ``semimoe_path``, as
        this plugin's reader does (runs before the project page sees the new layer)."""
        from napari.layers import Image

        for ly in self.viewer.layers:
            path = getattr(getattr(ly, "source", None), "path", None)
            if isinstance(ly, Image) and path and "semimoe_path" not in ly.metadata:
                ly.metadata["semimoe_path"] = str(Path(path).resolve())

    def _page_chosen(self, index: int) -> None:
        if index != 0:  # the user (or the dock) moved on: never move the page for them again
            self._auto_page = False

    def _choose_page(self, entry) -> None:
        """A project's image is open: with painted training tiles, go to 2 · Train (once,
        and only if nobody has changed the page yet); otherwise stay where tiles are added."""
        if self._auto_page and entry is not None and entry.train_tiles():
            self.toolbox.setCurrentIndex(1)

    def _training_ended(self, last: dict) -> None:
        """The training process is gone: the live preview goes, and unless it failed (or
        napari is closing) the view is predicted with the final model, on page 3, where
        Accept and the brush take over. Auto-run rather than a button to press: the user
        was watching the preview; the full prediction is what they look at next."""
        self.preview.stop()
        if self._closing or last.get("kind") != "exit" or self.session.checkpoint() is None:
            return
        review = self.review_panel
        if review.worker is not None and not review.pred_view_btn.isEnabled():
            return  # a prediction the user started is running: it is the one to show
        if self.toolbox.currentIndex() == 1:
            self.toolbox.setCurrentIndex(2)
        self.session.say("training ended: predicting this view with the final model…")
        review.predict("view")

    def _window_closed(self) -> None:
        self.project_panel.save_now()
        self.log.close()

    def _toolbox_review(self) -> None:
        self.toolbox.setCurrentIndex(2)

    def shutdown(self) -> None:
        """napari is closing: write the annotations now (the autosave may be pending) and
        stop training so that it saves its checkpoint (it would otherwise be killed)."""
        self._closing = True
        self.train_panel.shutdown()
        self.cohort_panel.shutdown()
        self.project_panel.save_now()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)
