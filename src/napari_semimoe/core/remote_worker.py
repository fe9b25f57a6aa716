"""The worker's side of a remote training (:mod:`.remote`): the dask task that trains into a
temporary folder on the worker and streams the trainer's events and files home, and the
thread that mirrors the client's stop / pause / new training set into the trainer."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig
from .errors import InputError
from .runfolder import RunFolder
from .train import ProgressEvent, TrainingError

log = logging.getLogger(__name__)

#: Seconds without a word from the client (no heartbeat) after which the worker stops.
CLIENT_GONE = 60.0
#: Seconds between two looks at a queue (each look is one round trip to the scheduler).
POLL = 0.1
#: Events that save the checkpoint (their files come home before them).
_SAVING = ("checkpoint", "stopped", "paused")


class _Control:
    """The worker's end of the control queue: a thread mirrors stop / pause into the
    trainer's flags and keeps a new training set for the next iteration."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.stop, self.pause = threading.Event(), threading.Event()
        self.data: Any = None
        self._done = threading.Event()
        self._heard = time.monotonic()
        self._thread = threading.Thread(target=self._listen, name="semimoe-control", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._done.wait(POLL):
            try:
                msgs = self.queue.get(batch=True)
            except Exception:  # noqa: BLE001 - a blip, or the client is gone: the heartbeat says
                msgs = []
            if time.monotonic() - self._heard > CLIENT_GONE:
                if not self.stop.is_set():
                    log.warning("no word from the client: stopping (the checkpoint is saved)")
                self.stop.set()
                self.pause.clear()
            for msg in msgs:
                self._heard = time.monotonic()
                if isinstance(msg, dict):
                    (self.pause.set if msg.get("pause") else self.pause.clear)()
                    if msg.get("stop"):
                        self.stop.set()
                else:  # a future of a new training set
                    self.data = msg

    def close(self) -> None:
        self._done.set()
        self._thread.join(2.0)


class _Forward(logging.Handler):
    """The task thread's log records, as 'log' messages to the client."""

    def __init__(self, put: Callable[[dict], None]) -> None:
        super().__init__(logging.INFO)
        self.put, self.thread = put, threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.put({"kind": "log", "level": record.levelno, "name": record.name, "message": msg})
        except Exception:  # noqa: BLE001 - logging never stops training
            self.handleError(record)


def train_on_worker(
    job: str,
    config: dict,
    payload: dict[str, Any],
    resume: bool,
) -> str:
    """The task: train into a temporary folder here, stream events and files home.
    ``payload``: the training set, the run's files (a resume) and the init checkpoint."""
    import gc

    import torch
    from distributed import Queue, get_client, get_worker

    from .train import Trainer

    client, worker = get_client(), get_worker()
    events = Queue(f"{job}-events", client=client)
    control = _Control(Queue(f"{job}-control", client=client))

    def put(msg) -> None:
        try:
            events.put(msg)
        except Exception:  # noqa: BLE001 - the client is gone: stop, keep what was saved
            control.stop.set()
            control.pause.clear()

    put({"kind": "remote", "worker": worker.address, "host": socket.gethostname()})
    forward = _Forward(put)
    pkg = logging.getLogger("napari_semimoe")
    pkg.addHandler(forward)
    tmp = Path(tempfile.mkdtemp(prefix="semimoe-remote-", dir=worker.local_directory))
    run = tmp / "run"
    trainer = None
    try:
        run.mkdir()
        for name, blob in payload["files"].items():
            (run / name).write_bytes(blob)
        init = None
        if payload["init_from"] is not None:
            init = tmp / "init.safetensors"
            init.write_bytes(payload["init_from"])
        data = payload["data"]
        if payload.get("pause"):
            control.pause.set()
        if payload.get("stop"):
            control.stop.set()
        trainer = Trainer(TrainConfig.from_dict(config), data, run, resume=resume, init_from=init)
        shipped: set[str] = set()

        def on_event(ev: ProgressEvent) -> None:
            d = ev.to_dict()
            if ev.kind == "start":
                d["config_json"] = trainer.folder.config_path.read_text()
            elif ev.kind == "iteration":
                d["record"] = trainer.history[-1]
            if ev.kind in _SAVING:
                # A list of one: a dict would be scattered value by value.
                files = [_saved_files(trainer.folder, shipped)]
                put(client.scatter(files, direct=True, workers=[worker.address], hash=False)[0])
            put(d)

        def hook(tr, it: int) -> None:
            fut, control.data = control.data, None
            if fut is not None:
                tr.replace_data(fut.result())
                put({"kind": "data", "message": "training tiles updated", "iteration": it,
                     "total": tr.config.iterations})  # fmt: skip

        result = trainer.run(on_event=on_event, stop=control.stop, pause=control.pause, hook=hook)
        put({"kind": "exit", "result": result})
        return result
    except BaseException as exc:
        kind = {InputError: "input", TrainingError: "training"}.get(
            next((t for t in (InputError, TrainingError) if isinstance(exc, t)), None), ""
        )
        message = str(exc) if kind else f"{type(exc).__name__}: {exc}"
        put({"kind": "error", "type": kind, "message": message, "run": str(run),
             "traceback": traceback.format_exc()})  # fmt: skip
        if not kind:  # a bug: the worker's log gets the traceback too
            raise
        return "failed"  # said to the client, in its one line
    finally:
        trainer = payload = None  # the GPU's memory goes back to the worker's next task
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        pkg.removeHandler(forward)
        control.close()
        for q in (events, control.queue):  # the client's handles keep them until read
            with contextlib.suppress(Exception):
                q.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _saved_files(folder: RunFolder, shipped: set[str]) -> dict[str, bytes]:
    """What a save wrote: the checkpoint, history.json and the snapshots not yet sent."""
    out = {
        "history.json": folder.history_path.read_bytes(),
        CHECKPOINT_NAME: folder.checkpoint_path.read_bytes(),
    }
    if folder.snapshot_dir.is_dir():
        for p in sorted(folder.snapshot_dir.iterdir()):
            name = f"snapshots/{p.name}"
            if p.suffix == ".safetensors" and name not in shipped:
                out[name] = p.read_bytes()
                shipped.add(name)
    return out
