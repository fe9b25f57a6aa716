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
    _use_the_screen(viewer)
    if run:
        napari.run()
    return viewer, widget


def _use_the_screen(viewer, share: float = 0.9) -> None:
    """A first start (no saved window size) opens at Qt's default ~950 x 550, which leaves the
    slide a strip beside the docked panels: take most of the screen instead."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is None:
        return
    avail = screen.availableGeometry()
    _, _, w, h = viewer.window.geometry()
    if w >= share * 0.75 * avail.width() and h >= share * 0.75 * avail.height():
        return  # napari restored a size the user chose
    W, H = int(avail.width() * share), int(avail.height() * share)
    left = avail.x() + (avail.width() - W) // 2
    top = avail.y() + (avail.height() - H) // 2
    viewer.window.set_geometry(left, top, W, H)
