"""``main``: parse, run one command, and turn every failure into one line and an exit status."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..core.errors import InputError
from ..core.logs import for_screen
from .options import _invocation, _Terminated
from .parser import build_parser

_log = logging.getLogger("napari_semimoe.cli")


class _StderrWarnings(logging.Handler):
    """The core's warnings as one line each on the stderr of the moment (tests swap it);
    records for the log files only (a failure's traceback) are not shown."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog
        self.addFilter(for_screen)

    def emit(self, record: logging.LogRecord) -> None:
        msg = " ".join(record.getMessage().split("\n"))
        print(f"{self.prog}: warning: {msg}", file=sys.stderr)


class _StderrDebug(logging.Handler):
    """``--verbose``: the package's debug and info records (and the tracebacks meant for
    the log file) on stderr; warnings are shown by :class:`_StderrWarnings` already."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.DEBUG)
        self.prog = prog
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        shown = record.levelno < logging.WARNING if for_screen(record) else record.exc_info
        if shown:
            print(f"{self.prog}: {self.format(record)}", file=sys.stderr)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text or type(exc).__name__


def _unexpected(prog: str, args: argparse.Namespace, exc: Exception) -> str:
    """The one line for an error that is not a known mistake (a bug, most likely); its
    traceback goes to the run's train.log (logged there by the run folder while it was
    held) or else to the user log (see :mod:`napari_semimoe.core.logs`)."""
    from ..core.logs import attach_user_log, detach_file_log, log_failure

    what = f"{prog}: error: unexpected {type(exc).__name__}: {_one_line(exc)}"
    log_file = getattr(args, "log_file", None)
    if log_file is not None and Path(log_file).exists():
        return f"{what} (details: {log_file})"
    handler = attach_user_log()
    try:
        log_failure(_log, f"{_invocation(args)}: failed", exc)
    finally:
        detach_file_log(handler)
    if handler.failed is not None or not handler.path.exists():
        return f"{what} (its traceback could not be logged: {handler.failed or 'no log file'})"
    return f"{what} (details: {handler.path})"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (importing torch takes seconds)
        print("napari-semimoe: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage mistake (one line, said already) or --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from ..core.checkpoint import CheckpointError
    from ..core.logs import attach_user_log, detach_file_log
    from ..core.train import TrainingError

    args.argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"napari-semimoe {args.command}"
    pkg_log = logging.getLogger("napari_semimoe")
    handlers: list[logging.Handler] = [_StderrWarnings(prog)]
    saved_level = pkg_log.level
    if getattr(args, "verbose", False):
        handlers.append(_StderrDebug(prog))
        pkg_log.setLevel(logging.DEBUG)
    for h in handlers:
        pkg_log.addHandler(h)
    # A training run logs to its train.log (the run folder attaches it while it is held);
    # the other commands to the user log.
    user_log = attach_user_log() if args.command != "train" else None
    # tifffile logs its own complaints about a damaged file; the reader turns them into one
    # error line, so they would only be a second, cryptic line on stderr.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (InputError, CheckpointError, TrainingError) as exc:
        print(f"{prog}: error: {_one_line(exc, limit=2000)}", file=sys.stderr)
        return 2
    except InterruptedError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except PermissionError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}permission denied", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, a vanished folder: a sentence, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: not enough memory; try a smaller --tile or --batch", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line here, the traceback in a log file
        if user_log is not None:
            detach_file_log(user_log)
            user_log = None
        print(_unexpected(prog, args, exc), file=sys.stderr)
        return 1
    finally:
        if user_log is not None:
            detach_file_log(user_log)
        for h in handlers:
            pkg_log.removeHandler(h)
        pkg_log.setLevel(saved_level)
