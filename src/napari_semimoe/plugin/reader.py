"""npe2 reader: PNG/JPG/BMP/TIFF tiles and pyramidal slides, opened lazily as multiscale, and
the maps ``napari-semimoe predict`` writes (``NAME_mask.tif``, ``NAME_prob.tif``, ...), shown
as the plugin shows them and in the slide's physical units, and the OME-Zarr outputs of
``napari-semimoe cohort`` (``NAME.ome.zarr``: maps and labels, opened lazily). The map
names and their styles come from the registered model families' tasks; a multi-class
model's ``NAME_classes.tif`` opens as Labels (named and coloured by a ``classes.json``
beside it or one folder up) and ``NAME_prob_<k>.tif`` as class k's probability."""

from __future__ import annotations

import re
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
    if paths and all(is_cohort_zarr(p) for p in paths):
        return read_cohort_zarrs
    if not paths or not all(_suffix_ok(p) for p in paths):
        return None
    return read_slides


def is_cohort_zarr(path: str | Path) -> bool:
    """A finished ``cohort`` output: an OME-Zarr folder whose metadata names our maps."""
    from ..core.cohort import is_complete

    p = Path(path)
    return p.is_dir() and p.name.lower().endswith(".zarr") and is_complete(p)


def read_cohort_zarrs(path: str | list[str]) -> list[LayerData]:
    paths = [path] if isinstance(path, str) else list(path)
    return [layer for p in paths for layer in cohort_layers(p)]


def cohort_layers(path: str | Path) -> list[LayerData]:
    """The float maps (one image layer each, styled as the plugin shows them) and the
    mask and instance labels of a cohort output, multiscale, every level a zarr array
    (nothing is read until napari draws it), scaled in µm when the slide gave its mpp."""
    import dask.array as da
    import zarr

    from ..core.cohort.layout import read_semimoe
    from .layer_styles import LABEL_OPACITY, map_style

    p = Path(path)
    root = zarr.open_group(p, mode="r")
    ms = dict(root.attrs).get("ome", dict(root.attrs))["multiscales"][0]
    sem = read_semimoe(p)
    name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
    scale = tuple(ms["datasets"][0]["coordinateTransformations"][0]["scale"][-2:])
    units = sem.get("working_mpp") is not None and _units_supported()
    levels = [root[d["path"]] for d in ms["datasets"]]
    base = {"scale": scale, "multiscale": len(levels) > 1}
    if units:
        base["units"] = ("µm", "µm")
    out: list[LayerData] = []
    for key in ("mask", "instances"):
        g = root["labels"][key]
        lv = [g[d["path"]] for d in g.attrs.get("ome", dict(g.attrs))["multiscales"][0]["datasets"]]
        meta = {
            **base,
            "name": f"{name}_{key}",
            "opacity": LABEL_OPACITY.get(key, 0.5),
            "metadata": {"semimoe_path": str(p.resolve()), "mpp": sem.get("working_mpp")},
        }
        out.append((lv if len(lv) > 1 else lv[0], meta, "labels"))
    for c, key in enumerate(sem.get("maps", [])):
        lv = [da.from_zarr(a)[c] for a in levels]  # lazy: one chunk per napari tile
        meta = {
            **base,
            "name": f"{name}_{key}",
            "metadata": {"semimoe_path": str(p.resolve()), "mpp": sem.get("working_mpp")},
            **map_style(key),
        }
        out.append((lv if len(lv) > 1 else lv[0], meta, "image"))
    return out


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
            if stem.endswith("_classes"):  # a multi-class model's class map
                return "classes"
            if m := _CLASS_PROB.search(stem):  # one class's probability
                return f"prob_{int(m[1])}"
            return next((k for k in prediction_keys() if stem.endswith("_" + k)), None)
    return None


_CLASS_PROB = re.compile(r"_prob_(\d{1,3})$")


def _class_table_near(path: str | Path):
    """The ``classes.json`` beside a prediction (or one folder up, a data folder's), if
    any: the class map is then named and coloured; unreadable or absent: None."""
    from ..core.classes import read_classes

    for d in (Path(path).parent, Path(path).parent.parent):
        try:
            table = read_classes(d)
        except InputError:
            return None
        if table is not None:
            return table
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
    if key == "classes":
        meta["opacity"] = 0.5
        table = _class_table_near(path)
        if table is not None:  # the class names under the cursor, the class colours
            meta["colormap"] = {0: "transparent", None: "#ff00ff"} | {
                k: table.colours[k] for k in range(1, table.n_foreground + 1)
            }
            meta["features"] = {"index": list(table.ids), "class": list(table.names)}
        return data, meta, "labels"
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
