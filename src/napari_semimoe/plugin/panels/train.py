"""Page 2 · Train: the settings form, Start / Pause / Stop / Continue, progress and the loss
chart, over a training child process (:class:`..training_process.TrainingJob`) polled by a
QTimer on the GUI thread.

The form's fields and their defaults come from :class:`core.train.TrainConfig` (the one
source of defaults, shared with the CLI's ``RUN_DEFAULTS``); the dock overrides only what
makes its runs interactive (:data:`DOCK_OVERRIDES`). The child's events are shown here:
progress, 'warning' (e.g. supervised only), errors (one line in the dock, the traceback in
the session log), and its log records (written to the session log).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...core.config import TrainConfig
from ...core.errors import InputError
from ...core.families import get_family
from ...core.trainset import TRAINSET_FILE, trainset_attributes
from ..chart import LossChart
from ..common import notify
from ..cutter import TrainsetCutter
from ..dca_split import DcaSplitBox, fill_families
from ..jobs import fmt_time
from ..remote_job import RemoteTrainingJob
from ..session import Session
from ..train_form import (
    CUSTOM,
    DURATIONS,
    QUALITIES,
    TIPS,
    check,
    combo,
    dspin,
    form_row,
    spin,
)
from ..training_process import TrainingJob
from ..where import WhereBox

log = logging.getLogger(__name__)
child_log = logging.getLogger("napari_semimoe.training")

#: The dock's runs are interactive: shorter than the CLI's, and checkpointed often (Predict
#: and Continue read the checkpoint while the user labels).
DOCK_OVERRIDES = {"iterations": 500, "checkpoint_every": 25}


def form_defaults() -> dict:
    """The form's defaults: TrainConfig's, with the dock's overrides."""
    return {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **DOCK_OVERRIDES}


DEFAULTS = form_defaults()


