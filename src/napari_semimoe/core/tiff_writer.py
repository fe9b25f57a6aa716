"""Writing TIFFs: single images and pyramids (OME or SubIFD), streamed from tiles.

Every write is atomic (a crash leaves the old file or none, never half of one) and pixel
sizes are kept (OME metadata and resolution tags), so what the plugin and the CLI write opens
again at the right scale here and in other viewers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .slide import to_rgb_uint8
from .validate import tile_problem


def ome_metadata(axes: str, mpp: float | None) -> dict[str, Any]:
    """tifffile's OME metadata for one image: its axes and, if known, its pixel size."""
    meta: dict[str, Any] = {"axes": axes}
    if mpp:
        meta.update(
            PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
        )
    return meta


def resolution_tags(mpp: float | None) -> dict[str, Any]:
    """tifffile keyword arguments storing ``mpp`` (microns per pixel) as pixels per cm."""
    if not mpp:
        return {}
    return {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}


def write_tiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    compression: str | None = "zlib",
    tile: int | None = None,
    mpp: float | None = None,
) -> None:
    """Write ``array`` (mask, probability map, image) as a TIFF, atomically.

    ``tile=None`` tiles arrays over 1 MB with 256 px tiles (napari and QuPath read tiled
    TIFFs lazily); ``tile=0`` forces strips. HxWx3/4 uint8/uint16 are written as RGB, other
    3-D arrays as a stack of pages. Bool is stored as uint8. ``mpp`` (microns per pixel)
    is stored as resolution tags, as :func:`open_slide` and QuPath read them.
    """
    import tifffile

    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if tile is None:
        tile = 256 if a.nbytes > 2**20 else 0
    rgb = a.ndim == 3 and a.shape[-1] in (3, 4) and a.dtype in (np.uint8, np.uint16)
    kwargs: dict[str, Any] = {
        "photometric": "rgb" if rgb else "minisblack",
        "compression": compression,
    }
    if tile:
        kwargs["tile"] = (tile, tile)
    kwargs.update(resolution_tags(mpp))
    big = a.nbytes > 2**31
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big, ome=False) as tw:
        tw.write(a, **kwargs)


def _halve(a: np.ndarray) -> np.ndarray:
    """2x2 mean (edge-padded to even size): pixel i covers the finer pixels 2i and 2i + 1."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    s = a[0::2, 0::2].astype(np.uint16)
    s += a[1::2, 0::2]
    s += a[0::2, 1::2]
    s += a[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _level_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    shapes = [(int(shape[0]), int(shape[1]))]
    while len(shapes) < levels and min(shapes[-1]) > 1:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _tiles(
    get_band: Callable[[int, int], np.ndarray], shape: tuple[int, int], tile: int, sink: Any
) -> Iterator[np.ndarray]:
    """Yield a level's tiles row by row; each band, halved, is stored in ``sink`` (next level)."""
    H, W = shape
    for y0 in range(0, H, tile):
        band = get_band(y0, min(H, y0 + tile))
        if sink is not None:
            half = _halve(band)
            sink[y0 // 2 : y0 // 2 + half.shape[0]] = half
        for x0 in range(0, W, tile):
            yield np.ascontiguousarray(band[:, x0 : x0 + tile])


def _write_levels(
    path: str | os.PathLike[str],
    shapes: list[tuple[int, int]],
    band0: Callable[[int, int], np.ndarray],
    sinks: list[Any],
    *,
    tile: int,
    mpp: float | None,
    subifds: bool,
    compression: str | None,
) -> None:
    """Write level 0 from ``band0`` and level k >= 1 from ``sinks[k - 1]`` (filled on the way)."""
    import tifffile

    bad = tile_problem(tile, hi=2**30)  # any multiple of 16: the file's tiles, not a model's
    if bad:
        raise ValueError(f"tile {bad}")
    raw = sum(h * w * 3 for h, w in shapes)
    H0, W0 = shapes[0]
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=raw > 2**31, ome=subifds) as tw:
        for k, (h, w) in enumerate(shapes):
            if k == 0:
                get_band = band0
            else:
                src = sinks[k - 1]

                def get_band(y0: int, y1: int, src: Any = src) -> np.ndarray:
                    return np.asarray(src[y0:y1])

            sink = sinks[k] if k < len(sinks) else None
            kwargs: dict[str, Any] = {
                "shape": (h, w, 3),
                "dtype": np.uint8,
                "tile": (tile, tile),
                "photometric": "rgb",
                "compression": compression,
            }
            if mpp:
                # pixels per cm at this level; readers derive level-0 mpp from page 0
                kwargs["resolution"] = (1e4 / (mpp * W0 / w), 1e4 / (mpp * H0 / h))
                kwargs["resolutionunit"] = "CENTIMETER"
            if k == 0 and subifds:
                kwargs.update(subifds=len(shapes) - 1, metadata=ome_metadata("YXS", mpp))
            else:
                kwargs.update(subfiletype=1 if k else 0, metadata=None)
            tw.write(_tiles(get_band, (h, w), tile, sink), **kwargs)


