"""``napari-semimoe gui``: napari with the sample slide loaded and the widget docked."""

from __future__ import annotations

from pathlib import Path


def launch(project: str | Path | None = None, sample: bool = True, run: bool = True):
    import napari

    from .widget import SemiMoEWidget

    viewer = napari.Viewer(title="napari-semimoe")
    if sample:
        viewer.open_sample("napari-semimoe", "he-sample")
    project = Path(project) if project else Path.home() / "napari-semimoe-projects" / "sample"
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Semi-MoE", area="right")
    widget.set_project(project)
    if run:
        napari.run()
    return viewer, widget
