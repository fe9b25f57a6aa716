"""Where the package's logs go: log files with full tracebacks, one line for the user.

Everything below the CLI and the widgets logs to the standard ``logging`` loggers under
``napari_semimoe``. A log file is attached to that logger while it is wanted:

- a training run: ``RUN/train.log``, attached by :class:`~.runfolder.RunFolder` while it
  holds the run's lock (the CLI's train, the plugin's training process);
- anything else (predict, evaluate, suggest, a napari session): ``napari-semimoe.log`` in
  :func:`user_log_dir` (rotated at 1 MB, three old files kept).

The screen (stderr, a status line) shows one readable line; records meant only for the
file (a failure's traceback, which the screen says in one line already) carry
:data:`FILE_ONLY`, and screen handlers drop them with :func:`for_screen`.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOGGER_NAME = "napari_semimoe"
#: Attribute of records for log files only (see :func:`log_failure`).
FILE_ONLY = "napari_semimoe_file_only"
USER_LOG_NAME = "napari-semimoe.log"
#: Overrides :func:`user_log_dir` (tests, clusters with a read-only home).
LOG_DIR_ENV = "NAPARI_SEMIMOE_LOG_DIR"
_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def package_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def user_log_dir() -> Path:
    """``$NAPARI_SEMIMOE_LOG_DIR``, else ``~/.cache/napari-semimoe/logs`` (``$XDG_CACHE_HOME``
    honoured; ``%LOCALAPPDATA%`` on Windows)."""
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV]).expanduser()
    if sys.platform == "win32":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-semimoe" / "logs"


def for_screen(record: logging.LogRecord) -> bool:
    """Filter for handlers that show records to the user: not the file-only ones."""
    return not getattr(record, FILE_ONLY, False)


def log_failure(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """Log ``message`` and the full traceback of ``exc`` to the log files only."""
    logger.error(message, exc_info=(type(exc), exc, exc.__traceback__), extra={FILE_ONLY: True})


class _FileHandler(logging.handlers.RotatingFileHandler):
    """A log file that never disturbs the program: created at its first record, and a
    file that cannot be written (read-only home, full disk) is given up quietly, not a
    "--- Logging error ---" traceback on stderr."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=3 if max_bytes else 0, delay=True)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.path = path
        self.failed: str | None = None
        self._saved_level: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's API
        exc = sys.exc_info()[1]
        self.failed = str(exc) if exc is not None else "cannot write"


def attach_file_log(path: str | os.PathLike[str], *, max_bytes: int = 0) -> _FileHandler:
    """Send the package's records (INFO and above; DEBUG where the logger is set so) to the
    file ``path`` until :func:`detach_file_log`. ``max_bytes``: rotate (0: never)."""
    p = Path(path)
    handler = _FileHandler(p, max_bytes)
    logger = package_logger()
    if logger.getEffectiveLevel() > logging.INFO:
        handler._saved_level = logger.level
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def detach_file_log(handler: _FileHandler) -> None:
    logger = package_logger()
    logger.removeHandler(handler)
    if handler._saved_level is not None:
        logger.setLevel(handler._saved_level)
    handler.close()


def attach_user_log() -> _FileHandler:
    """The log file of a command or session without a run folder (see the module doc)."""
    d = user_log_dir()
    with contextlib.suppress(OSError):  # else the handler gives up at its first record
        d.mkdir(parents=True, exist_ok=True)
    return attach_file_log(d / USER_LOG_NAME, max_bytes=2**20)


__all__ = [
    "FILE_ONLY",
    "LOGGER_NAME",
    "LOG_DIR_ENV",
    "attach_file_log",
    "attach_user_log",
    "detach_file_log",
    "for_screen",
    "log_failure",
    "package_logger",
    "user_log_dir",
]
