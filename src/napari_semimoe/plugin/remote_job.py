"""A training on a cluster's GPU worker, driven from a thread of this process: the same
interface and events as :class:`.training_process.TrainingJob`, so the Train page polls it
alike.

Not a child process, unlike a local training: here nothing heavy runs (the worker trains;
this thread only polls two dask queues and writes the checkpoints that come home, through
the run folder it locks), and a spawned interpreter would spend seconds importing torch
before the first event. Qt-free; its log records go to the session's log directly."""

from __future__ import annotations

import queue as queue_mod
import threading
import traceback
from pathlib import Path
from typing import Any

from .training_process import JobControls


class RemoteTrainingJob(JobControls):
    """Start / pause / resume / stop a remote training and collect its events."""

    def __init__(
        self,
        config: dict,
        trainset: str | Path,
        run_dir: str | Path,
        *,
        scheduler: str,
        resume: bool = False,
        init_from: str | Path | None = None,
    ) -> None:
        self._q: queue_mod.Queue[dict[str, Any]] = queue_mod.Queue()
        self._stop, self._pause, self._reload = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.run_dir = Path(run_dir)
        self.scheduler = scheduler
        self._args = (config, Path(trainset), resume, init_from)
        self._thread = threading.Thread(
            target=self._main, name="semimoe-remote-training", daemon=True
        )
        self.finished = False
        self.last: dict[str, Any] | None = None

    def _main(self) -> None:
        from ..core.errors import InputError
        from ..core.train import TrainingError

        try:
            result = self._train()
            self._q.put({"kind": "exit", "result": result, "run_dir": str(self.run_dir)})
        except (InputError, TrainingError) as exc:
            self._q.put({"kind": "error", "message": str(exc), "traceback": traceback.format_exc()})
        except Exception as exc:  # noqa: BLE001 - everything must reach the user
            self._q.put(
                {
                    "kind": "error",
                    "message": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )

    def _train(self) -> str:
        from ..core.remote import RemoteTraining, connect
        from ..core.runfolder import RunFolder
        from ..core.train import TrainConfig
        from ..core.trainset import load_trainset

        config, path, resume, init_from = self._args

        def fresh():
            if not self._reload.is_set():
                return None
            self._reload.clear()
            return load_trainset(path)

        def message(msg: dict) -> None:
            if msg.get("kind") == "data":
                self._q.put(msg)

        client = connect(self.scheduler)
        try:
            with RunFolder(self.run_dir).lock(create=not resume) as folder:
                job = RemoteTraining(
                    client,
                    TrainConfig.from_dict(config),
                    load_trainset(path),
                    folder,
                    resume=resume,
                    init_from=init_from,
                )
                return job.run(
                    on_event=lambda e: self._q.put(e.to_dict()),
                    stop=self._stop,
                    pause=self._pause,
                    reload=fresh,
                    on_message=message,
                )
        finally:
            client.close()

    def start(self) -> None:
        self._thread.start()

    def kill(self) -> None:
        """A thread cannot be killed: stop (the worker stops after its iteration)."""
        self.stop()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def poll(self, max_events: int = 1000) -> list[dict[str, Any]]:
        """Drain pending events (non-blocking), as TrainingJob.poll."""
        return self._drain(max_events)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
