"""Training on a dask.distributed worker with the ``GPU`` resource, its run folder at home.

The run folder stays on this computer and stays locked here (:class:`RunFolder`) for the
whole run; the worker trains into a temporary folder of its own with the ordinary
:class:`~.train.Trainer` and sends home what a local run would have written:

- the training set and the settings go out as data (a scattered :class:`TrainingSet` and a
  config dict), never as local paths; a resume also ships the checkpoint, history.json and
  log.jsonl of the local folder (trimmed to the checkpoint here first, as a local resume);
- the trainer's own event dicts (:meth:`ProgressEvent.to_dict`) come back through a
  distributed ``Queue``, with each iteration's log record (appended to log.jsonl here);
- each checkpoint (and any new snapshot, and history.json) comes home as a scattered future
  put in the queue just before the event that announced it, fetched straight from the
  worker (not through the scheduler: a width-64 checkpoint is 0.8 GB) and written here
  atomically in the trainer's order (snapshots, history.json, checkpoint);
- stop, pause and a new training set go the other way through a second queue, read by a
  thread on the worker that the trainer's flags mirror; that queue also carries a heartbeat:
  a worker that hears nothing for :data:`CLIENT_GONE` seconds stops (and saves), so a run
  whose client died does not hold the GPU for ever.

The worker's side (the task, its control thread) is :mod:`.remote_worker`.

A lost worker is one line (:class:`~.train.TrainingError`) and the last checkpoint that
came home stays as it was. Dask would run a lost task again elsewhere; a second start of the
same job is treated as the loss it is, not as a new run that would overwrite the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig
from .data import TrainingSet
from .errors import InputError
from .logs import FILE_ONLY
from .remote_worker import CLIENT_GONE, POLL, train_on_worker
from .runfolder import RunFolder
from .train import Flag, ProgressEvent, TrainingError, resumed_config

log = logging.getLogger(__name__)

#: The dask resource a training task asks for (``dask worker ADDR --resources GPU=1``).
GPU = "GPU"
#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for a worker with the GPU resource before saying there is none.
WORKER_TIMEOUT = 30.0
#: Seconds between the client's heartbeats (a worker that hears none for CLIENT_GONE stops).
HEARTBEAT = 2.0


def no_gpu_worker(address: str) -> str:
    return (
        f"no worker with the {GPU} resource at {address}: start one with "
        f"`dask worker {address} --resources {GPU}=1`"
    )


def connect(address: str, timeout: float | None = None):
    """A dask client of the scheduler at ``address``; unreachable within ``timeout`` seconds
    (default :data:`CONNECT_TIMEOUT`): one-line InputError."""
    from distributed import Client

    try:
        return Client(
            address, timeout=CONNECT_TIMEOUT if timeout is None else timeout, set_as_default=False
        )
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the dask scheduler at {address} ({exc})") from None


def gpu_workers(client) -> list[str]:
    """The addresses of the scheduler's workers that have the GPU resource now."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [a for a, w in workers.items() if (w.get("resources") or {}).get(GPU, 0) >= 1]


def wait_for_gpu_worker(client, timeout: float | None = None) -> list[str]:
    """The addresses of the workers that have the GPU resource, waiting up to ``timeout``
    seconds (default :data:`WORKER_TIMEOUT`) for one to join; none: the one-line InputError
    that says how to start one."""
    deadline = time.monotonic() + (WORKER_TIMEOUT if timeout is None else timeout)
    while True:
        found = gpu_workers(client)
        if found:
            return found
        if time.monotonic() >= deadline:
            raise InputError(no_gpu_worker(client.scheduler.address))
        time.sleep(0.25)


