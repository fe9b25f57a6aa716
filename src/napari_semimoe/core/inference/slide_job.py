"""Predicting a whole slide (or any image file): the working-scale reader and tissue mask,
disk-backed maps in a scratch folder, and outputs moved into place only once all exist."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..slide import tissue_mask
from . import writers
from .predictor import Predictor, ProgressFn
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


def _check_space(out_dir: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise InputError(
            f"{what} needs {need / 1e9:.1f} GB of scratch space in {out_dir} but only "
            f"{free / 1e9:.1f} GB are free; free some space or choose another --out"
        )


def predict_slide(
    predictor: Predictor,
    slide,
    out_dir: str | Path,
    name: str,
    *,
    write_native: bool = True,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Path]:
    """Predict a (possibly gigapixel) slide and write TIFF outputs without loading it whole.

    Working-scale maps live in disk-backed arrays; native-size outputs are streamed to
    tiled TIFFs band by band. Everything is written in a scratch folder inside ``out_dir``
    and moved into place only once every output exists, so a failure, a cancel or a Ctrl-C
    leaves neither a half set of outputs nor the scratch folder.
    """
    g = predictor.m.geometry
    H, W = slide.shape
    if g.input_size and H * W > 64e6:
        raise InputError(
            f"{slide.path}: this model was trained on whole images resized to "
            f"{g.input_size}x{g.input_size}; a {W}x{H} slide needs a model trained with a "
            "working scale (--scale)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(out_dir)
    if not g.input_size:
        hw, ww = g.working_shape((H, W))
        n_maps = len(predictor.map_names()) + 1
        _check_space(out_dir, n_maps * hw * ww * 4, f"predicting {name} ({W}x{H} px)")
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix(), dir=out_dir))
    try:
        if g.input_size:
            image = slide.read_region(0, 0, H, W)
            staged = writers.write_small(predictor, image, scratch, name, mpp=slide.mpp)
        else:
            staged = _predict_large(
                predictor, slide, scratch, name, (hw, ww), write_native, progress, cancel
            )
        written = {}
        for key, path in staged.items():
            dest = out_dir / path.name
            os.replace(path, dest)
            written[key] = dest
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _predict_large(
    predictor: Predictor,
    slide,
    scratch: Path,
    name: str,
    work_shape: tuple[int, int],
    write_native: bool,
    progress: ProgressFn | None,
    cancel: Callable[[], bool] | None,
) -> dict[str, Path]:
    """Predict at working scale with disk-backed maps and write every output into ``scratch``."""
    H, W = slide.shape
    hw, ww = work_shape
    tissue = working_tissue(slide, (hw, ww)) if predictor.opt.tissue_only else None
    wp = predictor.predict_region_reader(
        working_reader(slide, (hw, ww)),
        (hw, ww),
        tissue=tissue,
        out_dir=scratch / "maps",
        progress=progress,
        cancel=cancel,
    )
    if wp.cancelled:
        raise InterruptedError("prediction cancelled")
    maps = dict(wp.maps)
    maps["mask"] = predictor.mask(maps)
    maps["instances"] = predictor.instances(maps, scale=1.0)
    maps.update(predictor.family.derived_maps(maps))  # a multi-class model's class map
    shape = (H, W) if write_native else (hw, ww)
    written = {}
    labels = {"mask": np.uint8, "instances": np.int32}
    labels |= {k: np.uint8 for k in predictor.family.label_maps()}
    mpp = slide.mpp if write_native else None
    for key in writers.output_keys(predictor):
        if key not in maps:
            continue
        path = scratch / f"{name}_{key}.tif"
        dtype = labels.get(key, np.float32)
        writers.write_tiled(path, maps[key], shape, key in labels, dtype, mpp=mpp)
        written[key] = path
    written["gates"] = writers.save_gates(
        scratch / f"{name}_gates.npz", wp.tiles, wp.gates, (H / hw, W / ww)
    )
    return written
