"""npe2 reader: PNG/JPG/BMP/TIFF tiles and pyramidal slides, opened lazily as multiscale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.slide import SUPPORTED_SUFFIXES, open_slide

LayerData = tuple[Any, dict, str]


def _suffix_ok(path: str) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in SUPPORTED_SUFFIXES)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_suffix_ok(p) for p in paths):
        return None
    return read_slides


def read_slides(path: str | list[str]) -> list[LayerData]:
    paths = [path] if isinstance(path, str) else list(path)
    return [slide_layer(p) for p in paths]


def slide_layer(path: str | Path) -> LayerData:
    """One RGB image layer; pyramids as multiscale with their physical scale (µm/px)."""
    try:
        slide = open_slide(path)
    except InputError as exc:
        # napari shows reader errors as a notification; keep it to the one useful line.
        raise ValueError(str(exc)) from None
    levels = slide.levels
    scale = (slide.mpp, slide.mpp) if slide.mpp else (1.0, 1.0)
    meta = {
        "name": Path(path).name,
        "rgb": True,
        "scale": scale,
        "multiscale": len(levels) > 1,
        "metadata": {
            "semimoe_path": str(Path(path).resolve()),
            "mpp": slide.mpp,
            "downsamples": slide.downsamples,
        },
    }
    if slide.mpp and _units_supported():
        meta["units"] = ("µm", "µm")
    data = levels if len(levels) > 1 else levels[0]
    return data, meta, "image"


def _units_supported() -> bool:
    try:
        import inspect

        from napari.layers import Image

        return "units" in inspect.signature(Image.__init__).parameters
    except Exception:  # pragma: no cover - older napari
        return False
