"""Export segmentations for other tools: instance outlines as GeoJSON for QuPath, class maps
and instance maps as TIFF or OME-Zarr, all at the slide's native resolution.

The input is a label map (instance ids, 0 = background) at some working scale; ``shape`` is
the native (level-0) size. Native pixels take the nearest working pixel, centre to centre
(:func:`.inference.resample_band`), and the GeoJSON outlines follow the same pixel edges, so
a native pixel is inside a polygon exactly when the exported TIFF has the object there.
Qt-free; writes are atomic; ``progress(done, total)`` and ``cancel()`` let a GUI run it in
a thread.

GeoJSON follows what QuPath reads and writes: a FeatureCollection of Features whose
geometry is a Polygon (a MultiPolygon for an object in several pieces) in image pixel
coordinates ``[x, y]`` at native resolution, exterior rings counterclockwise and holes as
interior rings (clockwise), properties ``objectType`` ("annotation" for what a person
painted, "detection" for a model's output) and ``classification`` ``{"name", "color"}``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .atomic import atomic_write_text
from .errors import InputError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
#: What a class map's values mean (0 background, 1 gland) and how QuPath shows the class.
GLAND_CLASS = ("Gland", (0, 200, 120))
FORMATS = ("geojson", "tiff", "ome-zarr")


class ExportCancelled(Exception):
    """The user cancelled an export; what was being written is left as it was."""


# ----------------------------------------------------------------------------- outlines


def _rings(m: np.ndarray) -> list[np.ndarray]:
    """Closed rings (k, 2) of (y, x) pixel-corner vertices around the foreground of the
    bool image ``m`` (already padded with background), the foreground on the right of
    travel (y down): outer boundaries run one way, holes the other. At a vertex where two
    pixels touch only diagonally the trace turns right, so such pixels are not joined
    (foreground 4-connected, background 8-connected). Only corner vertices are kept."""
    H, W = m.shape
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # (dy, dx) of each side's neighbour -> the side as an edge, from its start to its end
    sides = (
        ((-1, 0), (0, 0), (0, 1)),  # top: left to right
        ((0, 1), (0, 1), (1, 1)),  # right: downwards
        ((1, 0), (1, 1), (1, 0)),  # bottom: right to left
        ((0, -1), (1, 0), (0, 0)),  # left: upwards
    )
    for (dy, dx), (sy, sx), (ey, ex) in sides:
        nb = np.zeros_like(m)
        nb[max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)] = m[
            max(0, dy) : H - max(0, -dy), max(0, dx) : W - max(0, -dx)
        ]
        ys, xs = np.nonzero(m & ~nb)
        for y, x in zip(ys.tolist(), xs.tolist()):
            edges.setdefault((y + sy, x + sx), []).append((y + ey, x + ex))
    rings = []
    while edges:
        # start where the way on is unambiguous (no ring consists of saddles only)
        start = next(v for v, outs in edges.items() if len(outs) == 1)
        ring, v, d = [], start, None
        while True:
            ring.append(v)
            outs = edges[v]
            i = 0
            if len(outs) > 1:  # a saddle: the right turn of the incoming direction d (y down)
                right = (d[1], -d[0])
                i = next((k for k, o in enumerate(outs) if (o[0] - v[0], o[1] - v[1]) == right), 0)
            nxt = outs.pop(i)
            if not outs:
                del edges[v]
            d, v = (nxt[0] - v[0], nxt[1] - v[1]), nxt
            if v == start:
                break
        rings.append(_corners(np.asarray(ring, np.int64)))
    return rings


def _corners(ring: np.ndarray) -> np.ndarray:
    """Drop the vertices in the middle of straight runs (most of a pixel outline)."""
    prev, nxt = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    turn = np.any((ring - prev) != (nxt - ring), axis=1)
    return ring[turn]


def _area(ring_xy: np.ndarray) -> float:
    x, y = ring_xy[:, 0], ring_xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def label_polygons(
    labels: np.ndarray,
    factor: tuple[float, float] = (1.0, 1.0),
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Iterator[tuple[int, list[list[list[list[float]]]]]]:
    """Each object of ``labels`` as (id, polygons): a polygon is a list of closed rings of
    ``[x, y]`` (first = exterior, counterclockwise as numbers; then holes, clockwise), in
    pixel-edge coordinates multiplied by ``factor`` (fy, fx): the native size over the
    labels' size. Pieces of an object that do not share an edge are separate polygons."""
    labels = np.asarray(labels)
    boxes = ndi.find_objects(labels.astype(np.int64, copy=False))
    ids = [i + 1 for i, b in enumerate(boxes) if b is not None]
    fy, fx = factor
    for n, oid in enumerate(ids):
        if cancel is not None and cancel():
            raise ExportCancelled
        sl = boxes[oid - 1]
        y0, x0 = sl[0].start, sl[1].start
        obj = np.pad(labels[sl] == oid, 1)
        parts, k = ndi.label(obj)  # 4-connected pieces, each with one exterior ring
        polys = []
        for p in range(1, k + 1):
            rings = []
            for r in _rings(parts == p):
                xy = np.stack([(r[:, 1] - 1 + x0) * fx, (r[:, 0] - 1 + y0) * fy], 1)
                rings.append(xy)
            rings.sort(key=lambda r: -abs(_area(r)))  # the exterior encloses the most
            out = []
            for j, r in enumerate(rings):
                if (_area(r) > 0) != (j == 0):
                    r = r[::-1]
                closed = np.vstack([r, r[:1]])
                out.append([[_num(a), _num(b)] for a, b in closed.tolist()])
            polys.append(out)
        if progress is not None:
            progress(n + 1, len(ids))
        yield oid, polys


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 3)


