"""How prediction maps look in napari; shared by the widget and the reader of the TIFFs that
``napari-semimoe predict`` writes, so a headless prediction opens as the plugin shows it.
Each model family's tasks declare their maps' styles; this module turns them into napari
keyword arguments."""

from __future__ import annotations

from typing import Any


def sdf_colormap():
    """Diverging map centred on 0 (the gland edge): blue outside, white edge, red inside."""
    from napari.utils import Colormap

    return Colormap(
        [[0.13, 0.40, 0.67, 1], [0.97, 0.97, 0.97, 1], [0.70, 0.09, 0.17, 1]], name="semimoe-sdf"
    )


#: Labels-layer opacity of the predicted label maps, in the widget and the reader.
LABEL_OPACITY = {"instances": 0.6, "mask": 0.5}


#: Float maps that belong to no model family (the suggestion panel's uncertainty map).
EXTRA_STYLES = {
    "uncertainty": {"colormap": "inferno", "contrast_limits": (0, 1), "blending": "additive"}
}


def map_style(key: str) -> dict[str, Any]:
    """Image-layer keyword arguments for a float map, from the style its task declares
    (:class:`~napari_semimoe.core.families.MapStyle`); an unknown map: viridis, additive."""
    from ..core.families import MapStyle, output_styles

    if key in EXTRA_STYLES:
        return dict(EXTRA_STYLES[key])
    kw = output_styles().get(key, MapStyle()).to_kwargs()
    if kw["colormap"] == "semimoe-sdf":
        kw["colormap"] = sdf_colormap()
    return kw


def prediction_keys() -> tuple[str, ...]:
    """Every map name a prediction writes as NAME_<key>.tif (every family's), longest first
    so that ``expert_prob`` is matched before ``prob``."""
    from ..core.families import output_styles

    return tuple(sorted({*output_styles(), *LABEL_OPACITY}, key=lambda k: (-len(k), k)))
