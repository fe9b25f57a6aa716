"""Mergers: where the weighted tile outputs of a prediction are summed and normalised.

One interface, three stores: in memory (an image), memory-mapped files (a slide on this
machine: bounded memory), and zarr arrays (chunked, for predictions that other processes or
machines read or write, e.g. a cohort on a cluster). All three give identical maps.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: Rows normalised at a time (bounds the memory of disk-backed maps).
BAND = 1024


class Merger(abc.ABC):
    """Sums ``map * window`` per output map and the windows, then divides (``finish``).

    ``names`` are the float maps; ``fills`` their value where no tile was predicted.
    """

    def __init__(self, names: Sequence[str], shape: tuple[int, int], fills: Mapping[str, float]):
        self.names = list(names)
        self.shape = (int(shape[0]), int(shape[1]))
        self.fills = {k: float(fills[k]) for k in self.names}
        self.acc = {k: self._array(k) for k in self.names}
        self.weight = self._array("_weight")

    @abc.abstractmethod
    def _array(self, name: str):
        """A zero-filled float32 2-D array of ``shape`` that supports slicing (read, write)."""

    def add(self, y: int, x: int, maps: Mapping[str, np.ndarray], window: np.ndarray) -> None:
        """Add one tile's maps (each at least the window's size) at (y, x), cropped to the
        image."""
        hh, ww = min(window.shape[0], self.shape[0] - y), min(window.shape[1], self.shape[1] - x)
        win = window[:hh, :ww]
        for k in self.names:
            self._add(self.acc[k], y, x, maps[k][:hh, :ww] * win)
        self._add(self.weight, y, x, win)

    def _add(self, a, y: int, x: int, v: np.ndarray) -> None:
        a[y : y + v.shape[0], x : x + v.shape[1]] += v

    def finish(self) -> dict[str, np.ndarray]:
        """Normalise band by band; returns the maps (arrays of this merger's store)."""
        h = self.shape[0]
        for y0 in range(0, h, BAND):
            ws = np.asarray(self.weight[y0 : y0 + BAND])
            covered = ws > 0
            for k in self.names:
                band = np.array(self.acc[k][y0 : y0 + BAND])
                np.divide(band, ws, out=band, where=covered)
                band[~covered] = self.fills[k]
                self.acc[k][y0 : y0 + BAND] = band
        return dict(self.acc)


class InMemoryMerger(Merger):
    """numpy arrays in memory: an image's prediction."""

    def _array(self, name: str) -> np.ndarray:
        return np.zeros(self.shape, np.float32)


class MemmapMerger(Merger):
    """np.memmap files ``NAME.f32`` in ``folder``: a whole slide never has to fit in memory."""

    def __init__(self, names, shape, fills, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        super().__init__(names, shape, fills)

    def _array(self, name: str) -> np.ndarray:
        return np.memmap(self.folder / f"{name}.f32", dtype=np.float32, mode="w+", shape=self.shape)


class ZarrMerger(Merger):
    """Chunked zarr arrays in a zarr group at ``store`` (a folder path, or any zarr store)."""

    def __init__(self, names, shape, fills, store, chunk: int = 1024) -> None:
        import zarr

        self.chunk = int(chunk)
        self.group = zarr.open_group(store, mode="w")
        super().__init__(names, shape, fills)

    def _array(self, name: str):
        c = self.chunk
        return self.group.create_array(
            name, shape=self.shape, chunks=(c, c), dtype="float32", fill_value=0.0
        )

    def _add(self, a, y: int, x: int, v: np.ndarray) -> None:
        sl = (slice(y, y + v.shape[0]), slice(x, x + v.shape[1]))
        cur = a[sl]
        cur += v
        a[sl] = cur


def make_merger(
    names: Sequence[str],
    shape: tuple[int, int],
    fills: Mapping[str, float],
    out_dir: str | Path | None = None,
    kind: str | None = None,
) -> Merger:
    """``kind``: "memory", "memmap" or "zarr"; by default memmap with ``out_dir``, else memory."""
    kind = kind or ("memory" if out_dir is None else "memmap")
    if kind == "memory":
        return InMemoryMerger(names, shape, fills)
    if out_dir is None:
        raise ValueError(f"a {kind} merger needs a folder")
    if kind == "memmap":
        return MemmapMerger(names, shape, fills, out_dir)
    if kind == "zarr":
        return ZarrMerger(names, shape, fills, str(out_dir))
    raise ValueError(f"unknown merger {kind!r} (memory, memmap or zarr)")
