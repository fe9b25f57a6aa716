"""The one atomic-write rule: every file we write appears whole or not at all.

A write goes to ``.NAME.PID.XXXXXXXX.tmp`` next to NAME (same folder, so the rename cannot
cross file systems), created with mode 0666 so that the kernel applies the user's umask (a
colleague can read a shared run; mkstemp's 0600 would hide it), then is fsync'ed, renamed
over NAME and the folder fsync'ed (the rename survives a power loss). On any failure, a
``KeyboardInterrupt`` included, the temp file is removed and NAME is as it was. Only a kill
-9 leaves a temp file; :func:`remove_stale_temps` removes those whose writer is dead (the pid
in the name says who wrote it).

Writers that need a path (safetensors, tifffile) use :func:`atomic_path`, writers that need
a file object (``np.savez``) :func:`atomic_open`; bytes, text and JSON have one-call helpers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: Our temp files: ``.NAME.PID.XXXXXXXX.tmp`` (XXXXXXXX: 8 hex digits).
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")
#: Temp names of versions before the one pattern (``.NAME.XXXXXXXX.tmp``, mkstemp-style):
#: recognised only where a lock says that no writer is alive (the run folder).
LEGACY_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
#: Windows has no harmless "is this pid alive" probe: there a temp file is stale after this.
_STALE_AFTER_S = 3600.0


def temp_name(path: str | os.PathLike[str]) -> Path:
    """A fresh temp path for ``path`` in our pattern (not created)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create an empty temp file for ``path``; return it and the mode the umask gave it."""
    for _ in range(100):
        tmp = temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"{path.parent}: cannot create a temporary file")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, mode: int) -> None:
    with open(tmp, "rb+") as fh:
        if os.fstat(fh.fileno()).st_mode & 0o777 != mode:  # a writer that made its own file
            os.chmod(tmp, mode)
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path (an empty file) for a writer that needs a path; on success it is
    synced and renamed over ``path``, on any failure removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temp(p)
    try:
        yield tmp
        _commit(tmp, p, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kw: Any) -> Iterator[IO[Any]]:
    """Yield an open file (``mode`` "wb" or "w") whose contents replace ``path`` atomically
    when the block ends without an error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as fh:
        yield fh


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """``write(binary file)`` replaces ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text (UTF-8) so that readers never see a half-written file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def writer_alive(pid: int, temp: str | os.PathLike[str]) -> bool:
    """Could process ``pid`` still be writing ``temp``? (Another napari or training may use
    the folder.) This process counts as alive: one of its threads may be mid-write."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # pragma: no cover - no signal 0 there
        try:
            return time.time() - os.stat(temp).st_mtime < _STALE_AFTER_S
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def remove_stale_temps(
    folder: str | os.PathLike[str], names: Callable[[str], bool] | None = None
) -> list[Path]:
    """Remove the temp files in ``folder`` (not below it) that our pattern names and whose
    writer is dead; ``names``, if given, limits it to temps of files it accepts. Anything
    else is left alone. Returns the removed files."""
    gone: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return gone
    for e in entries:
        m = TEMP_PATTERN.match(e.name)
        if not m or (names is not None and not names(m["name"])):
            continue
        with contextlib.suppress(OSError):
            if e.is_file(follow_symlinks=False) and not writer_alive(int(m["pid"]), e.path):
                os.unlink(e.path)
                gone.append(Path(e.path))
    if gone:
        log.info("%s: removed %d temp files of interrupted writes", folder, len(gone))
    return gone


__all__ = [
    "LEGACY_TEMP_PATTERN",
    "TEMP_PATTERN",
    "atomic_open",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "remove_stale_temps",
    "temp_name",
    "writer_alive",
]
