"""A training run's folder: the one owner of its files, its lock and its clean-up.

    RUN/
      .lock                     held by the process that writes the run (its pid and host)
      config.json               the run's settings (+ where its data lives, for a resume)
      split.json                the labeled and unlabeled image names
      checkpoint.safetensors    weights, optimiser and RNG state, training state
      history.json              the losses of every iteration, up to the checkpoint or beyond
      log.jsonl                 the same records, one line per iteration as it happens
      train.log                 the package's log while the folder is held, with the full
                                traceback of any failure (see :mod:`.logs`)
      snapshots/iter_NNNNNNN.safetensors   weights kept every ``snapshot_every`` iterations

Every writer (the CLI, the plugin's training process, through :class:`~.train.Trainer`)
takes the lock first, so two trainings can never mix their files in one folder. The lock is
an OS advisory lock (``flock``), which the kernel drops when its process dies, even by
``kill -9``: a stale ``.lock`` file never blocks a resume. Whoever holds the lock removes
the temp files that interrupted atomic writes left behind.

The module is longer than most (about 600 lines) because it is the one place that knows
these files: the lock, the clean-up, the JSON files, the log and the resume rules all work
on the same paths, and splitting them would give the folder several owners again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .atomic import (
    LEGACY_TEMP_PATTERN,
    TEMP_PATTERN,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from .checkpoint import CHECKPOINT_NAME
from .errors import CheckpointError, InputError, plural
from .logs import attach_file_log, detach_file_log, log_failure
from .validate import geometry_problem, is_int, is_number

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
TRAIN_LOG_NAME = "train.log"
#: The files the run folder's writers replace atomically (their temp files are ours).
_ROOT_FILES = {CHECKPOINT_NAME, "config.json", "split.json", "history.json", "log.jsonl"}
_SNAPSHOT = re.compile(r"^iter_\d{6,}\.safetensors$")


#: Settings a resume may change: they decide how this invocation runs, not what the run
#: learns. Every other setting is the run's own; a resume that gives one is refused.
RESUME_SETTINGS = (
    "iterations",
    "data",
    "device",
    "threads",
    "compile",
    "checkpoint_every",
    "snapshot_every",
)


class RunFolderBusy(InputError):
    """Another process is writing this run folder."""


@dataclass
class ResumePlan:
    """What a resume trains on, checked before any image is read.

    ``unlabeled`` is None where split.json was damaged: the unlabeled images are then the
    data folders' images that are not labeled (as the run was started). ``recovered`` says,
    one line each, what was damaged and where it was recovered from."""

    settings: dict[str, Any]
    labeled: list[str]
    unlabeled: list[str] | None
    done: int
    iterations: int
    data_dir: Path
    unlabeled_dirs: list[str]
    recovered: list[str] = field(default_factory=list)


def settings_problem(doc: Any) -> str | None:
    """What is wrong with a run's settings (config.json, or the checkpoint's copy): each
    setting must have its type, the geometry must be one, the whole must validate."""
    from .config import TrainConfig

    if not isinstance(doc, dict):
        return "not a JSON object"
    if not isinstance(doc.get("geometry"), dict):
        return "no working geometry in it"
    geo = doc["geometry"]
    bad = geometry_problem(geo.get("scale", 1.0), geo.get("input_size"), geo.get("tile", 256))
    if bad:
        return f"geometry: {bad}"
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in doc or f.name == "geometry":
            continue
        v, d = doc[f.name], getattr(defaults, f.name)
        if d is None:
            ok = v is None or is_int(v)
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = is_int(v)
        elif isinstance(d, float):
            ok = is_number(v)
        else:
            ok = isinstance(v, type(d))
        if not ok:
            return f"{f.name} is {v!r}"
    if "_data" in doc and not isinstance(doc["_data"], str):
        return f"_data is {doc['_data']!r}"
    dirs = doc.get("_unlabeled_dirs", [])
    if not (isinstance(dirs, list) and all(isinstance(d, str) for d in dirs)):
        return f"_unlabeled_dirs is {dirs!r}"
    try:
        TrainConfig.from_dict(doc).validate()
    except InputError as exc:
        return str(exc)
    return None


def _names(v: Any) -> list[str] | None:
    return v if isinstance(v, list) and all(isinstance(n, str) for n in v) else None


def _try_lock(fh: IO[str]) -> bool:
    """Take an exclusive, non-blocking advisory lock on the open file; False if held."""
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except PermissionError:  # some file systems answer a held lock with EACCES
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


class RunFolder:
    """The files of one run, and the lock that makes one process at a time their writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None
        self._created = False
        self._log_handler: Any = None
        self._keep_log = False

    # ------------------------------------------------------------------ paths

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def split_path(self) -> Path:
        return self.path / "split.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def train_log_path(self) -> Path:
        return self.path / TRAIN_LOG_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    @property
    def snapshot_dir(self) -> Path:
        return self.path / "snapshots"

    def snapshot_path(self, iteration: int) -> Path:
        return self.snapshot_dir / f"iter_{iteration:06d}.safetensors"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, locked={self.held})"

    # ------------------------------------------------------------------ the lock

    @property
    def held(self) -> bool:
        """Whether this object holds the folder's lock."""
        return self._lock_file is not None

    def lock(self, *, create: bool = True) -> RunFolder:
        """Become the folder's only writer (at once, or :class:`RunFolderBusy` naming the
        holder), then remove the temp files of interrupted writes. ``create`` makes the
        folder if it does not exist (a new run); otherwise a missing folder is an error."""
        if self._lock_file is not None:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} is a file, not a run folder")
        if not self.path.is_dir():
            if not create:
                raise CheckpointError(f"{self.path}: no such run folder")
            try:
                self.path.mkdir(parents=True)
                self._created = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise InputError(
                    f"{self.path}: cannot create the run folder ({exc.strerror})"
                ) from None
        for _ in range(20):
            try:
                fh = open(self.lock_path, "a+")  # noqa: SIM115 - held open while locked
            except OSError as exc:
                raise InputError(
                    f"{self.path}: cannot write to the run folder ({exc.strerror})"
                ) from None
            if not _try_lock(fh):
                holder = ""
                with contextlib.suppress(OSError):
                    fh.seek(0)
                    holder = fh.read().strip()
                fh.close()
                self._forget_created()
                who = holder or "holder unknown"
                raise RunFolderBusy(
                    f"{self.path} is being written by another training ({who}); wait for it "
                    "to end or stop it, or use another run folder"
                )
            # A holder that releases removes the lock file: make sure that the file locked
            # here is still the one at the path, or another process could lock a new one.
            try:
                st = os.stat(self.lock_path)
                mine = os.fstat(fh.fileno())
                same = (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        else:  # pragma: no cover - twenty lost races in a row
            raise RunFolderBusy(f"{self.path}: could not lock the run folder; try again")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        fh.flush()
        self._lock_file = fh
        # Whoever holds the folder logs to its train.log; a log that this holder started
        # in a folder that ends up holding no run (a start refused for bad input) goes.
        self._keep_log = self.train_log_path.exists()
        self._log_handler = attach_file_log(self.train_log_path)
        log.debug("%s: held by pid %d on %s", self.path, os.getpid(), socket.gethostname())
        self.clean_temp_files()
        return self

    def _forget_created(self) -> None:
        if self._created:
            self._created = False
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def unlock(self) -> None:
        """Let go of the lock; a folder this object created and nothing was written to goes."""
        fh, self._lock_file = self._lock_file, None
        if fh is None:
            return
        try:
            handler, self._log_handler = self._log_handler, None
            if handler is not None:
                detach_file_log(handler)
                if not self._keep_log and not self._holds_run():
                    self.train_log_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.lock_path.unlink()  # while still held, see lock()
            self._forget_created()
        finally:
            fh.close()

    def _holds_run(self) -> bool:
        names = (CHECKPOINT_NAME, "config.json", "split.json", "history.json", "log.jsonl")
        return any((self.path / n).exists() for n in names) or self.snapshot_dir.is_dir()

    def log_failure(self, exc: BaseException) -> None:
        """Log why the holder stops: Ctrl-C in a line, anything else with its traceback in
        train.log. A failure that is not a user mistake keeps the log even where the
        folder holds no run yet: the traceback is what a bug report needs."""
        if not self.held:
            return
        if isinstance(exc, KeyboardInterrupt):
            log.info("%s: interrupted (%s)", self.path, type(exc).__name__)
            return
        log_failure(log, f"{self.path}: failed: {type(exc).__name__}: {exc}", exc)
        if not isinstance(exc, InputError):
            self._keep_log = True

    def __enter__(self) -> RunFolder:
        return self.lock()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.log_failure(exc)
        self.unlock()

    def _require_lock(self) -> None:
        if self._lock_file is None:
            raise RuntimeError(f"{self.path}: written without holding its lock")

    def clean_temp_files(self) -> list[Path]:
        """Remove what interrupted atomic writes left (only the temp files of this folder's
        own files, only while the lock says that no write is under way). Returns them.

        Under the lock every writer of these files is known to be gone, so the pid in a
        temp name need not be asked (it may have been reused), and the names of older
        versions (without a pid) are recognised too."""
        self._require_lock()
        gone = []
        for folder, ours in ((self.path, _ROOT_FILES.__contains__), (self.snapshot_dir, None)):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = TEMP_PATTERN.match(p.name) or LEGACY_TEMP_PATTERN.match(p.name)
                if not m or not p.is_file():
                    continue
                name = m.group("name")
                if (ours is not None and ours(name)) or (ours is None and _SNAPSHOT.match(name)):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        gone.append(p)
        if gone:
            log.info("%s: removed %d temp files of interrupted writes", self.path, len(gone))
        return gone

    # ------------------------------------------------------------------ contents

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def checkpoint_meta(self) -> dict[str, Any] | None:
        """The checkpoint's metadata (config, state), from its header alone; None if it
        cannot be read (reading the checkpoint proper then says what is wrong)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.checkpoint_path), framework="pt", device="cpu") as f:
                meta = json.loads((f.metadata() or {})["json"])["meta"]
            int(meta["state"]["iteration"])
            return meta if isinstance(meta.get("config"), dict) else None
        except Exception:  # noqa: BLE001 - any damage: the full read reports it
            return None

    def checkpoint_iteration(self) -> int | None:
        """The iteration the checkpoint holds (None if its header cannot be read)."""
        meta = self.checkpoint_meta()
        return None if meta is None else int(meta["state"]["iteration"])

    def read_json(self, name: str) -> Any:
        """A JSON file of the run; damage is one line that names the file."""
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: {name} is missing") from None
        except PermissionError:
            raise CheckpointError(f"{p}: permission denied") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{p} is damaged ({exc})") from None

    def write_json(self, name: str, obj: Any) -> None:
        self._require_lock()
        atomic_write_json(self.path / name, obj)

    def write_file(self, name: str, data: bytes) -> None:
        """Write one of the run's own files whole (the checkpoint, history.json, a snapshot),
        as another writer made it: a remote trainer's files come home through here. Any
        other name is refused, so that bytes from elsewhere cannot land outside the run."""
        self._require_lock()
        top, _, rest = name.partition("/")
        if not (name in _ROOT_FILES or (top == "snapshots" and _SNAPSHOT.match(rest))):
            raise ValueError(f"{name!r} is not a file of a run folder")
        if top == "snapshots":
            self.snapshot_dir.mkdir(exist_ok=True)
        atomic_write_bytes(self.path / name, data)

    def write_config(self, settings: dict[str, Any]) -> None:
        """Write config.json: the run's settings, keeping what callers recorded beside them
        (keys starting with ``_``, e.g. the CLI's data folders), so that no moment exists
        at which a kill leaves the settings without them."""
        self._require_lock()
        doc = dict(settings)
        try:
            old = json.loads(self.config_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            old = None
        if isinstance(old, dict):
            doc.update({k: v for k, v in old.items() if k.startswith("_") and k not in doc})
        atomic_write_json(self.config_path, doc)

    def read_history(self, upto: int) -> list[dict[str, Any]]:
        """The loss history up to iteration ``upto``: history.json, or, where it is missing
        or damaged, what log.jsonl holds."""
        try:
            hist = json.loads(self.history_path.read_text())
            return [h for h in hist if int(h["iteration"]) <= upto]
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            log.warning("%s is damaged; the loss history is read from log.jsonl", self.history_path)
        return self._log_records(upto)

    def _log_records(self, upto: int) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = []
        try:
            lines = self.log_path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return recs
        for line in lines:
            try:
                rec = json.loads(line)
                it = int(rec["iteration"])
            except (ValueError, TypeError, KeyError):
                break  # a line cut short by a kill: nothing after it is trusted
            if it > upto:
                break
            if not recs or it > int(recs[-1]["iteration"]):
                recs.append(rec)
        return recs

    def trim_log(self, upto: int) -> None:
        """Keep log.jsonl's records up to iteration ``upto`` (the checkpoint's): the
        iterations after it are trained again, and must not appear twice."""
        self._require_lock()
        if not self.log_path.exists():
            return
        recs = self._log_records(upto)
        text = "".join(json.dumps(r) + "\n" for r in recs)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if self.log_path.read_text() == text:
                return
        atomic_write_text(self.log_path, text)

    def open_log(self) -> IO[str]:
        self._require_lock()
        return self.log_path.open("a")

    # ------------------------------------------------------------------ resume

    @staticmethod
    def refuse_run_settings(given: Sequence[str], spell: Callable[[str], str] = str) -> None:
        """Refuse run-defining settings given to a resume (:data:`RESUME_SETTINGS` are the
        ones a resume may change), instead of ignoring them."""
        refused = sorted(k for k in given if k not in RESUME_SETTINGS)
        if refused:
            allowed = [spell(k) for k in RESUME_SETTINGS]
            raise InputError(
                f"{', '.join(map(spell, refused))}: a resumed run keeps the settings it was "
                f"started with; only {', '.join(allowed[:-1])} and {allowed[-1]} apply to "
                "a resume"
            )

    def plan_resume(
        self, iterations: int | None = None, data: str | Path | None = None
    ) -> ResumePlan:
        """Check that the run can be resumed (split, checkpoint, settings, data folder,
        iterations left) from its files alone, cheaply: no image is read. Damaged JSON next
        to a good checkpoint is recovered where the checkpoint holds the same facts (its
        settings, its labeled images), said in :attr:`ResumePlan.recovered` and logged;
        what cannot be recovered is one :class:`CheckpointError` naming the file."""
        out = self.path
        if not self.split_path.exists() and not self.has_checkpoint():
            raise InputError(f"{out}: not a run folder (no split.json); cannot resume")
        if not self.has_checkpoint():
            raise InputError(
                f"{out}: this run never saved a checkpoint (its first training failed or was "
                "stopped before one); start it again with train --data DIR --out " + str(out)
            )
        meta = self.checkpoint_meta()
        if meta is None:
            from .checkpoint import read_checkpoint

            read_checkpoint(self.checkpoint_path)  # says what is wrong with it
            raise CheckpointError(f"{self.checkpoint_path}: not a readable checkpoint")
        recovered: list[str] = []
        settings = self._resume_settings(meta, recovered)
        config_recovered = bool(recovered)
        labeled, unlabeled = self._resume_split(meta, recovered)
        for line in recovered:
            log.warning(line)
        if data is None and not settings.get("_data"):
            why = "config.json is damaged and " if config_recovered else ""
            raise InputError(f"{out}: {why}the run does not say where its data is; give --data DIR")
        done = int(meta["state"]["iteration"])
        total = iterations if iterations is not None else int(settings.get("iterations", 0))
        if total <= done:
            raise InputError(
                f"{out} has already trained {plural(done, 'iteration')}; give --iterations "
                f"> {done} to continue"
            )
        return ResumePlan(
            settings=settings,
            labeled=labeled,
            unlabeled=unlabeled,
            done=done,
            iterations=total,
            data_dir=Path(data if data is not None else settings["_data"]),
            unlabeled_dirs=list(settings.get("_unlabeled_dirs", [])),
            recovered=recovered,
        )

    def _resume_settings(self, meta: dict[str, Any], recovered: list[str]) -> dict[str, Any]:
        """config.json's settings, or (damaged) the checkpoint's copy of them."""
        try:
            doc = self.read_json("config.json")
            bad = settings_problem(doc)
            if bad:
                raise CheckpointError(f"{self.config_path} is damaged ({bad})")
            return doc
        except CheckpointError as exc:
            reason = str(exc)
        saved = meta.get("config")
        bad = settings_problem(saved)
        if bad:
            raise CheckpointError(
                f"{reason}, and the checkpoint's copy of the settings is damaged too ({bad}); "
                "the run cannot be resumed (its weights can still be used to predict)"
            )
        recovered.append(f"{reason}; the run's settings are read from its checkpoint")
        return dict(saved)

    def _resume_split(
        self, meta: dict[str, Any], recovered: list[str]
    ) -> tuple[list[str], list[str] | None]:
        """split.json's labeled and unlabeled images, or (damaged) the checkpoint's labeled
        ones and None for the unlabeled (the data folders' other images)."""
        try:
            split = self.read_json("split.json")
            labeled = _names(split.get("labeled")) if isinstance(split, dict) else None
            unlabeled = _names(split.get("unlabeled", [])) if isinstance(split, dict) else None
            if labeled is None or unlabeled is None:
                raise CheckpointError(
                    f"{self.split_path} is damaged (no list of labeled and unlabeled image "
                    "names in it)"
                )
            return labeled, unlabeled
        except CheckpointError as exc:
            reason = str(exc)
        labeled = _names(meta.get("labeled_names"))
        if not labeled:
            raise CheckpointError(
                f"{reason}, and the checkpoint does not list its labeled images; the run "
                "cannot be resumed (its weights can still be used to predict)"
            )
        recovered.append(
            f"{reason}; its labeled images are read from the checkpoint, and the data "
            "folders' other images are used unlabeled"
        )
        return labeled, None

    def write_split(self, labeled: Sequence[str], unlabeled: Sequence[str]) -> None:
        """Write split.json: which images are labeled and which unlabeled."""
        self._require_lock()
        atomic_write_json(self.split_path, {"labeled": list(labeled), "unlabeled": list(unlabeled)})

    def prepare_new_run(self) -> None:
        """Make the folder ready for a new run: refused where a run was saved; what an
        earlier start that never saved a checkpoint left (its log, history, snapshots) goes,
        so that two starts' records cannot mix."""
        self._require_lock()
        if self.has_checkpoint():
            raise CheckpointError(
                f"{self.path} already holds a run; resume it or use another run folder"
            )
        for p in (self.log_path, self.history_path):
            p.unlink(missing_ok=True)
        if self.snapshot_dir.is_dir():
            for p in self.snapshot_dir.iterdir():
                if _SNAPSHOT.match(p.name):
                    p.unlink(missing_ok=True)


__all__ = [
    "LOCK_NAME",
    "TRAIN_LOG_NAME",
    "RESUME_SETTINGS",
    "ResumePlan",
    "RunFolder",
    "RunFolderBusy",
    "settings_problem",
]
