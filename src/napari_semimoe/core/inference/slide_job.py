"""What predicting a whole slide needs around the network: the working-scale reader and
tissue mask, and the scratch folder (its name, stale-scratch removal, the space check) that
outputs are written in before they are moved into place. The prediction itself is
:func:`napari_semimoe.core.cohort.predict_slide` (the cohort's block engine, in-process)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..slide import tissue_mask
from .resample import resample


def working_reader(slide, shape: tuple[int, int]) -> Callable[[int, int, int, int], np.ndarray]:
    """``read(y, x, h, w)`` in working-scale pixels of a slide whose working shape is ``shape``."""
    H, W = slide.shape
    scale = (H / shape[0] + W / shape[1]) / 2
    return lambda y, x, h, w: slide.read_scaled(y, x, h, w, scale)


def working_tissue(slide, shape: tuple[int, int]) -> np.ndarray:
    """The slide's tissue mask on the working-scale grid ``shape``."""
    H, W = slide.shape
    tissue = tissue_mask(slide, (H / shape[0] + W / shape[1]) / 2)
    if tissue.shape != tuple(shape):
        tissue = resample(tissue.astype(np.uint8), shape, nearest=True).astype(bool)
    return tissue


#: Prefix of the scratch folder a prediction works in, inside the output folder; it holds the
#: disk-backed maps and the outputs until all of them are written. Followed by pid@host, so
#: a folder whose process has died (kill -9) is recognised and removed by the next prediction
#: on that machine (a shared folder may hold another machine's live scratch: never touched).
SCRATCH_PREFIX = ".semimoe-predict-"


def _host() -> str:
    import socket

    return "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname()) or "_"


def scratch_prefix() -> str:
    """This process's scratch-folder prefix: ``.semimoe-predict-<pid>@<host>-``."""
    return f"{SCRATCH_PREFIX}{os.getpid()}@{_host()}-"


def remove_stale_scratch(out_dir: str | Path) -> list[Path]:
    """Remove scratch folders in ``out_dir`` left by predictions on this machine whose
    process is gone."""
    removed = []
    for d in Path(out_dir).glob(SCRATCH_PREFIX + "*@*"):
        pid_text, _, rest = d.name[len(SCRATCH_PREFIX) :].partition("@")
        host = rest.rpartition("-")[0]
        if not pid_text.isdigit() or host != _host():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def check_space(out_dir: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise InputError(
            f"{what} needs {need / 1e9:.1f} GB of scratch space in {out_dir} but only "
            f"{free / 1e9:.1f} GB are free; free some space or choose another --out"
        )
