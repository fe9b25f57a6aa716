"""Multi-class projects in the dock: define classes (page 1), paint two of them, train
multi-class Semi-MoE and DCA in the child process (DCA's split shown and overridable on
the Train page), predict, review the class map with its legend, accept it into the
annotations as class ids, and undo."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import wait_training
from test_trust_widget import click

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
    assert pp.minimumSizeHint().width() <= 360  # the page still fits the dock

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


def train(qtbot, widget, family: str, iterations: int = 3) -> None:
    tp = widget.train_panel
    tp.family_combo.setCurrentIndex(tp.family_combo.findData(family))
    tp.iter_spin.setValue(iterations)
    tp.start_training()
    qtbot.waitUntil(lambda: tp.job is not None, timeout=30_000)
    wait_training(qtbot, widget, timeout=60_000)
    assert tp.job.last["kind"] == "exit", tp.job.last
    # The dock predicts the view with the final model when training ends: wait for it.
    rp = widget.review_panel
    qtbot.waitUntil(lambda: "prediction shown" in widget.status.text(), timeout=60_000)
    qtbot.waitUntil(lambda: not rp.showing_prediction and rp.pred_view_btn.isEnabled())


def test_multiclass_semimoe_trains_predicts_and_accepts_class_ids(ui, qtbot):
    import json

    from napari_semimoe.plugin.layer_styles import LEGEND

    viewer, widget, proj = ui
    define_two_classes(widget)
    train(qtbot, widget, "semimoe")
    config = json.loads((proj / "runs" / "run-001" / "config.json").read_text())
    assert [c["name"] for c in config["classes"]] == [
        "background",
        "benign gland",
        "malignant gland",
    ]

    cmap = viewer.layers["Semi-MoE class map"]  # the view predicted when training ended
    assert type(cmap).__name__ == "Labels" and cmap.data.dtype == np.uint8
    assert set(np.unique(cmap.data).tolist()) <= {0, 1, 2}
    assert [t for _c, t in cmap.metadata[LEGEND]["items"]] == ["benign gland", "malignant gland"]
    np.testing.assert_allclose(
        cmap.colormap.map(np.array([1]))[0][:3], (44 / 255, 160 / 255, 44 / 255), atol=0.01
    )
    for name in ("benign gland", "malignant gland"):
        prob = viewer.layers[f"Semi-MoE {name} probability"]
        assert 0 <= prob.data.min() <= prob.data.max() <= 1
    assert cmap.visible  # the class map is the result a multi-class project looks at
    widget.review_panel.legend.refresh()
    assert "class map" in widget.review_panel.legend.rows["Semi-MoE class map"]

    # Accept: class ids where nothing is painted; a region touching painting is skipped.
    labels = viewer.layers["annotations"]
    t1 = widget.entry.train_tiles()[0]
    painted = labels.data[t1.y : t1.y + t1.h, t1.x : t1.x + t1.w] > 0
    before = np.array(labels.data)
    cmap.data[:] = 0
    free = np.argwhere(~painted[::4, ::4])  # unpainted working-scale pixels of tile 1
    y, x = next(
        (y, x) for y, x in free if not painted[4 * y : 4 * y + 12, 4 * x : 4 * x + 12].any()
    )
    gy, gx = t1.y // 4 + y, t1.x // 4 + x
    cmap.data[gy : gy + 3, gx : gx + 3] = 2  # a malignant region on unpainted tissue
    py, px = np.argwhere(painted)[0]
    cmap.data[(t1.y + py) // 4, (t1.x + px) // 4] = 1  # a region on painted glands: skipped
    cmap.refresh()
    click(qtbot, widget.review_panel.accept_btn)
    assert "accepted the class map" in widget.status.text()
    changed = labels.data != before
    assert changed.sum() == 12 * 12 and (labels.data[changed] == 2).all()
    click(qtbot, widget.review_panel.undo_btn)
    np.testing.assert_array_equal(labels.data, before)


def test_dca_is_offered_with_two_classes_shows_its_split_and_trains(ui, qtbot):
    import json

    viewer, widget, proj = ui
    tp, box = widget.train_panel, widget.project_panel.classes_box
    assert tp.family_combo.findData("dca") == -1  # binary: no DCA
    box.add_class("benign gland")
    assert tp.family_combo.findData("dca") == -1  # one class: still none
    labels = widget.viewer.layers["annotations"]
    t2 = widget.entry.train_tiles()[1]
    sl = (slice(t2.y, t2.y + t2.h), slice(t2.x, t2.x + t2.w))
    assert box.add_class("malignant gland")
    tile = labels.data[sl]
    tile[tile == 1] = 2  # the second tile's glands malignant
    labels.data[sl] = tile
    assert tp.family_combo.findData("dca") >= 0

    # The split before training: each class's share, the gaps, head / tail.
    tp.family_combo.setCurrentIndex(tp.family_combo.findData("dca"))
    assert tp.dca_box.isVisibleTo(tp)
    assert tp.lr_spin.value() == pytest.approx(0.05)  # DCA's own default step size
    counts = widget.project.class_pixel_counts(widget.session.live_labels)
    text = tp.dca_box.shares_label.text()
    big, small = ("benign gland", "malignant gland")[:: 1 if counts[0] >= counts[1] else -1]
    assert f"{big} (id" in text and "→ head" in text and "→ tail" in text and "log gaps" in text
    share = 100 * counts.max() / counts.sum()
    assert f"{share:.1f} %" in text
    # A bad override is one line; a good one is what the run trains with.
    tp.dca_box.override_edit.setText("1/2")
    assert "head/medium/tail" in tp.dca_box.error_label.text()
    tp.dca_box.override_edit.setText("2//1")
    assert tp.dca_box.error_label.text() == ""
    rp = widget.review_panel
    rp.experts_check.setChecked(True)  # the prediction at the end shows the decoders too
    train(qtbot, widget, "dca")
    config = json.loads((proj / "runs" / "run-001" / "config.json").read_text())
    assert config["dca_split"]["head"] == [2] and config["dca_split"]["tail"] == [1]
    chart = tp.chart  # DCA's per-decoder loss terms get curves of their own, named
    assert {"head", "tail"} <= set(chart.series) and chart.label("head") == "head"
    chart.grab()  # paints (an exception in paintEvent fails the test)

    # Review: the class map, each decoder's prediction and the fusion's attention.
    assert "decoders" in rp.experts_check.text()
    assert rp.minimumSizeHint().width() <= 360  # the page still fits the dock
    cmap = viewer.layers["DCA class map"]
    assert type(cmap).__name__ == "Labels" and set(np.unique(cmap.data).tolist()) <= {0, 1, 2}
    for g in ("head", "tail"):
        dec = viewer.layers[f"DCA {g} expert"]
        att = viewer.layers[f"DCA attention to the {g} expert"]
        assert 0 <= dec.data.min() <= dec.data.max() <= 1
        assert 0 <= att.data.min() <= att.data.max() <= 1
    assert "DCA medium expert" not in viewer.layers  # C = 2 with an empty medium: no decoder
    head = viewer.layers["DCA attention to the head expert"].data
    tail = viewer.layers["DCA attention to the tail expert"].data
    covered = cmap.metadata["semimoe_covered"]
    # DFAM sums to 1 (to bf16's rounding where the CPU has bf16 units: the dock predicts
    # with precision "auto", and two bf16 values carry up to 2^-9 error each)
    np.testing.assert_allclose((head + tail)[covered], 1.0, atol=5e-3)

    # Suggestions target a class with DCA too (it has no SDF for the other signals).
    panel = widget.active
    panel.target_combo.showPopup()
    panel.target_combo.hidePopup()
    panel.target_combo.setCurrentIndex(1)
    panel.top_spin.setValue(2)
    panel.suggest()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.suggestions, widget.status.text()
    assert all(c.score == c.components["class_entropy"] for c in panel.suggestions)


def test_suggestions_target_a_rare_class_and_start_from_class_ids(ui, qtbot):
    from napari_semimoe.core.data import Geometry
    from napari_semimoe.core.train import TrainConfig, Trainer

    viewer, widget, proj = ui
    define_two_classes(widget)
    # A multi-class model in the project's runs (trained here: the child is tested above).
    project = widget.project
    labels = viewer.layers["annotations"]
    ts = project.build_training_set(widget.layers.slide_of, lambda e: np.array(labels.data))
    cfg = TrainConfig(
        classes=project.classes.to_list(),
        width=4,
        iterations=2,
        threads=1,
        precision="fp32",
        geometry=Geometry(scale=4.0, tile=64).to_dict(),
    )
    assert Trainer(cfg, ts, project.new_run_dir()).run() == "done"

    panel = widget.active
    counts = project.class_pixel_counts(widget.session.live_labels)
    rarest = 1 + int(np.argmin(counts))
    panel.target_combo.showPopup()  # the list is counted again as it opens
    panel.target_combo.hidePopup()
    assert panel.target_combo.count() == 3 and panel.target_combo.itemData(1) == rarest
    assert project.classes.names[rarest] in panel.target_combo.itemText(1)
    panel.target_combo.setCurrentIndex(1)
    panel.top_spin.setValue(2)
    panel.suggest()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.suggestions and all("class_entropy" in c.components for c in panel.suggestions)
    assert all(c.score == c.components["class_entropy"] for c in panel.suggestions)
    # "Label this tile" starts from the model's class ids, never from gland ids.
    c = panel.suggestions[0]
    panel.suggest_list.setCurrentRow(0)
    before = np.array(labels.data)
    panel.label_suggestion()
    sl = (slice(c.y0, c.y0 + c.side), slice(c.x0, c.x0 + c.side))
    new = labels.data[sl][before[sl] == 0]
    assert set(np.unique(new).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(
        labels.data[sl] > 0, (before[sl] > 0) | np.kron(c.mask > 0, np.ones((4, 4), bool))
    )
    qtbot.waitUntil(lambda: not widget.cutting, timeout=30_000)
