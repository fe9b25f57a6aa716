"""How class ids look in napari: the annotations of a multi-class project and a model's
class map, each id in its class's colour and named in the status bar (the layer's
``features``: napari names the label under the cursor) and in the legend.

A binary project never comes here: its annotations keep the gland palette and the
background brush's grey (:mod:`.layer_styles`, :mod:`.background_label`).
"""

from __future__ import annotations

from typing import Any

from ..core.classes import ClassTable
from ..core.sparse import BACKGROUND_LABEL
from .background_label import BACKGROUND_COLOUR, BACKGROUND_NAME
from .layer_styles import ANNOTATION_OPACITY, LEGEND, legend_of

#: Metadata key: the class table (entries) a layer was styled with.
CLASS_STYLE = "semimoe_classes"
#: Any id that is no class of the table (e.g. left by an old version): loud magenta.
NO_CLASS_COLOUR = "#ff00ff"
CLASS_MAP_OPACITY = 0.5
_BACKGROUND_HEX = "#" + "".join(f"{round(255 * v):02x}" for v in BACKGROUND_COLOUR[:3])


def class_colormap(table: ClassTable, brush: bool = True) -> Any:
    """0 clear, class k in its colour, the background brush (``brush``) light grey."""
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[Any, Any] = {0: (0, 0, 0, 0), None: NO_CLASS_COLOUR}
    for k in range(1, table.n_foreground + 1):
        colours[k] = table.colours[k]
    if brush:
        colours[BACKGROUND_LABEL] = BACKGROUND_COLOUR
    return DirectLabelColormap(color_dict=colours)


def class_features(table: ClassTable, brush: bool = True) -> dict[str, list]:
    """The layer's features: each id's class name (what the status bar shows)."""
    ids = list(table.ids)
    names = ["unpainted" if brush else table.names[0], *table.names[1:]]
    if brush:
        ids.append(BACKGROUND_LABEL)
        names.append(BACKGROUND_NAME)
    return {"index": ids, "class": names}


def class_legend(table: ClassTable, brush: bool = True, help_line: str = "") -> dict[str, Any]:
    """Swatches: each foreground class in its colour and name (and the painted background)."""
    items = [(table.colours[k], table.names[k]) for k in range(1, table.n_foreground + 1)]
    if brush:
        items.append((_BACKGROUND_HEX, BACKGROUND_NAME))
    leg = legend_of("swatches", "annotations", items=items)
    if help_line:
        leg["help"] = help_line
    return leg


ANNOTATION_HELP = (
    "Your painting: what the model learns from, one colour per class (pick the class next "
    "to the brush in 1 · Project); the name of the class under the cursor is in the status bar."
)
CLASS_MAP_HELP = (
    "The model's class map: the class it predicts at each pixel, in the class's colour "
    "(clear: background); the class under the cursor is named in the status bar."
)


def style_class_annotations(layer: Any, table: ClassTable) -> None:
    """The annotations layer of a multi-class project: class colours, names and legend."""
    layer.colormap = class_colormap(table)
    layer.features = class_features(table)
    layer.opacity = ANNOTATION_OPACITY
    layer.metadata[LEGEND] = class_legend(table, help_line=ANNOTATION_HELP)
    layer.metadata[CLASS_STYLE] = table.to_list()


def style_class_map(layer: Any, table: ClassTable) -> None:
    """A model's class map (ids 0..C): class colours, names and legend, half see-through."""
    layer.colormap = class_colormap(table, brush=False)
    layer.features = class_features(table, brush=False)
    layer.opacity = CLASS_MAP_OPACITY
    layer.metadata[LEGEND] = class_legend(table, brush=False, help_line=CLASS_MAP_HELP)
    layer.metadata[CLASS_STYLE] = table.to_list()


def styled_with(layer: Any) -> list | None:
    """The class table (entries) a layer was styled with; None: not class-styled."""
    return layer.metadata.get(CLASS_STYLE)


def unstyle_classes(layer: Any) -> None:
    """Back to a binary project's look (a binary project opened after a multi-class one)."""
    layer.metadata.pop(CLASS_STYLE, None)
    layer.metadata.pop(LEGEND, None)
    layer.features = {}
