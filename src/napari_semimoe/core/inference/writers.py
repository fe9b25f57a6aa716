"""The files a prediction writes: tiled (OME-)TIFF maps streamed band by band, small images'
TIFFs, and the per-tile gate weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_path
from ..tiff_writer import ome_metadata, resolution_tags, write_tiff
from .resample import resample_band

if TYPE_CHECKING:
    from .predictor import Predictor


def output_keys(predictor: Predictor) -> list[str]:
    """What a prediction writes, in order: ``mask``, the family's maps, ``instances``, its
    label maps (a multi-class model's ``classes``), the experts' maps (when asked);
    Semi-MoE: mask, prob, sdf, boundary, instances, expert_*."""
    f = predictor.family
    extra = list(f.output_maps(True)) if predictor.opt.experts else []
    return ["mask", *f.output_maps(), "instances", *f.label_maps(), *extra]


def save_gates(path: Path, tiles, gates: np.ndarray, scale: tuple[float, float]) -> Path:
    """Per-tile gate weights as .npz (atomic): ``gates`` (n, *gate_shape), Semi-MoE's (n, 3, 3):
    task x expert, tasks and experts in the order seg, sdf, bnd; ``tiles`` (n, 4): each tile's
    y, x, h, w in the input's (level-0) pixels; ``tiles_working``: the same at working scale."""
    work = np.asarray(tiles, np.int64).reshape(-1, 4)
    fy, fx = scale
    native = np.rint(work * np.array([fy, fx, fy, fx])).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, gates=np.asarray(gates, np.float32), tiles=native, tiles_working=work)
    return path


#: Outputs whose longer side exceeds this get reduced levels (each half the previous) down
#: to it, so napari and QuPath show a gigapixel prediction without reading it whole.
PYRAMID_MIN_SIDE = 4096


def map_level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Level shapes of a written map: level 0, then halves while the longer side exceeds
    :data:`PYRAMID_MIN_SIDE` / 2."""
    shapes = [(int(shape[0]), int(shape[1]))]
    if max(shape) > PYRAMID_MIN_SIDE:
        while max(shapes[-1]) > PYRAMID_MIN_SIDE // 2:
            h, w = shapes[-1]
            shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def write_tiled(
    path: Path,
    src: np.ndarray,
    shape: tuple[int, int],
    nearest: bool,
    dtype,
    mpp: float | None = None,
) -> None:
    """Stream ``src`` resampled to ``shape`` into a tiled, compressed (Big)TIFF, atomically.

    Large outputs become OME-TIFF pyramids (reduced levels in SubIFDs, each resampled from
    ``src`` directly, so nothing of level 0 is held); ``mpp`` (the input's microns per
    pixel) is kept as resolution tags and OME physical size.
    """
    import tifffile

    T = 256
    shapes = map_level_shapes(shape)
    H, W = shapes[0]

    def tiles(level_shape):
        h, w = level_shape
        for y0 in range(0, h, T):
            rows = min(T, h - y0)
            band = resample_band(src, level_shape, y0, rows, nearest=nearest).astype(dtype)
            for x0 in range(0, w, T):
                t = np.zeros((T, T), dtype)
                part = band[:, x0 : x0 + T]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    pyramid = len(shapes) > 1
    total = sum(h * w for h, w in shapes) * np.dtype(dtype).itemsize
    with (
        atomic_path(path) as tmp,
        tifffile.TiffWriter(tmp, bigtiff=total > 2**31, ome=pyramid) as tw,
    ):
        for k, (h, w) in enumerate(shapes):
            kwargs = {
                "shape": (h, w),
                "dtype": dtype,
                "tile": (T, T),
                "compression": "zlib",
                "compressionargs": {"level": 1},
                # The floating-point predictor roughly halves float maps and makes deflate
                # faster; tiles are compressed on all cores (most of a slide's writing time).
                "predictor": np.dtype(dtype).kind == "f",
                "maxworkers": os.cpu_count(),
                **resolution_tags(mpp * W / w if mpp else None),
            }
            if k == 0 and pyramid:
                kwargs.update(subifds=len(shapes) - 1, metadata=ome_metadata("YX", mpp))
            elif k:
                kwargs.update(subfiletype=1, metadata=None)
            tw.write(tiles((h, w)), **kwargs)


def write_small(
    predictor: Predictor, image: np.ndarray, out_dir, name: str, mpp: float | None = None
) -> dict[str, Path]:
    """Predict an image that fits in memory and write its outputs as TIFFs + gates."""
    out = predictor.predict_image(image)
    written = {}
    for key in output_keys(predictor):
        if key in out:
            path = Path(out_dir) / f"{name}_{key}.tif"
            write_tiff(path, out[key], mpp=mpp)
            written[key] = path
    work = predictor.m.geometry.working_shape(image.shape[:2])
    scale = (image.shape[0] / work[0], image.shape[1] / work[1])
    written["gates"] = save_gates(
        Path(out_dir) / f"{name}_gates.npz", out["tiles"], out["gates"], scale
    )
    return written
