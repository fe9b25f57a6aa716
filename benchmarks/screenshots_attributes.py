"""Screenshots of attribute routing for docs/user-guide.md (Where each image comes from),
under Xvfb: the *Comes from* field on page 1, the routing option on the Train page, and,
after a short training with routing, a slide of an origin not seen in training predicted
through the "any" router: the routing layer (which shared expert each part of the tissue
goes to) and the per-origin gate table.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_attributes.py [N]
(N training steps, default 60; SEMIMOE_SHOTS_DIR=folder writes them there instead of
docs/images.)
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    from gui_session import open_session, shots, train_and_review

    viewer, widget, pump = open_session("semimoe-attributes-", sample="synthetic")
    shot = shots(viewer, pump, OUT)

    pump(1)
    field = widget.project_panel.attribute_field
    field.setEditText("lab A")
    field.commit()
    widget.toolbox.setCurrentIndex(0)
    field.showPopup()  # the project's values offered
    shot("23-comes-from.png")
    field.hidePopup()
    tp = widget.train_panel
    widget.toolbox.setCurrentIndex(1)
    tp.advanced_check.setChecked(True)
    tp.routing_check.setChecked(True)
    tp.iter_spin.setValue(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
    tp.width_spin.setValue(8)  # a short, small run: the looks, not the quality
    widget.project_panel.scale_spin.setValue(4.0)
    widget.project_panel.tile_spin.setValue(128)
    pump(0.5)
    tp.routing_check.setFocus()
    shot("24-routing-option.png")
    train_and_review(widget, pump)  # and the view's prediction when it ends (page 3)
    rp = widget.review_panel
    widget.session.set_attribute("lab B")  # an origin the model has not seen
    widget.toolbox.setCurrentIndex(2)
    rp.pred_tiles_btn.click()
    pump(1)
    while rp.cancel_btn.isEnabled() or rp.showing_prediction:
        pump(0.5)
    pump(1)
    viewer.layers["annotations"].visible = False
    shot("25-routing-layer.png")
    viewer.close()
    print("screenshots taken")
    return 0


if __name__ == "__main__":
    sys.exit(main())
