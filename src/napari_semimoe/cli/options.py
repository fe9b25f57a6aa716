"""Option parsing shared by every command: range-checked numbers, output paths, one-line usage
errors, SIGTERM as Ctrl-C and progress bars."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.errors import InputError
from ..core.validate import check_geometry, tile_problem, width_problem

# ----------------------------------------------------------------------------- option checks
# Every numeric option is parsed by one of these: out of range, non-finite or absurdly large
# values are refused at parse time, in one line, before anything is read or allocated.


def int_option(lo: int, hi: int, multiple: int = 1) -> Callable[[str], int]:
    """argparse ``type=``: an integer in [lo, hi] (a multiple of ``multiple``)."""
    kind = {1: "an integer", 2: "an even integer"}.get(multiple, f"a multiple of {multiple}")

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if not lo <= v <= hi or v % multiple:
            raise argparse.ArgumentTypeError(f"must be {kind} from {lo} to {hi}, got {v}")
        return v

    return parse


def checked_int(problem: Callable[[int], str | None], kind: str) -> Callable[[str], int]:
    """argparse ``type=``: an integer that core's check ``problem`` accepts."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        bad = problem(v)
        if bad:
            raise argparse.ArgumentTypeError(bad)
        return v

    return parse


def float_option(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    span = f"{'above' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not (lo < v if lo_open else lo <= v) or v > hi:
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {v:g}")
        return v

    return parse


#: Ranges of the numeric options (generous: they only stop what cannot be meant).
MAX_CLI_WIDTH = 128  # twice upstream's 64: 415 M parameters
MAX_CLI_TILE = 4096
WIDTH = checked_int(lambda v: width_problem(v, hi=MAX_CLI_WIDTH), "an even integer")
THREADS = int_option(1, 4096)
TILE = checked_int(lambda v: tile_problem(v, hi=MAX_CLI_TILE), "a multiple of 16")
SIZE = int_option(16, 4096)
OVERLAP = int_option(0, 2048)
BATCH = int_option(1, 1024)
COUNT = int_option(1, 10**9)
EVERY = int_option(0, 10**9)
SEED = int_option(0, 2**32 - 1)
TOP = int_option(1, 10_000)
REPEATS = int_option(1, 1000)


def add_mask_options(q: argparse.ArgumentParser) -> None:
    """The prediction levers (off by default) of ``predict``, ``evaluate`` and ``cohort``."""
    q.add_argument(
        "--tta",
        default="off",
        choices=["off", "flips"],
        help="test-time augmentation: flips = average over the 4 flips of each tile "
        "(4x slower; default off)",
    )
    q.add_argument(
        "--fill-holes", action="store_true", help="fill holes enclosed by a gland in the mask"
    )
    q.add_argument(
        "--min-object",
        type=int_option(0, 10**8),
        default=0,
        metavar="PX",
        help="drop mask components below PX px of working scale (default 0: keep all)",
    )


def _writable_dir(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def _existing_parent(p: Path) -> Path:
    q = p.absolute().parent
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def out_folder(text: str) -> str:
    """argparse ``type=``: an output folder that is, or can be made, a writable folder."""
    p = Path(text).expanduser()
    try:
        if p.exists():
            if not p.is_dir():
                raise argparse.ArgumentTypeError(f"{p} is a file, not a folder")
            if not _writable_dir(p):
                raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot write in it)")
            return text
        parent = _existing_parent(p)
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{p}: {parent} is a file, not a folder")
        if not _writable_dir(parent):
            raise argparse.ArgumentTypeError(
                f"{p}: permission denied (cannot create it in {parent})"
            )
    except PermissionError:
        raise argparse.ArgumentTypeError(f"{p}: permission denied") from None
    return text


def out_file(text: str) -> str:
    """argparse ``type=``: an output file that is not a folder and can be written."""
    p = Path(text).expanduser()
    try:
        if p.is_dir() or text.endswith(("/", os.sep)):
            raise argparse.ArgumentTypeError(f"{p} is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot overwrite it)")
        parent = _existing_parent(p)
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{p}: {parent} is a file, not a folder")
        if not _writable_dir(parent):
            raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot write in {parent})")
    except PermissionError:
        raise argparse.ArgumentTypeError(f"{p}: permission denied") from None
    return text


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line and exit status 2, like every other user mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = re.sub(r"^argument (?:\S+/)?(\S+): ", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so clean-up runs as for Ctrl-C."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler, ``timeout``) unwinds like Ctrl-C: no scratch is left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise _Terminated

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _bar(total: int, desc: str, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _tqdm_progress(desc: str, unit: str = "tile"):
    state: dict = {}

    def cb(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = _bar(total, desc, unit)
        bar = state["bar"]
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return cb


def _check_width(width: int) -> None:
    bad = width_problem(width, hi=MAX_CLI_WIDTH)
    if bad:
        raise InputError(f"--width {bad}")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")


def _geometry(args: argparse.Namespace):
    return check_geometry(args.scale, args.input_size, args.tile, spell=_spell)


def _spell(key: str) -> str:
    """A setting's name as an option: ``input_size`` -> ``--input-size``."""
    return "--" + key.replace("_", "-")


def _invocation(args: argparse.Namespace) -> str:
    from .. import __version__

    return f"napari-semimoe {__version__}: {' '.join(getattr(args, 'argv', []))}"
