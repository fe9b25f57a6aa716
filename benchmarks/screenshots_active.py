"""Screenshots of the suggestion list and the pseudo-label QA view from a real run (Xvfb).

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_active.py 150

On the real sample `gui` opens; SEMIMOE_SHOTS_PROJECT=folder (a project benchmarks/
screenshots.py trained: it gains the labeled suggestion) uses its model instead of training
one; SEMIMOE_SHOTS_SAMPLE=synthetic takes them on the generated slide. Also takes page 1.
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
    sample = os.environ.get("SEMIMOE_SHOTS_SAMPLE", "real")
    project = os.environ.get("SEMIMOE_SHOTS_PROJECT")
    viewer, widget, pump = open_session("semimoe-shots-", sample=sample, project=project)

    def wait(cond) -> None:
        while not cond():
            pump(0.3)
        pump(1)

    pump(1)
    widget.toolbox.setCurrentIndex(0)  # 1 · Project and tiles
    pump(1)
    viewer.screenshot(str(out / "17-project-and-tiles.png"), canvas_only=False)
    trained = widget.session.checkpoint() is not None
    widget.train_panel.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 150)
    if not trained:
        widget.train_panel.start_training()
    wait(
        lambda: (
            trained
            or (
                widget.train_panel.job is not None
                and widget.train_panel.job.finished
                and not widget.train_panel._poll.isActive()
            )
        )
    )
    panel = widget.active

    widget.toolbox.setCurrentIndex(3)
    panel.suggest()
    wait(lambda: not panel.busy and panel.suggest_list.count() > 0)
    viewer.layers["annotations"].visible = False
    viewer.reset_view()
    pump(1)
    viewer.screenshot(str(out / "08-suggestions.png"), canvas_only=False)
    panel.suggest_list.setCurrentRow(0)
    pump(1)
    viewer.screenshot(str(out / "09-suggestion-selected.png"), canvas_only=False)
    panel.label_suggestion()
    viewer.layers["annotations"].visible = True
    pump(1)
    viewer.screenshot(str(out / "10-suggestion-labeled.png"), canvas_only=False)

    widget.toolbox.setCurrentIndex(4)
    viewer.layers["suggested tiles"].visible = False
    panel.show_pseudo_labels()
    wait(lambda: not panel.busy and panel.qa_list.count() > 0)
    viewer.reset_view()
    pump(1)
    viewer.screenshot(str(out / "11-pseudo-labels.png"), canvas_only=False)
    panel.qa_list.setCurrentRow(0)
    panel.reject_selected()
    pump(1)
    viewer.screenshot(str(out / "12-pseudo-label-rejected.png"), canvas_only=False)
    viewer.close()
    print("screenshots in", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
