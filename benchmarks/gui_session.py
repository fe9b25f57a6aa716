"""Shared set-up of the GUI scripts in benchmarks/: napari with the sample and the widget in
a fresh project, a fixed window size, and a helper that lets the event loop run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def open_session(prefix: str = "semimoe-gui-", sample: str = "synthetic", project=None):
    """(viewer, widget, pump): a sample ("synthetic" or "real") fitted to a 1500 x 950 window,
    in a fresh project (or in ``project``, a folder kept between runs)."""
    from qtpy.QtWidgets import QApplication

    from napari_semimoe.plugin.launch import launch

    # the generated slide: larger than the real sample, and the numbers in docs/ are on it
    folder = Path(project or tempfile.mkdtemp(prefix=prefix))
    viewer, widget = launch(folder, sample=sample, run=False)
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    app.processEvents()  # apply the new size, then fit the slide to it
    viewer.reset_view()

    def pump(seconds: float) -> None:
        t = time.perf_counter() + seconds
        while time.perf_counter() < t:
            app.processEvents()
            time.sleep(0.01)

    return viewer, widget, pump


def shots(viewer, pump, default: Path):
    """``shot(name)``: a screenshot of the whole window into ``$SEMIMOE_SHOTS_DIR`` (or
    ``default``), after letting the event loop draw."""
    import os

    out = Path(os.environ.get("SEMIMOE_SHOTS_DIR", default))
    out.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        pump(0.5)
        viewer.screenshot(str(out / name), canvas_only=False)

    return shot


def train_and_review(widget, pump) -> None:
    """Start the Train page's training, wait for it to end and for the view's prediction
    (page 3) that follows by itself."""
    tp, rp = widget.train_panel, widget.review_panel
    tp.start_training()
    while tp.job is None or not tp.job.finished or tp._poll.isActive():
        pump(0.5)
    while rp.cancel_btn.isEnabled() or rp.showing_prediction:
        pump(0.5)
