"""The package's one OME-Zarr writer: NGFF 0.5 on zarr v3, the metadata written by ome-zarr.

Both kinds of OME-Zarr the package makes go through here, so they share one pyramid rule
(level 0 then halves while the longer side exceeds a chunk; maps averaged 2 x 2, labels
take the top-left pixel, so no id is invented), one physical scale (µm per pixel of each
level: the level-0 pixel size times the level's reduction, or plain pixels without an mpp)
and one labels layout:

- the cohort's slide (core/cohort/layout.py): float maps as channels (c, y, x) and NGFF
  ``labels/<name>`` (mask, instances) beside them, each level written by a task;
- the dock's export (core/export.py): one label map as a standalone multiscale image.

Writes are whole chunks; a standalone image is built in a temporary folder that replaces
its destination only once complete (:func:`replace_dir`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Default chunk side (px); the pyramid stops at the first level that fits in one chunk.
CHUNK = 512


def level_shapes(shape: tuple[int, int], chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Level 0 then halves (rounded up) while the longer side exceeds a chunk."""
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > chunk:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def create_levels(
    group, shapes: list[tuple[int, int]], dtype, chunk: int = CHUNK, channels: int | None = None
) -> None:
    """Empty arrays ``0, 1, ...`` of ``group`` for ``shapes`` ((c, y, x) with ``channels``),
    chunked by ``chunk`` px (one channel per chunk); replaces what was there (idempotent)."""
    for k, (h, w) in enumerate(shapes):
        if channels is None:
            shape, chunks = (h, w), (chunk, chunk)
        else:
            shape, chunks = (channels, h, w), (1, chunk, chunk)
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=dtype, overwrite=True)


def halve(a: np.ndarray, labels: bool) -> np.ndarray:
    """2 x 2 reduction of the last two axes (ragged edges kept): mean of the pixels there
    for maps, the top-left pixel for labels (no invented ids)."""
    if labels:
        return a[..., ::2, ::2]
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)]
    b = np.pad(a.astype(np.float32), pad, mode="edge")
    return 0.25 * (b[..., ::2, ::2] + b[..., 1::2, ::2] + b[..., ::2, 1::2] + b[..., 1::2, 1::2])


def fill_levels(group, shapes: list[tuple[int, int]], labels: bool, chunk: int = CHUNK) -> None:
    """Levels 1.. of ``group`` from its level 0, each from the previous one, a band of chunk
    rows at a time (whole chunks, bounded memory)."""
    for k in range(1, len(shapes)):
        src, dst = group[str(k - 1)], group[str(k)]
        h = shapes[k][0]
        for r0 in range(0, h, chunk):
            r1 = min(h, r0 + chunk)
            band = np.asarray(src[..., 2 * r0 : 2 * r1, :])
            dst[..., r0:r1, :] = halve(band, labels).astype(dst.dtype)


def _datasets(shapes, mpp: float | None, channel: bool) -> list[dict]:
    px = mpp or 1.0
    h0, w0 = shapes[0]
    return [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": ([1.0] if channel else []) + [px * h0 / h, px * w0 / w]}
            ],
        }
        for k, (h, w) in enumerate(shapes)
    ]


def _axes(mpp: float | None, channel: bool) -> list[dict]:
    unit = {"unit": "micrometer"} if mpp else {}
    space = [{"name": a, "type": "space", **unit} for a in "yx"]
    return ([{"name": "c", "type": "channel"}] if channel else []) + space


def write_image_metadata(
    group,
    shapes: list[tuple[int, int]],
    mpp: float | None,
    name: str,
    *,
    channels: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """The ``multiscales`` of an image whose levels are ``shapes`` (level 0 at ``mpp`` µm per
    px), with ``omero`` channel names when it has ``channels``, and ``metadata`` kept with
    it (the package's own keys). Written last: its presence marks the image complete."""
    from ome_zarr.writer import write_multiscales_metadata

    meta = dict(metadata or {})
    if channels is not None:
        meta["omero"] = {
            "channels": [{"label": c, "active": True} for c in channels],
            "rdefs": {"model": "greyscale"},
        }
    write_multiscales_metadata(
        group,
        _datasets(shapes, mpp, channels is not None),
        axes=_axes(mpp, channels is not None),
        name=name,
        metadata=meta,
    )


def write_label_metadata(root, name: str, shapes: list[tuple[int, int]], mpp: float | None):
    """``root/labels/<name>`` as an NGFF label of the image at ``root``: its multiscales, its
    ``image-label`` source and its entry in ``labels``."""
    from ome_zarr.writer import write_label_metadata as label_meta
    from ome_zarr.writer import write_multiscales_metadata

    labels = root["labels"]
    write_multiscales_metadata(
        labels[name], _datasets(shapes, mpp, False), axes=_axes(mpp, False), name=name
    )
    listed = dict(labels.attrs).get("ome", {}).get("labels", [])
    if name not in listed:
        label_meta(labels, name, source={"image": "../../"})


def write_label_image(
    path: str | os.PathLike[str],
    level0: Callable[[int, int], np.ndarray],
    shape: tuple[int, int],
    dtype,
    *,
    name: str,
    mpp: float | None = None,
    chunk: int = 1024,
) -> Path:
    """A label map as a standalone OME-Zarr multiscale image: ``level0(y0, rows)`` gives rows
    of level 0 (``shape``); it is written a band of chunk rows at a time, the levels built
    from it, the metadata last, in a temporary folder that then replaces ``path``."""
    import zarr

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        shapes = level_shapes(shape, chunk // 2)
        create_levels(root, shapes, dtype, chunk)
        a = root["0"]
        for y0 in range(0, shape[0], chunk):
            rows = min(chunk, shape[0] - y0)
            a[y0 : y0 + rows] = level0(y0, rows).astype(dtype)
        fill_levels(root, shapes, True, chunk)
        write_image_metadata(root, shapes, mpp, name)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` to ``path``; an older one there goes only once the
    new one is in place."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
