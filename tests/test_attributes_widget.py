"""Slides from other labs in the dock (issue 17): say where each image comes from on page 1
(stored in the project, the project's values offered), train a few steps with attribute
routing in the child process (the tiles carry their image's value), predict an image whose
origin was not seen (one line: the "any" router), and see which expert each part of the
tissue is routed to (the routing layer, the per-attribute gate table); moe-k's gate bars
show its K experts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import wait_training
from test_trust_widget import click, install, predict, tiny_checkpoint  # noqa: F401

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def test_attribute_field_stores_offers_and_refuses_in_one_line(ui, qtbot):
    from napari_semimoe.core.project import PROJECT_FILE

    viewer, widget, proj = ui
    field = widget.project_panel.attribute_field
    assert field.isEnabled() and field.currentText() == ""  # unknown to start with
    field.setEditText("lab A")
    field.commit()
    doc = json.loads((proj / PROJECT_FILE).read_text())
    assert doc["images"][0]["attribute"] == "lab A"
    assert widget.session.attribute == "lab A"
    assert [field.itemText(i) for i in range(field.count())] == ["lab A"]  # offered
    assert widget.project_panel.minimumSizeHint().width() <= 360
    field.setEditText("any")  # the router of unknown images: refused, nothing changed
    field.commit()
    assert "'any' is the router" in widget.status.text() and "\n" not in widget.status.text()
    assert field.currentText() == "lab A" and widget.session.attribute == "lab A"
    field.setEditText("  ")
    field.commit()  # blank: unknown, absent from the file
    doc = json.loads((proj / PROJECT_FILE).read_text())
    assert "attribute" not in doc["images"][0] and widget.session.attribute is None


def test_train_with_routing_then_predict_an_unseen_origin(ui, qtbot):
    from napari_semimoe.core.checkpoint import model_meta, read_checkpoint
    from napari_semimoe.plugin.routing_view import ROUTING_LAYER

    viewer, widget, proj = ui
    widget.session.set_attribute("lab A")
    tp = widget.train_panel
    tp.routing_check.setChecked(True)
    tp.iter_spin.setValue(2)
    assert tp.config()["attribute_routing"] is True
    widget.toolbox.setCurrentIndex(1)
    click(qtbot, tp.start_btn)
    wait_training(qtbot, widget)
    assert tp.job.last["kind"] == "exit", tp.job.last
    ckpt = widget.session.checkpoint()
    tensors, doc = read_checkpoint(ckpt)
    cfg = model_meta(ckpt, doc, tensors)["config"]
    assert cfg["attribute_routing"] and cfg["attribute_values"] == ["lab A"]
    assert cfg["attributes"] and set(cfg["attributes"].values()) == {"lab A"}
    assert all(n.startswith(widget.session.entry.name + "/") for n in cfg["attributes"])

    # The dock predicts the view with the final model: its own origin, its own router.
    rp = widget.review_panel
    qtbot.waitUntil(lambda: "prediction shown" in widget.status.text(), timeout=60_000)
    qtbot.waitUntil(lambda: not rp.showing_prediction, timeout=30_000)
    assert rp._last_pred["routing"]["router"] == "lab A" and rp.routing_box.note.text() == ""

    # The same slide said to come from a lab the model never saw: "any", in one line.
    widget.session.set_attribute("lab Z")
    assert widget.project_panel.attribute_field.currentText() == "lab Z"
    widget.session.say("")
    predict(qtbot, widget, rp.pred_tiles_btn)
    box = rp.routing_box
    assert box.isVisibleTo(rp)
    assert box.note.text() == "'lab Z' was not seen in training: the 'any' router is used"
    layer = viewer.layers[ROUTING_LAYER]
    assert layer.visible  # "show the routing layer" is ticked: the canvas shows it
    box.overlay_check.setChecked(False)
    assert not layer.visible
    box.overlay_check.setChecked(True)
    assert layer.visible
    experts = set(np.unique(layer.data).tolist()) - {0}
    assert experts and max(experts) <= 8  # 8 routing experts (the default), label = 1 + index
    t = widget.session.entry.train_tiles()[0]
    s = widget.session.geometry.scale
    assert layer.data[round((t.y + t.h / 2) / s), round((t.x + t.w / 2) / s)] > 0
    # The table: one row per origin, each expert's mean weight (summing to 100 %).
    tiles = sum(len(t) for t, _maps, _means in rp._last_pred["routing"]["regions"])
    rows = {a: (n, m) for a, n, m in box.table_data.rows()}
    assert tiles and rows["lab Z"][0] == tiles
    assert rows["lab Z"][1].sum() == pytest.approx(1.0, abs=1e-4) and len(rows["lab Z"][1]) == 8
    assert box.table.rowCount() == len(rows) and box.table.columnCount() == 9
    assert rp.minimumSizeHint().width() <= 360  # the page still fits the dock

    # Its own origin again: its own router, no note; the tiles' row is replaced, not added.
    widget.session.set_attribute("lab A")
    widget.session.say("")
    predict(qtbot, widget, rp.pred_tiles_btn)
    assert box.note.text() == "" and not box.note.isVisibleTo(rp)
    assert [a for a, _n, _m in box.table_data.rows()] == ["lab A"]


def test_a_model_without_routing_predicts_as_before(ui, qtbot, tiny_checkpoint):  # noqa: F811
    from napari_semimoe.plugin.routing_view import ROUTING_LAYER

    viewer, widget, proj = ui
    install(widget, tiny_checkpoint)
    widget.session.set_attribute("lab A")  # an origin, but a model trained without routing
    widget.toolbox.setCurrentIndex(2)
    rp = widget.review_panel
    predict(qtbot, widget, rp.pred_tiles_btn)
    routing = rp._last_pred["routing"]
    assert routing["router"] is None and routing["note"] == "" and not routing["regions"]
    assert not rp.routing_box.isVisibleTo(rp) and ROUTING_LAYER not in viewer.layers
    assert rp._last_pred["family"].layer_names()["gates"] in viewer.layers  # its gate bars
