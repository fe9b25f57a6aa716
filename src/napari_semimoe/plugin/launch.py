"""``napari-semimoe gui``: napari with a sample loaded into a project and the widget docked.

The default sample is real tissue (six EBHI-Seg colon biopsies, three annotated): a
pathologist judges the tool on real glands first. ``sample="synthetic"`` opens the generated
H&E-like slide the benchmarks use."""

from __future__ import annotations

from pathlib import Path

#: sample -> (napari sample key, default project folder under ~/napari-semimoe-projects)
SAMPLES = {"real": ("ebhi-sample", "ebhi-sample"), "synthetic": ("he-sample", "sample")}


def launch(project: str | Path | None = None, sample: bool | str = True, run: bool = True):
    """Open napari with ``sample`` ("real", the default when True; "synthetic"; False: none)
    in ``project`` (default ``~/napari-semimoe-projects/<sample>``) and the dock."""
    import napari

    from .layers import LABELS_LAYER
    from .widget import SemiMoEWidget

    kind = "real" if sample is True else sample or None
    if kind is not None and kind not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; known: {', '.join(SAMPLES)}")
    viewer = napari.Viewer(title="napari-semimoe")
    if kind is not None:
        viewer.open_sample("napari-semimoe", SAMPLES[kind][0])
    folder = SAMPLES[kind or "synthetic"][1]
    project = Path(project) if project else Path.home() / "napari-semimoe-projects" / folder
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Semi-MoE", area="right")
    widget.set_project(project)
    if LABELS_LAYER in viewer.layers:  # the brush at hand, not the last layer the sample added
        viewer.layers.selection.active = viewer.layers[LABELS_LAYER]
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
