"""Page 6 · Cohort: predict a folder of slides with the current model on dask.distributed
(:func:`napari_semimoe.core.cohort.run_cohort`), one row per slide (queued, running, done,
failed with its reason; tiles; time), an overall bar with ETA, the dask dashboard's address,
and Open on a finished slide (its OME-Zarr through the plugin's reader: lazy layers).

The cohort runs in a napari worker thread (the dask client lives there); its progress
callback only stores the latest :class:`CohortProgress`, a main-thread timer shows it.
Cancel, closing the dock and closing napari set the cohort's stop event: queued tasks are
cancelled, finished slides stay ("continue earlier results" completes the rest). The
workers are kept between cohorts (:mod:`..cohort_cluster`) and closed with the dock.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError
from ..cohort_cluster import KeptClient, default_workers
from ..cohort_view import STAGE_WORDS, CloseFilter, SlideTable, open_result, with_button
from ..common import notify
from ..jobs import fmt_time
from ..session import Session

log = logging.getLogger(__name__)

HERE, CLUSTER = "this computer", "a cluster (scheduler address)"
#: How long closing napari waits for a running cohort to stop and close its workers.
STOP_WAIT_S = 60.0


class CohortPanel(QWidget):
    def __init__(self, session: Session, viewer) -> None:
        super().__init__()
        self.session, self.viewer = session, viewer
        self.worker = None
        self.stop_event: threading.Event | None = None
        self._done_event = threading.Event()
        self._done_event.set()
        self._progress: Any = None  # the latest CohortProgress (written by the worker)
        self._paths: dict[str, str] = {}  # slide name -> its output folder
        self._watched: list[weakref.ref] = []
        self.client = KeptClient()
        self._close_when_done = False
        self._filter = CloseFilter(self._closing, self)
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(200)
        self.timer.timeout.connect(self._show_progress)
        session.project_changed.connect(self._project_opened)

    # ------------------------------------------------------------------ the form

    def _build(self) -> None:
        v = QVBoxLayout(self)
        form = self.form = QFormLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("this project's latest model")
        self.model_edit.setToolTip(
            "the trained model that reads the slides: empty = the model this project trained "
            "last; or choose a training run's folder (it holds checkpoint.safetensors)"
        )
        form.addRow("Model", with_button(self.model_edit, self._choose_model))

        self.slide_list = QListWidget()
        self.slide_list.setMaximumHeight(3 * self.fontMetrics().lineSpacing() + 8)
        self.slide_list.setToolTip(
            "the slides to read: whole folders (every slide in them) and single slide files; "
            "select one and press Remove to take it out"
        )
        self.slide_list.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.slide_list.setTextElideMode(Qt.TextElideMode.ElideLeft)  # the name shows
        self.slide_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.slide_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        srow = QHBoxLayout()
        for text, tip, fn in (
            ("Folder…", "add every slide of a folder (not its sub-folders)", self._add_folder),
            ("Files…", "add one or more slide files", self._add_files),
            ("Remove", "take the selected entries out of the list", self._remove_selected),
        ):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(fn)
            srow.addWidget(b)
        sbox = QVBoxLayout()
        sbox.addWidget(self.slide_list)
        sbox.addLayout(srow)
        form.addRow("Slides", sbox)

        self.out_edit = QLineEdit()
        self.out_edit.setToolTip(
            "where the results go: one NAME.ome.zarr folder per slide (opens in napari and "
            "QuPath) and a summary table cohort_summary.csv"
        )
        form.addRow("Results to", with_button(self.out_edit, self._choose_out))

        self.where_combo = QComboBox()
        self.where_combo.addItems([HERE, CLUSTER])
        self.where_combo.setToolTip(
            "this computer: the slides are shared out among several helper processes here; "
            "a cluster: give the address of a running dask scheduler (your IT can start one)"
        )
        self.where_combo.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.where_combo.currentTextChanged.connect(self._where_changed)
        form.addRow("Run on", self.where_combo)
        workers, threads = default_workers()
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 256)
        self.workers_spin.setValue(workers)
        self.workers_spin.setToolTip(
            "how many slides' parts are read at the same time on this computer; the default "
            "leaves one processor core free so that napari stays responsive"
        )
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(1, 64)
        self.threads_spin.setValue(threads)
        self.threads_spin.setToolTip(
            "processor cores each helper uses; helpers x cores should not exceed this "
            f"computer's cores ({os.cpu_count()})"
        )
        form.addRow("Helpers", self.workers_spin)
        form.addRow("Cores each", self.threads_spin)
        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText("tcp://scheduler-host:8786")
        self.address_edit.setToolTip(
            "the dask scheduler's address (tcp://host:port); the cluster's workers must see "
            "the slides, the model and the results folder at the same paths as this computer"
        )
        form.addRow("Scheduler", self.address_edit)
        self.resume_check = QCheckBox("continue earlier results")
        self.resume_check.setToolTip(
            "keep the slides (and parts of slides) already finished in the results folder and "
            "do only what is missing; off: the folder must not hold results of these slides"
        )
        form.addRow("", self.resume_check)
        v.addLayout(form)

        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip("read every slide of the list with the model")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip(
            "stop after the parts being read now; finished slides stay, and a later run with "
            "'continue earlier results' does only the rest"
        )
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        v.addLayout(row)
        self.bar = QProgressBar()
        self.bar.setToolTip("tiles read over all slides (the total is an estimate at first)")
        self.bar.setFormat("")
        self.bar.setValue(0)
        v.addWidget(self.bar)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        v.addWidget(self.summary_label)
        self.dashboard_label = QLabel("")
        self.dashboard_label.setOpenExternalLinks(True)
        self.dashboard_label.setWordWrap(True)
        self.dashboard_label.setToolTip(
            "dask's live view of the helpers (what each is doing, memory); opens in a browser"
        )
        v.addWidget(self.dashboard_label)

        self.table = SlideTable(self.open_slide)
        self.table.setMinimumHeight(5 * self.fontMetrics().lineSpacing())
        v.addWidget(self.table, 1)
        self._where_changed(HERE)
        self.detail_label = QLabel("")
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail_label.setToolTip("the selected slide's status in full (e.g. why it failed)")
        v.addWidget(self.detail_label)
        self.table.currentCellChanged.connect(lambda r, *_: self._show_detail(r))

    def _where_changed(self, text: str) -> None:
        """Only the fields of the chosen place are shown (the page stays short)."""
        for w, show in ((self.workers_spin, 1), (self.threads_spin, 1), (self.address_edit, 0)):
            for part in (w, self.form.labelForField(w)):
                part.setVisible(bool(show) == (text == HERE))

    def _project_opened(self, project) -> None:
        if not self.out_edit.text() and not self.running:
            self.out_edit.setText(str(project.root / "cohort"))

    def _choose_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose a training run's folder")
        if d:
            self.model_edit.setText(d)

    def _choose_out(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose the results folder")
        if d:
            self.out_edit.setText(d)

    def _add_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Add a folder of slides")
        if d:
            self.add_sources([d])

    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add slides")
        if files:
            self.add_sources(files)

    def _remove_selected(self) -> None:
        for item in self.slide_list.selectedItems():
            self.slide_list.takeItem(self.slide_list.row(item))
        self._list_slides()

    def add_sources(self, paths: list[str | Path]) -> None:
        """Add folders or slide files to the list (shown as queued rows at once)."""
        have = set(self.sources())
        for p in paths:
            if str(p) not in have:
                self.slide_list.addItem(str(p))
        self._list_slides()

    def sources(self) -> list[str]:
        return [self.slide_list.item(i).text() for i in range(self.slide_list.count())]

    def _list_slides(self) -> None:
        """The table shows which slides the list names, before anything runs."""
        if self.running:
            return
        from ...core.cohort import expand_slides, slide_name

        self.table.reset([])
        if not self.sources():
            self.summary_label.setText("")
            return
        try:
            paths = expand_slides(self.sources())
        except InputError as exc:
            self.summary_label.setText(str(exc))
            return
        self.table.reset([slide_name(p) for p in paths])
        self.summary_label.setText(f"{len(paths)} slide{'s' * (len(paths) != 1)} to read")

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return not self._done_event.is_set()

    def model_path(self) -> Path:
        """The model to use: the chosen run folder, else the project's latest run."""
        text = self.model_edit.text().strip()
        if text:
            p = Path(text).expanduser()
            if not p.exists():
                raise InputError(f"{p}: no such model folder")
            return p
        ckpt = self.session.checkpoint()
        if ckpt is None:
            raise InputError(
                "no trained model: train one first (2 · Train) or choose a run folder as Model"
            )
        return ckpt.parent

    def options(self):
        from ...core.cohort import CohortOptions

        if self.where_combo.currentText() == CLUSTER:
            address = self.address_edit.text().strip()
            if not address:
                raise InputError("give the dask scheduler's address (tcp://host:port)")
            return CohortOptions(scheduler=address, resume=self.resume_check.isChecked())
        return CohortOptions(
            workers=self.workers_spin.value(),
            threads_per_worker=self.threads_spin.value(),
            resume=self.resume_check.isChecked(),
        )

    def start(self, options=None) -> None:
        """Start the cohort of the list (``options``: CohortOptions; default from the form)."""
        if self.running:
            return
        from napari.qt.threading import create_worker

        from ...core.cohort import ZARR_SUFFIX, expand_slides, run_cohort
        from ...core.cohort.slides import output_names

        try:
            run = self.model_path()
            if not self.sources():
                raise InputError("no slides: add a folder of slides or slide files first")
            paths = expand_slides(self.sources())
            names = output_names(paths)
            text = self.out_edit.text().strip()
            if not text:
                raise InputError("choose the folder the results go to (Results to)")
            out = Path(text).expanduser()
            opt = options or self.options()
            there = [n for n in names if (out / f"{n}{ZARR_SUFFIX}").exists()]
            if there and not opt.resume:
                raise InputError(
                    f"{out} already holds results of {len(there)} of these slides "
                    f"({there[0]}, ...): tick 'continue earlier results' or choose another "
                    "results folder"
                )
        except InputError as exc:
            self.session.say(str(exc))
            notify(str(exc), "warning")
            return
        self.table.reset(names)
        self._paths = {n: str(out / f"{n}{ZARR_SUFFIX}") for n in names}
        self._progress = None
        self.stop_event = stop = threading.Event()
        self._done_event.clear()
        where = opt.scheduler or f"{opt.workers} helpers × {opt.threads_per_worker} cores here"
        self.summary_label.setText(f"starting ({where})…")
        self.dashboard_label.setText("")
        self.bar.setRange(0, 0)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self._watch_closing()
        done = self._done_event

        def work():
            try:
                client = self.client.get(opt)
                return run_cohort(
                    run, paths, out, opt, client=client, progress=self._store, stop=stop
                )
            finally:
                done.set()

        worker = self.worker = create_worker(work, _ignore_errors=True)
        worker.returned.connect(self._finished)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._ended)
        self.timer.start()
        worker.start()
        log.info("cohort of %d slides into %s with %s", len(paths), out, run)

    def _store(self, progress) -> None:
        """Worker thread: keep the latest progress (no Qt here)."""
        self._progress = progress

    def cancel(self) -> None:
        if self.stop_event is not None and self.running:
            self.stop_event.set()
            self.cancel_btn.setEnabled(False)
            self.summary_label.setText("stopping: the parts being read now finish first…")

    def shutdown(self, wait: float = STOP_WAIT_S) -> None:
        """napari or the dock closes: stop the cohort, wait for it, close the workers."""
        if self.running:
            self.cancel()
            self._done_event.wait(wait)
        self.client.close()

    def _closing(self, window: bool) -> None:
        """The dock was taken out (the viewer goes on: nothing blocks it) or the window
        closed (napari ends: the cohort and its workers are waited for)."""
        if window:
            self.shutdown()
        elif self.running:
            log.info("the dock was closed: stopping the cohort")
            self.cancel()
            self._close_when_done = True
        else:
            self.client.close(wait=False)

    def _watch_closing(self) -> None:
        """Watch the dock's content (napari takes it out when the dock is closed) and the
        window (closed), to stop a running cohort and close the workers."""
        for ref in self._watched:
            if (obj := ref()) is not None:
                obj.removeEventFilter(self._filter)
        w: QWidget = self
        while w.parentWidget() is not None and not isinstance(w.parentWidget(), QDockWidget):
            w = w.parentWidget()
        watched = [w] if w is self.window() else [w, self.window()]
        for obj in watched:
            obj.installEventFilter(self._filter)
        # weak: the page must not keep napari's window (and its viewer) alive
        self._watched = [weakref.ref(obj) for obj in watched]

    # ------------------------------------------------------------------ showing it

    def _show_progress(self) -> None:
        p = self._progress
        if p is None:
            return
        if p.tiles_total:
            self.bar.setRange(0, p.tiles_total)
            self.bar.setValue(p.tiles_done)
            fmt = f"{p.tiles_done} / {p.tiles_total} tiles"
            if 0 < p.tiles_done < p.tiles_total:
                fmt += (
                    f" · ETA {fmt_time(p.elapsed * (p.tiles_total - p.tiles_done) / p.tiles_done)}"
                )
            self.bar.setFormat(fmt)
        running = sum(1 for s in p.slides.values() if s in STAGE_WORDS and s != "plan")
        line = f"{p.slides_done} of {p.slides_total} slides done"
        if p.slides_failed:
            line += f" · {p.slides_failed} failed"
        if running:
            line += f" · {running} in progress"
        self.summary_label.setText(line + f" · {fmt_time(p.elapsed)}")
        self._show_dashboard(p.dashboard)
        self.table.show_progress(p)
        self._show_detail(self.table.currentRow())

    def _show_detail(self, row: int) -> None:
        name = next((n for n, r in self.table.rows.items() if r == row), None)
        self.detail_label.setText("" if name is None else f"{name}: {self.table.text(name, 1)}")

    def _show_dashboard(self, link: str | None) -> None:
        if link:
            a = html.escape(link)
            self.dashboard_label.setText(f'dask dashboard: <a href="{a}">{a}</a>')
        elif not self.dashboard_label.text():
            self.dashboard_label.setText("dask dashboard: none (bokeh is not installed)")

    def _finished(self, summary) -> None:
        """Main thread: the cohort ended; the rows from its summary."""
        self._show_progress()
        self.table.show_summary(summary)
        self._show_detail(self.table.currentRow())
        for r in summary.slides:
            if r.out:
                self._paths[r.name] = r.out
        self._show_dashboard(summary.dashboard)
        done = sum(r.status == "done" for r in summary.slides)
        failed = len(summary.failed)
        words = "stopped" if summary.stopped else "finished"
        line = f"cohort {words}: {done} of {len(summary.slides)} slides done"
        if failed:
            line += f", {failed} failed"
        line += f" in {fmt_time(summary.seconds)}"
        self.summary_label.setText(line + " · cohort_summary.csv")
        self.summary_label.setToolTip(
            f"the summary tables:\n{summary.summary_csv}\n{summary.summary_json}"
        )
        line += f"; summary: {summary.summary_csv}"
        if not summary.stopped and self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
        self.session.say(line)

    def _failed(self, exc: BaseException) -> None:
        line = self.session.report("cohort", exc)
        self.summary_label.setText(line)
        notify(line, "error")

    def _ended(self) -> None:
        self.timer.stop()
        if self._close_when_done:
            self._close_when_done = False
            self.client.close(wait=False)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    # ------------------------------------------------------------------ results

    def open_slide(self, name: str) -> list:
        """Add a finished slide's results to the viewer (lazily); returns the layers."""
        path = self._paths.get(name)
        try:
            added = open_result(self.viewer, path) if path else []
        except (ValueError, InputError, OSError) as exc:
            self.session.say(f"{name}: cannot open {path}: {exc}")
            return []
        opened = f"{len(added)} layers opened from {path}"
        self.session.say(f"{name}: {opened if added else 'no finished result to open'}")
        return added
