"""Training in a child process: the GUI stays responsive (no shared GIL) and GPU memory is
returned when the process ends. Qt-free; the widget polls :class:`TrainingJob`.

Signals go through the process's own channels: ``stop``, ``pause`` and ``reload`` events one
way, an event queue the other (progress, warnings, log records, errors with tracebacks)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import traceback
from pathlib import Path
from typing import Any


def _entry(
    config: dict,
    trainset: str,
    run_dir: str,
    resume: bool,
    init_from: str | None,
    q,
    stop,
    pause,
    reload,
) -> None:
    """Child process: train, stream events as dicts, report errors as one readable line
    (with the full traceback in the event, for the GUI's log). The child imports core only
    (tests/test_architecture.py checks it). Its log records travel as 'log' events."""
    _lower_priority()
    _log_to_queue(q)
    try:
        from ..core.errors import InputError
        from ..core.train import TrainConfig, Trainer, TrainingError
        from ..core.trainset import load_trainset, trainset_classes

        path = Path(trainset)
        data = load_trainset(path)
        cfg = TrainConfig.from_dict(config)
        classes = trainset_classes(path)  # a multi-class project's table, cut with its masks
        if classes is not None:
            cfg.classes = classes
        trainer = Trainer(cfg, data, run_dir, resume=resume, init_from=init_from)

        def hook(tr, it: int) -> None:
            # The user added, promoted or rejected tiles: the GUI re-cut the set and set
            # ``reload`` (the file is data only, never a signal): pick it up without a restart.
            if reload.is_set():
                reload.clear()
                tr.replace_data(load_trainset(path))
                q.put(
                    {
                        "kind": "data",
                        "message": "training tiles updated",
                        "iteration": it,
                        "total": tr.config.iterations,
                    }
                )

        result = trainer.run(
            on_event=lambda e: q.put(e.to_dict()), stop=stop, pause=pause, hook=hook
        )
        q.put({"kind": "exit", "result": result, "run_dir": run_dir})
    except (InputError, TrainingError) as exc:
        q.put({"kind": "error", "message": str(exc), "traceback": traceback.format_exc()})
    except Exception as exc:  # noqa: BLE001 - everything must reach the user
        q.put(
            {
                "kind": "error",
                "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )


class _QueueLogHandler(logging.Handler):
    """The child's log records as 'log' events: the GUI writes them to its session log."""

    def __init__(self, q) -> None:
        super().__init__(logging.INFO)
        self.q = q

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.q.put(
                {"kind": "log", "level": record.levelno, "name": record.name, "message": msg}
            )
        except Exception:  # noqa: BLE001 - logging must never stop training
            self.handleError(record)


def _log_to_queue(q) -> None:
    root = logging.getLogger()
    root.addHandler(_QueueLogHandler(q))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _lower_priority(pid: int = 0) -> None:
    """Let the GUI win the CPU: on a desktop with few cores the training threads would
    otherwise slow napari's drawing (measured in docs/benchmarks.md). Training loses little,
    since the GUI is idle most of the time. Sets niceness 10 (absolute, so calling it from
    the parent right after the start and again in the child does not stack)."""
    with contextlib.suppress(AttributeError, OSError):  # no setpriority on Windows
        if os.getpriority(os.PRIO_PROCESS, pid) < NICENESS:
            os.setpriority(os.PRIO_PROCESS, pid, NICENESS)


NICENESS = 10


class JobControls:
    """The dock's controls of a training, the same for a local child process and a remote
    worker: three flags (``_stop``, ``_pause``, ``_reload``: multiprocessing or threading
    events) that the trainer's side polls between steps."""

    _stop: Any
    _pause: Any
    _reload: Any
    _q: Any  # the events queue
    finished: bool
    last: dict[str, Any] | None

    def reload(self) -> None:
        """The training set file was re-cut: the trainer takes it before its next step."""
        self._reload.set()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    def stop(self) -> None:
        """Ask for a clean stop: the trainer saves a checkpoint (which, for a remote one,
        comes home), then ends."""
        self._stop.set()
        self._pause.clear()

    def _drain(self, max_events: int) -> list[dict[str, Any]]:
        """The pending events of ``self._q`` (non-blocking); ``finished`` / ``last`` follow."""
        out: list[dict[str, Any]] = []
        for _ in range(max_events):
            try:
                out.append(self._q.get_nowait())
            except queue_mod.Empty:
                break
        for ev in out:
            if ev["kind"] in ("exit", "error"):
                self.finished = True
            self.last = ev
        return out


class TrainingJob(JobControls):
    """Start / pause / resume / stop a training process and collect its events."""

    def __init__(
        self,
        config: dict,
        trainset: str | Path,
        run_dir: str | Path,
        *,
        resume: bool = False,
        init_from: str | Path | None = None,
    ) -> None:
        ctx = mp.get_context("spawn")  # fork would copy Qt and torch state into the child
        self._q = ctx.Queue()
        self._stop = ctx.Event()
        self._pause = ctx.Event()
        self._reload = ctx.Event()
        self.run_dir = Path(run_dir)
        self._proc = ctx.Process(
            target=_entry,
            args=(
                config,
                str(trainset),
                str(run_dir),
                resume,
                None if init_from is None else str(init_from),
                self._q,
                self._stop,
                self._pause,
                self._reload,
            ),
            daemon=True,
            name="semimoe-training",
        )
        self.finished = False
        self.last: dict[str, Any] | None = None

    def start(self) -> None:
        self._proc.start()
        # At once, from here: the child's interpreter start-up and imports (torch) take a
        # second of CPU before its own call could lower its priority.
        _lower_priority(self._proc.pid)

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def poll(self, max_events: int = 1000) -> list[dict[str, Any]]:
        """Drain pending events (non-blocking). A process that died without saying so
        yields an 'error' event; the last good checkpoint is still on disk."""
        out = self._drain(max_events)
        if not out and not self.finished and self._proc.exitcode is not None:
            self.finished = True
            out.append(
                {
                    "kind": "error",
                    "message": (
                        "the training process ended unexpectedly (exit code "
                        f"{self._proc.exitcode}); the last good checkpoint was kept"
                    ),
                }
            )
        return out

    def join(self, timeout: float | None = None) -> None:
        self._proc.join(timeout)