class TrainPanel(QWidget):
    #: a checkpoint was saved (its run folder): the dock's live preview refreshes from it
    checkpoint_saved = Signal(str)
    #: the training process is gone (its last event): the dock offers the prediction
    training_ended = Signal(dict)

    def __init__(self, session: Session, cutter: TrainsetCutter) -> None:
        super().__init__()
        self.session, self.cutter = session, cutter
        self.job: TrainingJob | RemoteTrainingJob | None = None
        self._pending_its: list[dict] = []  # iteration events not drawn yet
        self._last_draw = 0.0
        self._t_start = 0.0
        self._supervised = False  # the running training has no unlabeled pool (no λ)
        self._supervised_cfg = False
        self._speed: dict[int, float] = {}  # model width -> measured seconds per step
        self._first_it: tuple[int, float] | None = None
        self._run_width = 0
        self._build()
        self._poll = QTimer(self)
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._poll_training)
        session.project_changed.connect(self._project_opened)
        session.pool_changed.connect(self._pool_changed)
        self._set_training_ui(False)

    # ------------------------------------------------------------------ form

    def _build(self) -> None:
        d = DEFAULTS
        v = QVBoxLayout(self)
        # The simple level: what, how long, speed vs quality (they set the advanced fields).
        f = QFormLayout()
        self.family_combo = QComboBox()
        self._fill_families(d["family"])
        form_row(f, "What to segment", self.family_combo, TIPS["family"])
        self.duration_combo = QComboBox()
        for text, _its in DURATIONS:
            self.duration_combo.addItem(text)
        self.duration_combo.addItem(CUSTOM)
        form_row(f, "How long to train", self.duration_combo, TIPS["duration"])
        self.quality_combo = QComboBox()
        for text, _w in QUALITIES:
            self.quality_combo.addItem(text)
        self.quality_combo.addItem(CUSTOM)
        form_row(f, "Speed or quality", self.quality_combo, TIPS["quality"])
        v.addLayout(f)
        self.dca_box = DcaSplitBox(self.session, self.session.live_labels)
        v.addWidget(self.dca_box)
        self.family_combo.currentIndexChanged.connect(self._family_chosen)
        self.session.classes_changed.connect(lambda _t: self._fill_families())
        self._family_chosen()
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setStyleSheet("color: #b0b4bc")
        v.addWidget(self.estimate_label)
        self.advanced_check = QCheckBox("Show advanced settings")
        self.advanced_check.setToolTip(TIPS["advanced"])
        v.addWidget(self.advanced_check)
        # The advanced level: today's parameters, plain names, the technical term in the tip.
        adv = self.advanced_box = QGroupBox("Advanced settings")
        af = QFormLayout(adv)
        self.width_spin = spin(4, 64, d["width"], step=4)
        form_row(af, "Model size", self.width_spin, TIPS["width"])
        self.iter_spin = spin(1, 1_000_000, d["iterations"])
        form_row(af, "Training steps", self.iter_spin, TIPS["iterations"])
        self.lr_spin = dspin(0.001, 5.0, d["lr"], 3)
        form_row(af, "Learning step size", self.lr_spin, TIPS["lr"])
        self.gamma_spin = dspin(0.0, 5.0, d["gamma"], 2)
        form_row(af, "Balance of the tasks", self.gamma_spin, TIPS["gamma"])
        self.lambda_spin = dspin(0.0, 10.0, d["lambda_max"], 2)
        form_row(af, "Weight of unlabeled tissue", self.lambda_spin, TIPS["lambda_max"])
        self.device_combo = combo(["auto", "cpu", "cuda"], d["device"])
        form_row(af, "Run on", self.device_combo, TIPS["device"])
        self.threads_spin = spin(0, 256, d["threads"] or 0)
        self.threads_spin.setSpecialValueText("all")
        form_row(af, "CPU threads", self.threads_spin, TIPS["threads"])
        self.precision_combo = combo(["auto", "bf16", "fp32"], d["precision"])
        form_row(af, "Number precision", self.precision_combo, TIPS["precision"])
        self.seed_spin = spin(0, 2**31 - 1, d["seed"])
        form_row(af, "Random seed", self.seed_spin, TIPS["seed"])
        self.semi_check = check(
            "also learn from unlabeled tissue", TIPS["semi"], not d["supervised_only"]
        )
        af.addRow(self.semi_check)
        self.routing_check = check("route by where a slide comes from", TIPS["routing"])
        af.addRow(self.routing_check)
        adv.setVisible(False)
        self.advanced_check.toggled.connect(adv.setVisible)
        v.addWidget(adv)
        self.duration_combo.currentIndexChanged.connect(self._duration_chosen)
        self.quality_combo.currentIndexChanged.connect(self._quality_chosen)
        self.width_spin.valueChanged.connect(self._sync_presets)
        self.iter_spin.valueChanged.connect(self._sync_presets)
        self._sync_presets()
        self.where = WhereBox()  # this computer | cluster (a dask scheduler's address)
        v.addWidget(self.where)
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip(TIPS["start"])
        self.start_btn.clicked.connect(lambda: self.start_training(continue_from=False))
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setToolTip(TIPS["pause"])
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip(TIPS["stop"])
        self.stop_btn.clicked.connect(self.stop_training)
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setToolTip(TIPS["continue"])
        self.continue_btn.clicked.connect(lambda: self.start_training(continue_from=True))
        for b in (self.start_btn, self.pause_btn, self.stop_btn, self.continue_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m training steps")
        self.progress.setToolTip("training steps done of the run's total")
        v.addWidget(self.progress)
        self.eta_label = QLabel("idle")
        # its text changes every poll: keep it from resizing (re-laying out) the dock
        self.eta_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        v.addWidget(self.eta_label)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #ffb347")
        self.warning_label.setVisible(False)
        v.addWidget(self.warning_label)
        self.chart = LossChart()
        self._chart_family(d["family"])
        v.addWidget(self.chart, 1)

    def _fill_families(self, want: str | None = None) -> None:
        """The families this project can train (DCA only with 2 or more classes)."""
        fill_families(self.family_combo, self.session.classes, want)
        if hasattr(self, "dca_box"):
            self._family_chosen()

    def _family_chosen(self, _i: int = 0) -> None:
        """DCA's split shown (and counted) while DCA is chosen; the family's step size."""
        name = self.family_combo.currentData()
        if name and hasattr(self, "lr_spin"):
            self.lr_spin.setValue(get_family(name).default_lr)
        self.dca_box.setVisible(name == "dca")
        if name == "dca":
            self.dca_box.refresh()

    def _duration_chosen(self, i: int) -> None:
        if i < len(DURATIONS):
            self.iter_spin.setValue(DURATIONS[i][1])

    def _quality_chosen(self, i: int) -> None:
        if i < len(QUALITIES):
            self.width_spin.setValue(QUALITIES[i][1])

    def _sync_presets(self, _value=None) -> None:
        """The simple choices show what the advanced fields say ('custom' when no preset
        matches), and the time estimate."""
        for box, presets, value in (
            (self.duration_combo, DURATIONS, self.iter_spin.value()),
            (self.quality_combo, QUALITIES, self.width_spin.value()),
        ):
            i = next((k for k, (_t, n) in enumerate(presets) if n == value), len(presets))
            box.blockSignals(True)
            box.setCurrentIndex(i)
            box.blockSignals(False)
        self.estimate_label.setText(self._estimate())

    def _estimate(self) -> str:
        """How long the chosen training takes, from the last run's measured speed at the
        same model size in this session (nothing is guessed before one ran)."""
        its, width = self.iter_spin.value(), self.width_spin.value()
        speed = self._speed.get(width)
        if speed is None:
            return (
                f"{its} training steps, model size {width}; the time is shown here once a "
                "training at this size has run on this computer"
            )
        return f"about {fmt_time(its * speed)} on this computer ({its} steps at {speed:.2f} s each)"

    def _chart_family(self, name: str | None) -> None:
        """The chart's task curves: the family of the run (its config; the last checkpoint's
        when a project opens). An unknown name keeps the curves the log brings."""
        try:
            self.chart.set_tasks(get_family(name).tasks)
        except InputError:
            self.chart.set_tasks([])

    def _project_opened(self, project) -> None:
        self._fill_families()
        st = project.state.settings
        for key, widget in (("width", self.width_spin), ("iterations", self.iter_spin)):
            if key in st:
                widget.setValue(int(st[key]))
        try:
            family = self.session.family
        except InputError:  # a damaged checkpoint: Predict says why, not the project opening
            family = None
        if family is not None:
            self.chart.set_tasks(family.tasks)
        self._set_training_ui(self.training)

    def config(self) -> dict:
        """The form as a validated TrainConfig dict (geometry: the project page's form;
        classes: the project's table; DCA's split: the user's override, if any)."""
        family = self.family_combo.currentData() or DEFAULTS["family"]
        table = self.session.classes
        cfg = TrainConfig(
            **{
                **DOCK_OVERRIDES,
                "family": family,
                "classes": None if table is None else table.to_list(),
                "dca_split": self.dca_box.split() if family == "dca" else None,
                "width": self.width_spin.value(),
                "iterations": self.iter_spin.value(),
                "lr": self.lr_spin.value(),
                "gamma": self.gamma_spin.value(),
                "lambda_max": self.lambda_spin.value(),
                "device": self.device_combo.currentText(),
                "threads": self.threads_spin.value() or None,
                "precision": self.precision_combo.currentText(),
                "seed": self.seed_spin.value(),
                "supervised_only": not self.semi_check.isChecked(),
                "attribute_routing": self.routing_check.isChecked(),
                "geometry": self.session.train_geometry.to_dict(),
            }
        )
        cfg.validate()
        return dataclasses.asdict(cfg)

    # ------------------------------------------------------------------ control

    @property
    def training(self) -> bool:
        return self.job is not None and not self.job.finished

    def start_training(self, continue_from: bool = False) -> None:
        """Cut the tiles (in a thread), then train in a child process; ``continue_from``
        fine-tunes from the last checkpoint into a new run."""
        s = self.session
        try:
            if s.project is None:
                raise InputError("choose a project folder first (1 · Project and tiles)")
            if self.training or self.cutter.busy:
                raise InputError("training is already running")
            if s.layers.labels() is None:
                raise InputError("no annotations layer: add a training tile and paint glands")
            init = s.project.last_checkpoint() if continue_from else None
            if continue_from and init is None:
                raise InputError("no checkpoint to continue from yet: press Start first")
            config = self.config()
            scheduler = self.where.scheduler()
        except InputError as exc:
            notify(str(exc), "warning")
            s.say(str(exc))
            return
        self.job = None  # the previous run's job (finished) is let go
        project = s.project
        st = project.state
        # What the training set is cut at; the MODEL's geometry (s.geometry) stays the last
        # checkpoint's until the new run writes one.
        st.scale, st.tile = s.train_geometry.scale, s.train_geometry.tile
        st.settings.update(width=self.width_spin.value(), iterations=self.iter_spin.value())
        self._set_training_ui(True)
        self.stop_btn.setEnabled(False)
        self.pause_btn.setEnabled(False)
        self.eta_label.setText("cutting the training tiles…")
        self.warning_label.setVisible(False)

        def launch(n: int) -> None:
            run_dir = project.new_run_dir()
            log.info("training %s (%s) with %s", run_dir, "continue" if init else "new", config)
            trainset = project.root / TRAINSET_FILE
            config["attributes"] = trainset_attributes(trainset)  # tile -> its image's value
            if scheduler is None:
                self.job = TrainingJob(config, trainset, run_dir, init_from=init)
            else:  # a cluster's GPU worker trains; a thread here is its client
                self.job = RemoteTrainingJob(
                    config, trainset, run_dir, init_from=init, scheduler=scheduler
                )
            self.job.start()
            s.training = True
            self._supervised_cfg = bool(config["supervised_only"])
            self._supervised = self._supervised_cfg or n == 0
            self._chart_family(config["family"])
            if continue_from:  # the chart goes on where the last run ended
                self.chart.new_run()
            else:
                self.chart.clear()
            self._pending_its = []
            self._first_it = None  # (iteration, elapsed) of the first step seen: the speed
            self._run_width = int(config["width"])
            self.progress.setRange(0, config["iterations"])
            self.progress.setValue(0)
            self._t_start = time.monotonic()
            self.eta_label.setText("starting the training process…")
            if n == 0 and not config["supervised_only"]:
                s.say("no unlabeled tissue: training is supervised only")
            self._set_training_ui(True)
            self._poll.start()

        def failed(_msg: str) -> None:
            self.eta_label.setText("idle")
            self._set_training_ui(False)

        self.cutter.rebuild(then=launch, failed=failed)

    def _pool_changed(self, n: int) -> None:
        """The set was re-cut: a running trainer reloads it (told through its process's
        event, not the file), and λ means something or not."""
        if self.training:
            self._supervised = self._supervised_cfg or n == 0
            self.job.reload()

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

    def shutdown(self) -> None:
        """napari closes: stop training so that it saves its checkpoint (else killed)."""
        if self.job is not None and not self.job.finished:
            self.job.stop()
            self.job.join(10)
            self.job.kill()

    # ------------------------------------------------------------------ events

    def _poll_training(self) -> None:
        """Drain the training events every 100 ms; redraw the progress and chart at most
        twice a second (each redraw recomposes the window, which is what costs the UI)."""
        if self.job is None:
            return
        s = self.session
        events = self.job.poll()
        self._pending_its += [e for e in events if e["kind"] == "iteration"]
        now = time.monotonic()
        force = self.job.finished or any(e["kind"] not in ("iteration", "log") for e in events)
        if self._pending_its and (force or now - self._last_draw >= 0.5):
            self._last_draw = now
            its, self._pending_its = self._pending_its, []
            for e in its:
                self.chart.add(e, show_lambda=not self._supervised)
            e = its[-1]
            self._measure(its[0], e)
            self.progress.setValue(e["iteration"])
            eta = e.get("eta")
            lo = e["losses"].get("total", float("nan"))
            lam = f" · unlabeled weight {e['lam']:.2f}"
            lam = " · only your painting" if self._supervised else lam
            self.eta_label.setText(
                f"step {e['iteration']} of {e['total']} · loss {lo:.3f}{lam}"
                + (f" · {fmt_time(eta)} left" if eta is not None else "")
            )
        for e in events:
            kind = e["kind"]
            if kind == "log":  # the child's log records, into this session's log file
                child_log.log(int(e.get("level", logging.INFO)), "%s: %s", e["name"], e["message"])
            elif kind == "start":
                s.say(e.get("message", ""))
            elif kind == "warning":
                log.warning("training: %s", e.get("message", ""))
                self.warning_label.setText(f"⚠ {e.get('message', '')}")
                self.warning_label.setVisible(True)
                s.say(f"training: {e.get('message', '')}")
            elif kind == "checkpoint":
                self.checkpoint_saved.emit(str(self.job.run_dir))
            elif kind == "data":
                s.say(f"training picked up the changed tiles at iteration {e['iteration']}")
            elif kind == "paused":
                self.eta_label.setText(f"paused at iteration {e['iteration']} (checkpoint saved)")
            elif kind == "error":
                tb = e.get("traceback")
                log.error("training failed: %s%s", e["message"], f"\n{tb}" if tb else "")
                notify(f"Training failed: {e['message']}", "error")
                s.say(f"training failed: {e['message']}{s.log_hint()}")
            elif kind == "exit":
                log.info("training %s: %s", e["result"], e.get("run_dir"))
                done = e["result"] == "done"
                msg = "training finished" if done else "training stopped; checkpoint saved"
                # the status line, not a pop-up: a napari notification blocks the UI ~0.2 s
                self.eta_label.setText(msg)
                s.say(f"{msg}: predict in 3 · Review, or label more and Continue")
        if self.job.finished:
            self._poll.stop()
            s.training = False
            self._reap(self.job, time.monotonic())
            self._set_training_ui(False)
            self.training_ended.emit(dict(self.job.last or {}))

    def _measure(self, first: dict, last: dict) -> None:
        """Seconds per step of this run (its model size), for the form's time estimate;
        from the trainer's own clock, from the first step seen (not the start-up)."""
        if self._first_it is None:
            self._first_it = (first["iteration"], float(first.get("elapsed", 0.0)))
        it0, t0 = self._first_it
        if last["iteration"] > it0 and float(last.get("elapsed", 0.0)) > t0:
            steps = last["iteration"] - it0
            self._speed[self._run_width] = (float(last["elapsed"]) - t0) / steps
            self.estimate_label.setText(self._estimate())

    def _reap(self, job: TrainingJob | RemoteTrainingJob, since: float) -> None:
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
        self.continue_btn.setEnabled(not running and self.session.checkpoint() is not None)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setText("Pause")
