"""The checks of the numbers that define a model and its geometry, in one place.

The CLI, the trainer, the plugin and the checkpoint reader ask the same questions (is this a
model width, is this a tile side the network can take, is this a working scale); here each
question has one answer. A ``*_problem`` function returns what is wrong in words (None if
nothing), so each caller words the refusal in its own terms; :func:`check_geometry` raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import InputError

#: The network halves its input four times: tile sides and input sizes are multiples of this.
TILE_MULTIPLE = 16
MIN_TILE = 16
MAX_TILE = 8192
MAX_SCALE = 1e4
#: Widest model base width accepted anywhere (upstream uses 64; 1024 is already ~27 G params).
MAX_WIDTH = 1024


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def width_problem(width: Any, hi: int = MAX_WIDTH) -> str | None:
    """What is wrong with a model base width (an even integer from 2 to ``hi``)."""
    if not is_int(width) or not 2 <= width <= hi or width % 2:
        return f"must be an even integer from 2 to {hi}, got {width!r}"
    return None


def tile_problem(side: Any, lo: int = MIN_TILE, hi: int = MAX_TILE) -> str | None:
    """What is wrong with a tile side or input size (a multiple of 16 in [lo, hi])."""
    if not is_int(side) or not lo <= side <= hi or side % TILE_MULTIPLE:
        return f"must be a multiple of {TILE_MULTIPLE} from {lo} to {hi}, got {side!r}"
    return None


def geometry_problem(
    scale: Any, input_size: Any, tile: Any, spell: Callable[[str], str] = str
) -> str | None:
    """What is wrong with a working geometry, naming the setting with ``spell`` (the CLI
    spells ``input_size`` as ``--input-size``). ``input_size`` and a ``scale`` other than 1
    are exclusive: a whole-image model is not also downsampled."""
    if input_size is not None:
        bad = tile_problem(input_size)
        if bad:
            return f"{spell('input_size')} {bad}"
    if not is_number(scale) or not 1 <= scale <= MAX_SCALE:
        return (
            f"{spell('scale')} is a downsample factor and must be a number from 1 to "
            f"{MAX_SCALE:g}, got {scale!r}"
        )
    if input_size is not None and scale != 1:
        return f"use either {spell('input_size')} or {spell('scale')}, not both"
    bad = tile_problem(tile)
    return f"{spell('tile')} {bad}" if bad else None


def check_geometry(
    scale: Any = 1.0, input_size: Any = None, tile: Any = 256, spell: Callable[[str], str] = str
):
    """The :class:`~.data.Geometry` of these settings, or :class:`InputError` saying what
    is wrong."""
    from .data import Geometry

    bad = geometry_problem(scale, input_size, tile, spell)
    if bad:
        raise InputError(bad)
    return Geometry(scale=float(scale), input_size=input_size, tile=tile)


__all__ = [
    "MAX_TILE",
    "MIN_TILE",
    "TILE_MULTIPLE",
    "check_geometry",
    "geometry_problem",
    "is_int",
    "is_number",
    "tile_problem",
    "width_problem",
]
