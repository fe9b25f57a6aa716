"""Small napari helpers shared by the dock's parts (no dock state here, so any part may
import it without an import cycle)."""

from __future__ import annotations

import numpy as np


def notify(msg: str, level: str = "info") -> None:
    """A napari notification (info, warning, error)."""
    from napari.utils import notifications

    getattr(notifications, f"show_{level}")(msg)


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer) -> tuple[float, float] | None:
    """The canvas size in screen px, (h, w): ``viewer.canvas.size`` (public in recent
    napari, napari#8633), else the Qt canvas' (``window._qt_viewer``: older napari has no
    public accessor, napari#4148); None without either."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "size"):
        return tuple(float(v) for v in canvas.size)
    try:
        return tuple(float(v) for v in viewer.window._qt_viewer.canvas.size)
    except AttributeError:
        return None


def rect(y: float, x: float, h: float, w: float) -> np.ndarray:
    """A rectangle's four corners (napari shapes order)."""
    return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], float)


def qt_alive(obj) -> bool:
    """False once the C++ side of a Qt object is gone (the dock was closed while a thread's
    work was still running; its ``finished`` arrives later)."""
    try:
        from qtpy import sip

        return not sip.isdeleted(obj)
    except ImportError:  # PySide
        from qtpy import shiboken

        return shiboken.isValid(obj)
