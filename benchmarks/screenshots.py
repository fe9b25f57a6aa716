"""Screenshots for docs/ from a real run under Xvfb: slide + widget mid-training, overlays.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots.py [ITERATIONS]
(SEMIMOE_SHOTS_DIR=folder writes them there instead of docs/images; SEMIMOE_SHOTS_WIDTH=8
trains a smaller model, to try the looks out on a busy machine; SEMIMOE_SHOTS_SAMPLE=synthetic
takes them on the generated slide instead of the real EBHI-Seg sample that `gui` opens;
SEMIMOE_SHOTS_PROJECT=folder keeps the project there, and with SEMIMOE_SHOTS_REVIEW_ONLY=1
a second pass over that kept project retakes only the Review shots with its trained model:
the long training runs once, in the background, while the overlays are still being styled.)
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    import os

    from gui_session import open_session
    from napari_semimoe.core.families import get_family

    out = Path(os.environ.get("SEMIMOE_SHOTS_DIR", OUT))  # e.g. /tmp/ui-shots/after
    out.mkdir(parents=True, exist_ok=True)
    names = get_family().layer_names() | {"uncertainty": "Semi-MoE uncertainty"}
    sample = os.environ.get("SEMIMOE_SHOTS_SAMPLE", "real")  # what a pathologist sees first
    project = os.environ.get("SEMIMOE_SHOTS_PROJECT")
    review_only = os.environ.get("SEMIMOE_SHOTS_REVIEW_ONLY") == "1"
    viewer, widget, pump = open_session("semimoe-shots-", sample=sample, project=project)

    def shot(name: str) -> None:
        pump(0.5)
        viewer.screenshot(str(out / name), canvas_only=False)

    def show(*keys: str) -> None:
        """Only these prediction layers visible (and the tiles)."""
        for k, n in names.items():
            if n in viewer.layers:
                viewer.layers[n].visible = k in keys

    pump(1)
    if review_only:
        if widget.session.checkpoint() is None:
            print("SEMIMOE_SHOTS_REVIEW_ONLY needs a SEMIMOE_SHOTS_PROJECT with a trained model")
            return 2
        review(viewer, widget, pump, shot, show, names)
        return 0
    shot("01-sample-slide.png")
    tp = widget.train_panel
    tp.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
    if os.environ.get("SEMIMOE_SHOTS_WIDTH"):  # a quicker model for trying the looks out
        tp.width_spin.setValue(int(os.environ["SEMIMOE_SHOTS_WIDTH"]))
    tp.start_training()
    while tp.progress.value() < tp.iter_spin.value() // 2:
        pump(0.5)
    shot("02-training-mid-run.png")
    while tp.job is None or not tp.job.finished or tp._poll.isActive():
        pump(0.5)
    review_page = widget.review_panel
    while review_page.cancel_btn.isEnabled() or review_page.showing_prediction:
        pump(0.5)  # the view predicted by itself when training ends (page 3)
    widget.toolbox.setCurrentIndex(1)  # back to 2 · Train: the finished run's chart
    shot("03-training-done.png")
    tp.advanced_check.setChecked(True)  # the second level of the settings
    shot("14-train-advanced.png")
    tp.advanced_check.setChecked(False)
    review(viewer, widget, pump, shot, show, names)
    return 0


def review(viewer, widget, pump, shot, show, names) -> None:
    """The Review page's shots: predict the whole image, then each overlay on its own."""
    from napari_semimoe.plugin.widget import camera

    widget._toolbox_review()
    widget.review_panel.predict("image")
    while (
        widget.review_panel.cancel_btn.isEnabled()
        or widget.review_panel.showing_prediction
        or (names["instances"] not in viewer.layers)
    ):
        pump(0.5)
    pump(1)
    # The model's glands (cyan outlines) over the user's painting (filled), both shown.
    viewer.layers["training tiles"].visible = True
    shot("04-gated-segmentation.png")
    viewer.layers["annotations"].visible = False
    show("prob")
    shot("15-probability.png")
    show("sdf")
    shot("05-sdf.png")
    show("boundary")
    shot("06-boundary.png")
    show("uncertainty", "gates")
    camera(viewer).zoom = camera(viewer).zoom * 2.5
    shot("07-uncertainty-gates.png")
    # 3 · Review after one Accept in the default mode (my painting wins): the history lists
    # the version kept before it; Undo and Restore are at hand.
    show("instances")
    viewer.layers["annotations"].visible = True
    widget.review_panel.accept_prediction()
    pump(1)
    shot("13-accepted-history.png")
    viewer.close()
    print("screenshots taken")


if __name__ == "__main__":
    sys.exit(main())