def write_pyramid(
    path: str | os.PathLike[str],
    image: np.ndarray,
    *,
    levels: int = 4,
    tile: int = 256,
    mpp: float | None = None,
    subifds: bool = False,
    compression: str | None = "zlib",
) -> None:
    """Write an RGB pyramidal TIFF, each level a 2x2 mean of the previous, atomically.

    The default puts the reduced levels in the main IFD chain (SubFileType = 1), which
    OpenSlide, tiffslide and tifffile all read; ``subifds=True`` writes an OME-TIFF with the
    levels in SubIFDs (tifffile, napari, QuPath, Bio-Formats; OpenSlide sees level 0 only).
    ``mpp`` is stored as resolution tags (and OME PhysicalSize) so :func:`open_slide` reads it.
    """
    rgb = to_rgb_uint8(image, name=Path(path).name)
    shapes = _level_shapes(rgb.shape[:2], levels)
    sinks = [np.empty((h, w, 3), np.uint8) for h, w in shapes[1:]]
    _write_levels(
        path,
        shapes,
        lambda y0, y1: rgb[y0:y1],
        sinks,
        tile=tile,
        mpp=mpp,
        subifds=subifds,
        compression=compression,
    )


def write_pyramid_tiles(
    path: str | os.PathLike[str],
    shape: tuple[int, int],
    tile_fn: Callable[[int, int, int, int], np.ndarray],
    *,
    levels: int = 4,
    tile: int = 256,
    mpp: float | None = None,
    subifds: bool = False,
    compression: str | None = "zlib",
) -> None:
    """Like :func:`write_pyramid`, for slides too big for memory.

    ``tile_fn(y, x, h, w)`` returns level-0 pixels (h, w, 3) and is called once per tile, row
    by row. Reduced levels are accumulated in compressed temporary zarr arrays next to
    ``path`` (about a third of the raw size, compressed), so memory stays at a few tile rows.
    """
    import zarr

    shapes = _level_shapes(shape, levels)
    H, W = shapes[0]
    name = Path(path).name

    def band0(y0: int, y1: int) -> np.ndarray:
        band = np.empty((y1 - y0, W, 3), np.uint8)
        for x0 in range(0, W, tile):
            w = min(tile, W - x0)
            t = tile_fn(y0, x0, y1 - y0, w)
            if t.shape[:2] != (y1 - y0, w):
                raise ValueError(f"tile_fn({y0}, {x0}, {y1 - y0}, {w}) returned {t.shape}")
            band[:, x0 : x0 + w] = (
                t if t.dtype == np.uint8 and t.shape[-1:] == (3,) else to_rgb_uint8(t, name)
            )
        return band

    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{name}.levels.") as tmpdir:
        sinks = [
            zarr.open_array(
                os.path.join(tmpdir, str(k)),
                mode="w",
                shape=(h, w, 3),
                chunks=(tile // 2, min(w, 8 * tile), 3),
                dtype="uint8",
            )
            for k, (h, w) in enumerate(shapes[1:], start=1)
        ]
        _write_levels(
            path, shapes, band0, sinks, tile=tile, mpp=mpp, subifds=subifds, compression=compression
        )
