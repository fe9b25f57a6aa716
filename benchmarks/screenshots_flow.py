"""Screenshots of the flow under Xvfb: the live preview mid-training, the prediction made
when training ends, and the export page, on the real sample (benchmarks/screenshots.py takes
the sample as the gui opens it, 01-sample-slide.png).

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_flow.py [ITERS]

SEMIMOE_SHOTS_PROJECT=folder (a project benchmarks/screenshots.py trained) continues its
model for ITERS steps instead of training a small one from scratch, so that the preview
shows what a trained model finds; SEMIMOE_SHOTS_DIR=folder writes the pictures there.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    import os

    from gui_session import open_session

    out = Path(os.environ.get("SEMIMOE_SHOTS_DIR", OUT))
    out.mkdir(parents=True, exist_ok=True)
    project = os.environ.get("SEMIMOE_SHOTS_PROJECT")
    viewer, widget, pump = open_session("semimoe-flow-", sample="real", project=project)
    pump(1)
    from napari_semimoe.plugin.panels import train
    from napari_semimoe.plugin.preview import PREVIEW_LAYER
    from napari_semimoe.plugin.widget import camera

    iters = int(next((a for a in sys.argv[1:] if a.isdigit()), "60"))
    train.DOCK_OVERRIDES["checkpoint_every"] = max(1, iters // 6)
    tp = widget.train_panel
    tp.iter_spin.setValue(iters)
    proceed = widget.session.checkpoint() is not None  # a kept, trained project
    if not proceed:
        tp.width_spin.setValue(int(next((a[8:] for a in sys.argv if a.startswith("--width=")), 8)))
    # zoomed onto the polyp biopsy (not annotated): what the model has not seen
    camera(viewer).center = (32 + 112, 2 * 32 + 224 + 112)
    camera(viewer).zoom = 2.6
    tp.start_training(continue_from=proceed)
    while widget.preview.shown < 2 and not (tp.job is not None and tp.job.finished):
        pump(0.5)
    pump(1)
    if PREVIEW_LAYER in viewer.layers:
        viewer.screenshot(str(out / "14-live-preview.png"), canvas_only=False)
    while tp.job is None or not tp.job.finished or tp._poll.isActive():
        pump(0.5)
    review = widget.review_panel
    while (
        review.cancel_btn.isEnabled()
        or review.showing_prediction
        or ("prediction shown" not in widget.status.text())
    ):
        pump(0.5)
    pump(1)
    viewer.screenshot(str(out / "15-predicted-when-training-ends.png"), canvas_only=False)
    widget.toolbox.setCurrentIndex(5)
    widget.export_panel.export()
    while not widget.export_panel.written:
        pump(0.5)
    pump(1)
    viewer.screenshot(str(out / "16-export.png"), canvas_only=False)
    viewer.close()
    print("screenshots in", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
