"""How prediction maps look in napari; shared by the widget and the reader of the TIFFs that
``napari-semimoe predict`` writes, so a headless prediction opens as the plugin shows it."""

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


def map_style(key: str) -> dict[str, Any]:
    """Image-layer keyword arguments for a float map: SDF, uncertainty, boundary, probability."""
    if "sdf" in key:
        return {
            "colormap": sdf_colormap(),
            "contrast_limits": (-1, 1),
            "opacity": 0.7,
            "blending": "translucent",
        }
    if key == "uncertainty":
        return {"colormap": "inferno", "contrast_limits": (0, 1), "blending": "additive"}
    return {
        "colormap": "magma" if "boundary" in key else "viridis",
        "contrast_limits": (0, 1),
        "blending": "additive",
    }