def geojson(
    labels: np.ndarray,
    shape: tuple[int, int],
    *,
    object_type: str = "detection",
    classification: tuple[str, tuple[int, int, int]] = GLAND_CLASS,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the objects of ``labels`` at native ``shape``."""
    if object_type not in ("annotation", "detection"):
        raise InputError(f"object type must be annotation or detection, not {object_type!r}")
    labels = np.asarray(labels)
    factor = (shape[0] / labels.shape[0], shape[1] / labels.shape[1])
    name, color = classification
    features = []
    for oid, polys in label_polygons(labels, factor, progress, cancel):
        geom = (
            {"type": "Polygon", "coordinates": polys[0]}
            if len(polys) == 1
            else {"type": "MultiPolygon", "coordinates": polys}
        )
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": geom,
                "properties": {
                    "objectType": object_type,
                    "classification": {"name": name, "color": list(color)},
                    "name": f"{name.lower()} {oid}",
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], labels: np.ndarray, shape, **kw) -> Path:
    """Write :func:`geojson` to ``path`` atomically."""
    doc = geojson(labels, shape, **kw)
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
    return Path(path)


# ----------------------------------------------------------------------------- rasters


def class_map(labels: np.ndarray) -> np.ndarray:
    """0 = background, 1 = gland (uint8): what QuPath / a pixel classifier expects."""
    return (np.asarray(labels) > 0).astype(np.uint8)


def _label_dtype(labels: np.ndarray):
    top = int(np.asarray(labels).max(initial=0))
    return np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32


def write_tiff(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    shape: tuple[int, int],
    mpp: float | None = None,
) -> Path:
    """``labels`` resampled (nearest) to native ``shape`` as a tiled TIFF, atomically; large
    ones as OME-TIFF pyramids (streamed: the native array is never held in memory)."""
    from .inference.writers import write_tiled

    labels = np.asarray(labels)
    write_tiled(Path(path), labels, tuple(shape), True, _label_dtype(labels), mpp=mpp)
    return Path(path)


def write_ome_zarr(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    shape: tuple[int, int],
    *,
    name: str = "labels",
    mpp: float | None = None,
) -> Path:
    """``labels`` at native ``shape`` as an OME-Zarr multiscale image (in µm when ``mpp`` is
    known), through the package's one OME-Zarr writer (:mod:`.ngff`: its pyramid rule, the
    metadata by ome-zarr, written in a temporary folder that replaces ``path`` once
    complete). Level 0 takes the nearest working pixel, as the TIFF does. It is the label
    map itself, not an ``image-label`` under a parent image (that needs the slide in the
    same store: the cohort's outputs, core/cohort/, are the place for that)."""
    from .inference.resample import resample_band
    from .ngff import write_label_image

    labels = np.asarray(labels)
    labels = labels.astype(_label_dtype(labels), copy=False)
    shape = (int(shape[0]), int(shape[1]))

    def rows(y0: int, n: int) -> np.ndarray:
        return resample_band(labels, shape, y0, n, nearest=True)

    return write_label_image(path, rows, shape, labels.dtype, name=name, mpp=mpp)


# ----------------------------------------------------------------------------- all at once


def export_labels(
    labels: np.ndarray,
    shape: tuple[int, int],
    out_dir: str | os.PathLike[str],
    stem: str,
    formats: tuple[str, ...] = FORMATS,
    *,
    object_type: str = "detection",
    mpp: float | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> list[Path]:
    """Export ``labels`` (working scale) at native ``shape`` into ``out_dir``:

    - ``geojson``: ``STEM_outlines.geojson``, the instance outlines for QuPath;
    - ``tiff``: ``STEM_mask.tif`` (class map: 0 background, 1 gland) and
      ``STEM_instances.tif`` (instance ids), which this plugin's reader opens as labels;
    - ``ome-zarr``: ``STEM_mask.ome.zarr`` and ``STEM_instances.ome.zarr``.

    Returns the paths written. Progress counts the outlines' objects, then one step per
    raster file."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown export format {bad or formats}; known: {', '.join(FORMATS)}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise InputError(f"a label map to export must be 2-D, not of shape {labels.shape}")
    if not labels.any():
        raise InputError("nothing to export: no object in the labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rasters = [f for f in formats if f != "geojson"]
    n_obj = len([b for b in ndi.find_objects(labels.astype(np.int64)) if b is not None])
    total = (n_obj if "geojson" in formats else 0) + 2 * len(rasters)
    done = [0]

    def step(k: int = 1) -> None:
        if cancel is not None and cancel():
            raise ExportCancelled
        done[0] += k
        if progress is not None:
            progress(done[0], total)

    written = []
    if "geojson" in formats:
        path = out / f"{stem}_outlines.geojson"
        write_geojson(
            path,
            labels,
            shape,
            object_type=object_type,
            progress=lambda d, _t: progress and progress(d, total),
            cancel=cancel,
        )
        done[0] = n_obj
        written.append(path)
    mask = class_map(labels)
    for fmt in rasters:
        for what, arr in (("mask", mask), ("instances", labels)):
            if fmt == "tiff":
                path = write_tiff(out / f"{stem}_{what}.tif", arr, shape, mpp)
            else:
                path = write_ome_zarr(
                    out / f"{stem}_{what}.ome.zarr", arr, shape, name=what, mpp=mpp
                )
            written.append(path)
            step()
    log.info("exported %s", ", ".join(str(p) for p in written))
    return written