class RemoteTraining:
    """One run trained on a GPU worker of ``client`` into the locked local ``folder``.

    It answers what the CLI asks of a :class:`~.train.Trainer` (``config``, ``iteration``,
    ``elapsed``, ``run(on_event, stop, pause)``), so that the CLI's progress bar, messages
    and Ctrl-C work alike for both. ``folder`` must be held by the caller."""

    def __init__(
        self,
        client,
        config: TrainConfig,
        data: TrainingSet,
        folder: RunFolder,
        *,
        resume: bool = False,
        init_from: str | Path | None = None,
        worker_timeout: float | None = None,
    ) -> None:
        if not folder.held:
            raise RuntimeError(f"{folder.path}: a remote run needs its folder held")
        config.validate()
        self.client, self.config, self.data, self.folder = client, config, data, folder
        self.resume = resume
        self.iteration, self.elapsed = 0, 0.0
        self.worker: str | None = None
        self.files: dict[str, bytes] = {}
        #: The iteration of the last checkpoint that came home (None: none yet).
        self.saved: int | None = None
        self._said_waiting = False  # "waiting for a GPU worker", said once
        self._none_since: float | None = None  # since when no GPU worker is left
        if resume:
            meta = folder.checkpoint_meta()
            if meta is None:
                raise InputError(f"{folder.checkpoint_path}: not a readable checkpoint")
            # What the worker's trainer will train with (the CLI's bar shows its total).
            self.config = config = resumed_config(meta["config"], config)
            self.iteration = int(meta["state"]["iteration"])
            self.elapsed = float(meta["state"].get("elapsed", 0.0))
            # The iterations after the checkpoint are trained again: as a local resume.
            folder.trim_log(self.iteration)
            for name in (CHECKPOINT_NAME, "history.json", "log.jsonl"):
                p = folder.path / name
                if p.is_file():
                    self.files[name] = p.read_bytes()
        else:
            folder.prepare_new_run()
        self.init_from = None if init_from is None else Path(init_from).read_bytes()
        self.workers = wait_for_gpu_worker(client, worker_timeout)
        self.job = f"semimoe-train-{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        on_event: Callable[[ProgressEvent], None] | None = None,
        stop: Flag | None = None,
        pause: Flag | None = None,
        reload: Callable[[], TrainingSet | None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> str:
        """Train on the worker until done or stopped; returns 'done' or 'stopped'.

        ``stop`` and ``pause`` are polled here and forwarded; ``reload`` is asked every turn
        for a new training set (None: no change); ``on_message`` gets the other messages
        ('remote': which worker, 'data': the worker took the new set)."""
        from distributed import Queue

        emit = on_event or (lambda e: None)
        other = on_message or (lambda m: None)
        client = self.client
        events = Queue(f"{self.job}-events", client=client)
        control = Queue(f"{self.job}-control", client=client)
        # Straight to the GPU workers, not through the scheduler (a resume's checkpoint of a
        # width-64 model is 0.8 GB); a list of one, as a dict would be scattered by value.
        payload = {"data": self.data, "files": self.files, "init_from": self.init_from}
        # A Pause or Stop pressed before the worker starts holds from its first step (the
        # control queue is read by a thread that may first look after a step has run).
        payload["pause"] = bool(pause and pause.is_set())
        payload["stop"] = bool(stop and stop.is_set())
        data = self._scatter(payload)
        future = client.submit(
            train_on_worker,
            self.job,
            _config_dict(self.config),
            data,
            self.resume,
            key=self.job,
            resources={GPU: 1},
            pure=False,
        )
        log_fh = self.folder.open_log()
        sent: tuple[bool, bool] | None = None
        beat = 0.0
        alive_check = started = time.monotonic()
        try:
            while True:
                want = (bool(stop and stop.is_set()), bool(pause and pause.is_set()))
                now = time.monotonic()
                if want != sent or now - beat >= HEARTBEAT:
                    control.put({"stop": want[0], "pause": want[1]})
                    sent, beat = want, now
                new = reload() if reload is not None else None
                if new is not None:
                    control.put(self._scatter(new))
                if now - alive_check >= 1.0:
                    alive_check = now
                    if self.worker is None:
                        self._waiting(now - started)
                    elif self.worker not in client.nthreads():
                        raise self._lost()
                # Polled, not a blocking get: the scheduler logs every get that times out.
                msgs = events.get(batch=True)
                for msg in msgs:
                    result = self._handle(msg, log_fh, emit, other)
                    if result is not None:
                        return result
                if not msgs:
                    if future.done() and not events.qsize():
                        raise self._ended(future)
                    time.sleep(POLL)
        except BaseException:
            # Ctrl-C twice, a lost worker, an error: the worker must not train on alone.
            with contextlib.suppress(Exception):
                control.put({"stop": True, "pause": False})
            raise
        finally:
            with contextlib.suppress(OSError):
                log_fh.close()
            with contextlib.suppress(Exception):
                future.cancel()
            for q in (events, control):
                with contextlib.suppress(Exception):
                    q.close()
            data.release()

    def _waiting(self, waited: float) -> None:
        """Not started yet: the GPU workers are busy (the run waits), or none is left."""
        now = time.monotonic()
        if gpu_workers(self.client):
            self._none_since = None
        elif self._none_since is None:
            self._none_since = now
        elif now - self._none_since >= WORKER_TIMEOUT:
            raise InputError(no_gpu_worker(self.client.scheduler.address))
        if waited >= 15 and not self._said_waiting:
            self._said_waiting = True
            log.warning("waiting for a GPU worker (busy with another job, or still starting)")

    def _scatter(self, obj):
        return self.client.scatter([obj], direct=True, workers=self.workers, hash=False)[0]

    def _handle(self, msg, log_fh, emit, other) -> str | None:
        from distributed import Future

        if isinstance(msg, Future):  # the files of the checkpoint event that follows
            try:
                files = self.client.gather(msg, direct=True)
            except Exception:  # noqa: BLE001 - the worker went with its data
                raise self._lost() from None
            finally:
                msg.release()
            self._write_files(files)
            return None
        kind = msg.get("kind")
        if kind == "remote":
            if self.worker is not None:  # dask started the job again elsewhere
                raise self._lost()
            self.worker = msg["worker"]
            log.info("training on the worker %s (%s)", self.worker, msg.get("host", "?"))
            other(msg)
        elif kind == "log":
            level = int(msg.get("level", logging.INFO))
            extra = {FILE_ONLY: True} if level < logging.WARNING else {}
            log.log(level, "worker: %s: %s", msg["name"], msg["message"], extra=extra)
        elif kind == "error":
            tb = msg.get("traceback", "")
            if msg.get("run"):  # the worker's temporary folder is this run folder here
                msg["message"] = msg["message"].replace(msg["run"], str(self.folder.path))
            log.error("the worker failed: %s\n%s", msg["message"], tb, extra={FILE_ONLY: True})
            if msg.get("type") == "input":
                raise InputError(msg["message"])
            if msg.get("type") == "training":
                raise TrainingError(msg["message"])
            raise TrainingError(f"on the worker: {msg['message']}; {self.last_good()}")
        elif kind == "exit":
            return msg["result"]
        elif kind in ("data",):
            other(msg)
        else:
            if kind == "start" and msg.get("config_json"):
                self.folder.write_config(json.loads(msg.pop("config_json")))
            rec = msg.pop("record", None)
            if rec is not None:  # the trainer's log.jsonl line, as the worker wrote it
                log_fh.write(json.dumps(rec) + "\n")
                log_fh.flush()
            ev = ProgressEvent(**msg)
            self.iteration, self.elapsed = ev.iteration, ev.elapsed
            emit(ev)
        return None

    def _write_files(self, files: dict[str, bytes]) -> None:
        """The trainer's order: snapshots, then history.json, then the checkpoint."""
        order = sorted(files, key=lambda n: (n == CHECKPOINT_NAME, n == "history.json", n))
        for name in order:
            try:
                self.folder.write_file(name, files[name])
            except OSError as exc:
                raise TrainingError(
                    f"could not write {self.folder.path / name} ({exc.strerror or exc}); "
                    f"{self.last_good()}"
                ) from None
        if CHECKPOINT_NAME in files:
            self.saved = self.folder.checkpoint_iteration()

    def last_good(self) -> str:
        it = self.saved if self.saved is not None else self.folder.checkpoint_iteration()
        if it is None:
            return "no checkpoint had come home yet"
        where = self.folder.checkpoint_path
        return f"the last checkpoint that came home, {where} (iteration {it}), was kept"

    def _lost(self) -> TrainingError:
        return TrainingError(
            f"the worker {self.worker or '?'} training this run was lost; {self.last_good()}"
        )

    def _ended(self, future) -> TrainingError:
        """The task ended without its last word: its worker went (its data with it, so dask
        cancels the task), or the task itself failed outside the trainer."""
        with contextlib.suppress(Exception):
            if self.worker is not None and self.worker not in self.client.nthreads():
                return self._lost()
        try:
            future.result(timeout=5)
        except Exception as exc:  # noqa: BLE001 - said in one line
            if type(exc).__name__ in ("KilledWorker", "FutureCancelledError"):
                return self._lost()
            return TrainingError(f"the remote training failed ({type(exc).__name__}: {exc})")
        return TrainingError("the remote training ended without a word; " + self.last_good())


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


__all__ = [
    "CLIENT_GONE",
    "GPU",
    "WORKER_TIMEOUT",
    "RemoteTraining",
    "connect",
    "gpu_workers",
    "no_gpu_worker",
    "wait_for_gpu_worker",
]
