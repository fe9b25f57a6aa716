"""Screenshots for docs/ from a real run under Xvfb: slide + widget mid-training, overlays.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    from gui_session import open_session
    from napari_semimoe.plugin.widget import camera

    OUT.mkdir(parents=True, exist_ok=True)
    viewer, widget, pump = open_session("semimoe-shots-")

    pump(1)
    viewer.screenshot(str(OUT / "01-sample-slide.png"), canvas_only=False)
    widget.train_panel.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
    widget.train_panel.start_training()
    while widget.train_panel.progress.value() < widget.train_panel.iter_spin.value() // 2:
        pump(0.5)
    viewer.screenshot(str(OUT / "02-training-mid-run.png"), canvas_only=False)
    while (
        widget.train_panel.job is None
        or not widget.train_panel.job.finished
        or widget.train_panel._poll.isActive()
    ):
        pump(0.5)
    viewer.screenshot(str(OUT / "03-training-done.png"), canvas_only=False)
    widget._toolbox_review()
    widget.review_panel.predict("image")
    while (
        widget.review_panel.cancel_btn.isEnabled()
        or widget.review_panel.showing_prediction
        or ("Semi-MoE segmentation" not in viewer.layers)
    ):
        pump(0.5)
    pump(1)
    viewer.layers["annotations"].visible = False
    viewer.layers["training tiles"].visible = True
    viewer.screenshot(str(OUT / "04-gated-segmentation.png"), canvas_only=False)
    viewer.layers["Semi-MoE segmentation"].visible = False
    viewer.layers["Semi-MoE SDF"].visible = True
    viewer.screenshot(str(OUT / "05-sdf.png"), canvas_only=False)
    viewer.layers["Semi-MoE SDF"].visible = False
    viewer.layers["Semi-MoE boundary"].visible = True
    viewer.screenshot(str(OUT / "06-boundary.png"), canvas_only=False)
    viewer.layers["Semi-MoE boundary"].visible = False
    viewer.layers["Semi-MoE uncertainty"].visible = True
    viewer.layers["Semi-MoE gates"].visible = True
    camera(viewer).zoom = camera(viewer).zoom * 2.5
    viewer.screenshot(str(OUT / "07-uncertainty-gates.png"), canvas_only=False)
    # 3 · Review after one Accept in the default mode (my painting wins): the history lists
    # the version kept before it; Undo and Restore are at hand.
    viewer.layers["Semi-MoE uncertainty"].visible = False
    viewer.layers["Semi-MoE gates"].visible = False
    viewer.layers["annotations"].visible = True
    widget.review_panel.accept_prediction()
    pump(1)
    viewer.screenshot(str(OUT / "13-accepted-history.png"), canvas_only=False)
    viewer.close()
    print("screenshots in", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
