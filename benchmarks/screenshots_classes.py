"""Screenshots of a multi-class project for docs/user-guide.md (Classes), under Xvfb:
the class table and picker (page 1), DCA's split on the Train page, and the class map with
its legend after a short DCA training.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_classes.py [N]
(N training steps, default 60; SEMIMOE_SHOTS_DIR=folder writes them there instead of
docs/images.)
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    from gui_session import open_session, shots, train_and_review

    viewer, widget, pump = open_session("semimoe-classes-", sample="synthetic")
    shot = shots(viewer, pump, OUT)

    pump(1)
    box = widget.project_panel.classes_box
    box.add_class("benign gland", "#2ca02c")
    box.add_class("malignant gland", "#d62728")
    labels = viewer.layers["annotations"]
    t2 = widget.entry.train_tiles()[1]  # the second tile's glands are malignant
    sl = (slice(t2.y, t2.y + t2.h), slice(t2.x, t2.x + t2.w))
    tile = labels.data[sl]
    tile[tile == 1] = 2
    labels.data[sl] = tile
    labels.refresh()
    widget.session.save_annotations(wait=True)
    widget.project_panel.pick_class(2)
    widget.toolbox.setCurrentIndex(0)
    shot("20-classes-table.png")
    tp = widget.train_panel
    widget.toolbox.setCurrentIndex(1)
    tp.family_combo.setCurrentIndex(tp.family_combo.findData("dca"))
    shot("21-dca-split.png")
    tp.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
    tp.width_spin.setValue(8)  # a short, small run: the looks, not the quality
    widget.project_panel.scale_spin.setValue(4.0)
    widget.project_panel.tile_spin.setValue(128)
    train_and_review(widget, pump)  # and the view's prediction when it ends (page 3)
    pump(1)
    labels.visible = False  # the model's class map, its legend on page 3
    shot("22-class-map.png")
    viewer.close()
    print("screenshots taken")
    return 0


if __name__ == "__main__":
    sys.exit(main())
