"""*File › IO Utilities › Open slide with Semi-MoE…*: any slide this plugin reads, opened as
its reader does (pyramids lazily, in µm), whatever its name. napari only hands a file to
this plugin's reader when the name matches its patterns, and those leave plain ``.tif`` to
napari's own reader (no "Choose reader" prompt for plain images); a whole-slide pyramid
saved as a plain ``.tif`` opens here instead of being loaded whole at full resolution."""

from __future__ import annotations

from pathlib import Path

import napari

from .reader import read_slides

SLIDE_FILTER = (
    "Slides and images (*.tif *.tiff *.svs *.ndpi *.scn *.bif *.qptiff *.btf *.tf8 "
    "*.png *.jpg *.jpeg *.bmp)"
)


def add_slide(viewer: napari.viewer.Viewer, path: str | Path) -> list:
    """Open ``path`` with this plugin's reader into ``viewer``; returns the layers added."""
    layers = []
    for data, meta, kind in read_slides(str(path)):
        layer = getattr(viewer, f"add_{kind}")(data, **meta)
        layers.append(layer)
    return layers


def open_slide_dialog(viewer: napari.viewer.Viewer) -> None:
    """The menu command: choose files, open each (a file that fails says why, in one line)."""
    from qtpy.QtWidgets import QFileDialog

    from .common import notify

    paths, _ = QFileDialog.getOpenFileNames(None, "Open slide with Semi-MoE", "", SLIDE_FILTER)
    for p in paths:
        try:
            add_slide(viewer, p)
        except ValueError as exc:  # the reader's one-line errors
            notify(str(exc), "warning")
