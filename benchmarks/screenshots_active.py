"""Screenshots of the suggestion list and the pseudo-label QA view from a real run (Xvfb).

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_active.py 150
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    from gui_session import open_session

    OUT.mkdir(parents=True, exist_ok=True)
    viewer, widget, pump = open_session("semimoe-shots-")

    def wait(cond) -> None:
        while not cond():
            pump(0.3)
        pump(1)

    widget.train_panel.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 150)
    widget.train_panel.start_training()
    wait(
        lambda: (
            widget.train_panel.job is not None
            and widget.train_panel.job.finished
            and not widget.train_panel._poll.isActive()
        )
    )
    panel = widget.active

    widget.toolbox.setCurrentIndex(3)
    panel.suggest()
    wait(lambda: not panel.busy and panel.suggest_list.count() > 0)
    viewer.layers["annotations"].visible = False
    viewer.reset_view()
    pump(1)
    viewer.screenshot(str(OUT / "08-suggestions.png"), canvas_only=False)
    panel.suggest_list.setCurrentRow(0)
    pump(1)
    viewer.screenshot(str(OUT / "09-suggestion-selected.png"), canvas_only=False)
    panel.label_suggestion()
    viewer.layers["annotations"].visible = True
    pump(1)
    viewer.screenshot(str(OUT / "10-suggestion-labeled.png"), canvas_only=False)

    widget.toolbox.setCurrentIndex(4)
    viewer.layers["suggested tiles"].visible = False
    panel.show_pseudo_labels()
    wait(lambda: not panel.busy and panel.qa_list.count() > 0)
    viewer.reset_view()
    pump(1)
    viewer.screenshot(str(OUT / "11-pseudo-labels.png"), canvas_only=False)
    panel.qa_list.setCurrentRow(0)
    panel.reject_selected()
    pump(1)
    viewer.screenshot(str(OUT / "12-pseudo-label-rejected.png"), canvas_only=False)
    viewer.close()
    print("screenshots in", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
