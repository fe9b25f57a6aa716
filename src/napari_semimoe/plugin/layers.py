"""The session's access to napari's layers: the current image, the annotations (Labels) and
the training tiles (Shapes), and slides read from image layers. The only module that knows
the names and styles of those layers; the panels go through it (and the session through the
:class:`.session.LayerAccess` protocol it implements)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.classes import ClassTable
from ..core.errors import InputError
from ..core.project import ImageEntry
from ..core.slide import Slide
from .background_label import show_background_label
from .class_layers import style_class_annotations, styled_with, unstyle_classes
from .layer_styles import LEGEND, legend_of, style_annotations

TILES_LAYER = "training tiles"
LABELS_LAYER = "annotations"
#: How training tiles are drawn, wherever they come from (added, restored, the sample's).
TILE_STYLE = {"edge_color": "yellow", "face_color": "transparent", "edge_width": 6}
TILES_LEGEND = legend_of("swatches", TILES_LAYER, items=[("yellow", "training tile")])


class NapariLayers:
    """Layer access over a viewer; ``current`` gives the name of the selected image."""

    def __init__(self, viewer: Any, current: Callable[[], str]) -> None:
        self.viewer = viewer
        self.current = current
        self.entry: Callable[[], ImageEntry | None] = lambda: None
        #: the project's class table (None: binary, the annotations in gland colours)
        self.classes: Callable[[], ClassTable | None] = lambda: None
        self.drawing_tiles = False  # True while tiles are drawn from the project (no edit)

    # ------------------------------------------------------------------ layers

    def image(self):
        name = self.current()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def labels_scale(self) -> float:
        e = self.entry()
        return e.labels_scale if e is not None else 1.0

    def labels(self, create: bool = False):
        """The annotations layer (made when ``create``), in the annotation colours whoever
        made it (the sample, a file the user opened)."""
        if LABELS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[LABELS_LAYER]
            self._style(layer)
            return layer
        if not create or self.image() is None:
            return None
        data = np.zeros(self.labels_shape(), np.uint16)
        layer = self.viewer.add_labels(
            data, name=LABELS_LAYER, scale=tuple(self.base_scale() * self.labels_scale())
        )
        self._style(layer)
        return layer

    def _style(self, layer) -> None:
        """The annotation colours (also on a layer that came with the image): a binary
        project's gland palette and background grey, or the project's class colours."""
        table = self.classes()
        if table is not None:
            if styled_with(layer) != table.to_list():
                style_class_annotations(layer, table)
            return
        if styled_with(layer) is not None:
            unstyle_classes(layer)
        if LEGEND not in layer.metadata:
            style_annotations(layer)
        show_background_label(layer)  # the background brush's own colour

    def select_annotations(self) -> None:
        """Put the annotations on top and select them with the brush at hand (after a
        prediction added its layers, which napari selects as they come)."""
        layer = self.labels()
        if layer is None:
            return
        layers = self.viewer.layers
        for top in (self.tiles(), layer):  # the tiles under the annotations, both on top
            if top is not None and layers.index(top) != len(layers) - 1:
                layers.move(layers.index(top), len(layers))
        layers.selection.active = layer
        if layer.editable and layer.visible:
            layer.mode = "paint"

    def tiles(self, create: bool = False):
        if TILES_LAYER in self.viewer.layers:
            layer = self.viewer.layers[TILES_LAYER]
            layer.metadata.setdefault(LEGEND, TILES_LEGEND)
            return layer
        if not create:
            return None
        layer = self.viewer.add_shapes(
            name=TILES_LAYER, shape_type="rectangle", scale=tuple(self.base_scale()), **TILE_STYLE
        )
        layer.metadata[LEGEND] = TILES_LEGEND
        return layer

    def tile_rects(self) -> list[np.ndarray] | None:
        """The drawn tiles (level-0 px corners); None when there is no tiles layer or the
        tiles are being drawn from the project (nothing the user edited)."""
        layer = self.tiles()
        if layer is None or self.drawing_tiles:
            return None
        return list(layer.data)

    def show_tiles(self, rects: list[np.ndarray]) -> None:
        """Draw the training tiles in one style (restored ones were drawn 1 px wide: napari
        gives shapes set through ``data`` its default edge width)."""
        layer = self.tiles(create=True)
        self.drawing_tiles = True  # not an edit of the user's: nothing to sync back
        try:
            layer.selected_data = set()
            layer.data = []
            if rects:
                layer.add_rectangles(rects, **TILE_STYLE)
        finally:
            self.drawing_tiles = False
        layer.current_edge_color = TILE_STYLE["edge_color"]
        layer.current_face_color = TILE_STYLE["face_color"]
        layer.current_edge_width = TILE_STYLE["edge_width"]
        layer.refresh()

    def add_tile(self, r: np.ndarray) -> None:
        """One more training tile (level-0 px corners), in the tiles' style."""
        self.tiles(create=True).add_rectangles([r], **TILE_STYLE)

    def replace_labels(self, data: np.ndarray) -> None:
        layer = self.labels()
        layer.data = data
        layer.scale = tuple(self.base_scale() * self.labels_scale())

    def remove(self, names) -> None:
        for name in names:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    # ------------------------------------------------------------------ geometry

    def base_scale(self) -> np.ndarray:
        img = self.image()
        return np.asarray(img.scale[-2:] if img is not None else (1.0, 1.0), float)

    def slide_shape(self) -> tuple[int, int]:
        img = self.image()
        data = img.data[0] if img.multiscale else img.data
        return tuple(int(n) for n in data.shape[:2])

    def labels_shape(self) -> tuple[int, int]:
        H, W = self.slide_shape()
        ls = self.labels_scale()
        return round(H / ls), round(W / ls)

    # ------------------------------------------------------------------ slides

    def slide(self, img=None) -> Slide:
        """An image layer as a lazily read slide (pyramid levels or in-memory array)."""
        img = img if img is not None else self.image()
        if img is None:
            raise InputError("no image layer: open a slide (File > Open) first")
        if img.multiscale:
            levels = list(img.data)
            h0 = levels[0].shape[0]
            downs = [h0 / lv.shape[0] for lv in levels]
            return Slide(Path(img.name), levels, downs, None)
        return Slide(Path(img.name), [img.data], [1.0], None)

    def slide_of(self, entry: ImageEntry) -> Slide | None:
        """An image of the project: its layer if open, else its file, else None."""
        if entry.name in self.viewer.layers:
            return self.slide(self.viewer.layers[entry.name])
        if entry.path and Path(entry.path).exists():
            from ..core.slide import open_slide

            return open_slide(entry.path)
        return None
