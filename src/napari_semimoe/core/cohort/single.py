"""Single-slide prediction (``predict``) through the cohort's block engine, in this process.

One code path makes the working-scale results of ``predict`` and ``cohort``: the slide's
blocks are planned, predicted, labelled, joined and relabelled by the same tasks
(:func:`.engine.predict_in_process`), into an OME-Zarr in a scratch folder inside the
output folder; ``predict``'s files are then written from it: the maps, mask and instances
as native-size tiled TIFFs (streamed band by band) and the gates as ``NAME_gates.npz``, and
with ``keep_zarr`` the OME-Zarr itself. Everything is moved into place only once every
output exists, so a failure, a cancel or a Ctrl-C leaves neither a half set of outputs nor
the scratch folder.

The one exception is a model trained on whole images resized to a fixed input size
(``Geometry.input_size``): it has no working scale and no tiles, so such images are predicted
in memory (:func:`..inference.writers.write_small`), as the cohort refuses those models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..inference import Predictor, check_space, remove_stale_scratch, scratch_prefix, writers
from ..ngff import replace_dir
from . import layout
from .engine import predict_in_process
from .layout import CHUNK
from .slides import ZARR_SUFFIX

#: Block side (working px) of a single-slide prediction: as a cohort's default, so both
#: compute the same instance ids; memory is bounded by one block, not by the slide.
BLOCK = 2048


class _Channel:
    """Channel ``c`` of a (c, y, x) zarr array, read lazily as a 2-D array (rows first)."""

    def __init__(self, array, c: int) -> None:
        self.array, self.c = array, c
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, rows):
        return self.array[self.c, rows]


class _Derived:
    """A family's derived label map (a multi-class model's ``classes``) computed from the
    zarr's float maps row band by row band, as the TIFF writer reads it."""

    def __init__(self, array, channels: list[str], family, key: str) -> None:
        self.array, self.channels, self.family, self.key = array, channels, family, key
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, rows):
        maps = {k: self.array[i, rows] for i, k in enumerate(self.channels)}
        return self.family.derived_maps(maps)[self.key]


def predict_slide(
    predictor: Predictor,
    slide,
    out_dir: str | Path,
    name: str,
    *,
    write_native: bool = True,
    keep_zarr: bool = False,
    block: int = BLOCK,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Path]:
    """Predict a (possibly gigapixel) slide into ``out_dir``: ``NAME_<key>.tif`` for every
    output key (mask, the family's maps, instances, experts' maps when asked), at the
    slide's native size (``write_native``; else at working scale), ``NAME_gates.npz``, and
    ``NAME.ome.zarr`` with ``keep_zarr``. Returns key -> path (``"ome-zarr"`` for the zarr)."""
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
        check_space(out_dir, n_maps * hw * ww * 4, f"predicting {name} ({W}x{H} px)")
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix(), dir=out_dir))
    try:
        if g.input_size:
            image = slide.read_region(0, 0, H, W)
            staged = writers.write_small(predictor, image, scratch, name, mpp=slide.mpp)
        else:
            zarr_path = scratch / f"{name}{ZARR_SUFFIX}"
            predict_in_process(
                predictor,
                slide,
                zarr_path,
                name,
                block=block,
                chunk=chunk,
                progress=progress,
                cancel=cancel,
            )
            staged = _write_files(predictor, zarr_path, scratch, name, (H, W), write_native)
            if keep_zarr:
                staged["ome-zarr"] = zarr_path
        written = {}
        for key, path in staged.items():
            dest = out_dir / path.name
            if path.is_dir():
                replace_dir(path, dest)
            else:
                os.replace(path, dest)
            written[key] = dest
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_files(
    predictor: Predictor,
    zarr_path: Path,
    scratch: Path,
    name: str,
    native: tuple[int, int],
    write_native: bool,
) -> dict[str, Path]:
    """``predict``'s files from the slide's OME-Zarr: TIFFs streamed from its level 0 (bilinear
    for maps, nearest for labels), and the gates."""
    import zarr

    root = zarr.open_group(zarr_path, mode="r")
    channels = layout.read_semimoe(zarr_path)["maps"]
    work = tuple(root["0"].shape[1:])
    shape = native if write_native else work
    mpp = layout.read_semimoe(zarr_path).get("native_mpp") if write_native else None
    labels = {"mask": np.uint8, "instances": np.int32}
    derived = predictor.family.label_maps()  # e.g. the class map, made from the maps
    labels |= {k: np.uint8 for k in derived}
    written = {}
    for key in writers.output_keys(predictor):
        if key in derived:
            src = _Derived(root["0"], list(channels), predictor.family, key)
        elif key in labels:
            src = root[f"labels/{key}/0"]
        elif key in channels:
            src = _Channel(root["0"], channels.index(key))
        else:
            continue
        path = scratch / f"{name}_{key}.tif"
        writers.write_tiled(path, src, shape, key in labels, labels.get(key, np.float32), mpp=mpp)
        written[key] = path
    gates, boxes = layout.read_tiles(zarr_path)
    scale = (native[0] / work[0], native[1] / work[1])
    written["gates"] = writers.save_gates(scratch / f"{name}_gates.npz", boxes, gates, scale)
    return written
