"""Where the tiles of a prediction go, how their outputs are weighted where they overlap,
and how a tile at the image border is filled."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

#: ``read(y, x, h, w) -> uint8 (h, w, 3)`` in working-scale pixels.
RegionReader = Callable[[int, int, int, int], np.ndarray]


@dataclass
class TileGrid:
    """Tile origins (working scale) covering an h x w image with a given overlap."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    ys: list[int] = field(init=False)
    xs: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.ys = tile_starts(self.shape[0], self.tile, self.overlap)
        self.xs = tile_starts(self.shape[1], self.tile, self.overlap)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((y, x) for y in self.ys for x in self.xs)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Origins along one axis of length ``n``, spread evenly so the last tile ends exactly
    at the border."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    k = math.ceil((n - tile) / stride)
    return [round(i * (n - tile) / k) for i in range(k + 1)]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """Separable weight that rises smoothly (sin^2) over ``overlap`` px from each edge.

    Strictly positive, so a pixel covered by a single tile (at the image border) keeps its
    value after normalisation.
    """
    if overlap <= 0:
        return np.ones((tile, tile), np.float32)
    d = np.minimum(np.arange(tile), np.arange(tile)[::-1]).astype(np.float32)
    r = np.clip((d + 0.5) / overlap, 0.0, 1.0)
    v = np.sin(0.5 * np.pi * r) ** 2
    v = np.maximum(v, 1e-3)
    return np.outer(v, v).astype(np.float32)


def read_padded(read: RegionReader, y: int, x: int, th: int, tw: int, h: int, w: int) -> np.ndarray:
    """A full th x tw tile; parts beyond the image are mirrored, so the net sees
    tissue-like context rather than a hard edge (numpy mirrors repeatedly if needed)."""
    hh, ww = min(th, h - y), min(tw, w - x)
    a = np.asarray(read(y, x, hh, ww))
    if a.shape[:2] == (th, tw):
        return a
    return np.pad(a, ((0, th - a.shape[0]), (0, tw - a.shape[1]), (0, 0)), mode="symmetric")
