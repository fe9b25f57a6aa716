"""Multi-class projects in the dock: define classes (page 1), paint two of them, train
multi-class Semi-MoE and DCA in the child process (DCA's split shown and overridable on
the Train page), predict, review the class map with its legend, accept it into the
annotations as class ids, and undo."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import wait_training
from test_trust_widget import click, predict

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def define_two_classes(widget) -> None:
    """Benign (the sample's glands) and malignant (the glands of its second tile)."""
    box = widget.project_panel.classes_box
    assert box.add_class("benign gland", "#2ca02c")
    assert box.add_class("malignant gland", "#d62728")
    labels = widget.viewer.layers["annotations"]
    t2 = widget.entry.train_tiles()[1]
    sl = (slice(t2.y, t2.y + t2.h), slice(t2.x, t2.x + t2.w))
    tile = labels.data[sl]
    tile[tile == 1] = 2  # paint the second tile's glands malignant
    labels.data[sl] = tile
    labels.refresh()
    widget.session.save_annotations(wait=True)


def test_define_classes_and_paint_them(ui, qtbot):
    from napari_semimoe.core.classes import read_classes
    from napari_semimoe.core.sparse import BACKGROUND_LABEL
    from napari_semimoe.plugin.layer_styles import LEGEND

    viewer, widget, proj = ui
    labels = viewer.layers["annotations"]
    before = np.array(labels.data)
    assert before.max() > 2  # the sample's glands: instance ids
    pp = widget.project_panel
    assert not pp.class_combo.isVisibleTo(pp) and pp.gland_brush.text() == "Paint a gland"

    define_two_classes(widget)
    table = read_classes(proj)  # stored in the project folder
    assert table.names == ("background", "benign gland", "malignant gland")
    # Every gland painted before classes is class 1, then the second tile's became 2.
    assert set(np.unique(labels.data).tolist()) == {0, 1, 2}
    assert ((labels.data > 0) == (before > 0)).all()
    assert pp.class_combo.isVisibleTo(pp) and pp.class_combo.count() == 2

    # The brush paints the picked class; the background brush keeps its id.
    pp.pick_class(2)
    assert labels.selected_label == 2 and labels.mode == "paint"
    pp.pick_brush("background")
    assert labels.selected_label == BACKGROUND_LABEL
    # Colours and names: the class's colour, its name under the cursor, the legend.
    np.testing.assert_allclose(
        labels.colormap.map(np.array([2]))[0][:3], (214 / 255, 39 / 255, 40 / 255), atol=0.01
    )
    y, x = np.argwhere(labels.data == 2)[0]
    assert "malignant gland" in str(labels.get_status((y, x))["coordinates"])
    items = [text for _c, text in labels.metadata[LEGEND]["items"]]
    assert items[:2] == ["benign gland", "malignant gland"]
    widget.review_panel.legend.refresh()
    assert "annotations" in widget.review_panel.legend.rows

    # Rename in the table, a bad name is one line and changes nothing, remove a class.
    box = pp.classes_box
    assert box.rename_class(1, "benign")
    assert not box.rename_class(2, "benign")  # names are unique
    assert "appears twice" in box.line.text() and "\n" not in box.line.text()
    assert read_classes(proj).names[1:] == ("benign", "malignant gland")
    n2 = int((labels.data == 2).sum())
    assert box.remove_class(1)
    assert read_classes(proj).names == ("background", "malignant gland")
    assert int((labels.data == 1).sum()) == n2 and not (labels.data == 2).any()
    assert pp.class_combo.count() == 1
