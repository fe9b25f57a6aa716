"""npe2 reader: PNG/JPG/BMP/TIFF tiles and pyramidal slides, opened lazily as multiscale, and
the maps ``napari-semimoe predict`` writes (``NAME_mask.tif``, ``NAME_prob.tif``, ...), shown
as the plugin shows them and in the slide's physical units. The map names and their styles
come from the registered model families' tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.slide import SUPPORTED_SUFFIXES, open_map, open_slide

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
    return [_layer(p) for p in paths]


def _layer(path: str) -> LayerData:
    if key := prediction_key(path):
        try:
            return map_layer(path, key)
        except ValueError as exc:
            # Only the name looked like a prediction (an RGB "biopsy_mask.tif"): a slide,
            # if it opens as one; otherwise the map's error is the one to show.
            try:
                return slide_layer(path)
            except ValueError:
                raise exc from None
    return slide_layer(path)


def prediction_key(path: str | Path) -> str | None:
    """``slide_prob.tif`` -> ``"prob"``; None for anything that is not a prediction map."""
    from .layer_styles import prediction_keys

    name = Path(path).name.lower()
    for ext in (".tif", ".tiff"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            return next((k for k in prediction_keys() if stem.endswith("_" + k)), None)
    return None


def map_layer(path: str | Path, key: str) -> LayerData:
    """A prediction map: labels for the mask and instances, a styled image for the rest;
    multiscale when the file is a pyramid; scaled in µm when it carries a pixel size."""
    from .layer_styles import LABEL_OPACITY, map_style

    try:
        m = open_map(path)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    levels = m.levels
    meta: dict[str, Any] = {
        "name": Path(path).stem,
        "scale": (m.mpp, m.mpp) if m.mpp else (1.0, 1.0),
        "multiscale": len(levels) > 1,
        "metadata": {"semimoe_path": str(Path(path).resolve()), "mpp": m.mpp},
    }
    if m.mpp and _units_supported():
        meta["units"] = ("µm", "µm")
    data = levels if len(levels) > 1 else levels[0]
    if key in LABEL_OPACITY:
        meta["opacity"] = LABEL_OPACITY[key]
        return data, meta, "labels"
    meta.update(map_style(key))
    return data, meta, "image"


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
