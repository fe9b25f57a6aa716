"""A pathologist reads the dock at a glance (issue 19): the model's glands are outlined in a
colour no annotation has, the maps are see-through with a legend in words, the annotations
are selected with the brush after a prediction, the expert weights are named bars, every
Train field says what it does, the settings come in two levels, and the loss chart names
its axes and curves."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QPushButton, QSpinBox

from test_trust_widget import install, predict, semimoe_layers, tiny_checkpoint  # noqa: F401

SEE_THROUGH = ("prob", "boundary", "uncertainty")  # clear where the map says "nothing"


def test_map_styles_are_see_through_with_words_and_prediction_is_no_annotation_colour(
    monkeypatch,
):
    from napari_semimoe.core.families import get_family
    from napari_semimoe.plugin import layer_styles as ls

    keys = [*get_family().output_maps(), *get_family().output_maps(True), "uncertainty"]
    for key in keys:
        kw = ls.map_style(key)
        assert kw["blending"] != "additive", key  # additive turned the slide magenta
        lo, hi = kw["contrast_limits"]
        assert lo < hi, key
        words = ls.map_words(key)
        assert words["low"] and words["high"] and len(words["help"]) > 40, (key, words)
        assert words["low"] not in ("low", "") and words["high"] != "high", key
        rgba = kw["colormap"].map(np.array([0.0, 1.0]))
        if key.removeprefix("expert_") in SEE_THROUGH:
            assert rgba[0, 3] == 0 and rgba[1, 3] >= 0.75, key  # clear -> strong
    sdf = ls.map_style("sdf")["colormap"].map(np.array([0.0, 0.5, 1.0]))
    assert sdf[0, 2] > sdf[0, 0] and sdf[2, 0] > sdf[2, 2]  # blue outside, red inside
    assert ls.map_style("uncertainty")["contrast_limits"][1] <= 0.6  # faint values show

    # The model's outline colour is none of the annotations' (nor a special label's).
    assert not ls.is_annotation_color(ls.PREDICTION_COLOR)
    assert ls.is_annotation_color(ls.GLAND_PALETTE[3])
    cmap = ls.label_style("instances")["colormap"]
    from napari.utils.colormaps.standardize_color import transform_color

    pred = transform_color(ls.PREDICTION_COLOR)[0]
    np.testing.assert_allclose(cmap.map(np.array([1, 7, 300]))[:, :3], [pred[:3]] * 3)
    assert cmap.map(np.array([0]))[0, 3] == 0
    assert ls.LABEL_STYLES["instances"]["contour"] >= 1  # outlines, not a filled layer
    # One place for the annotation colours: a special label (e.g. background) gets its own.
    monkeypatch.setitem(ls.SPECIAL_LABEL_COLORS, 40, "#808080")
    colors = ls.annotation_colors()
    assert colors[40] == "#808080" and colors[1] == ls.GLAND_PALETTE[0] and len(colors) > 40
    ann = ls.annotation_colormap().map(np.array([0, 1, 2, 40]))
    assert ann[0, 3] == 0 and np.allclose(ann[3, :3], transform_color("#808080")[0][:3])
    assert not np.allclose(ann[1], ann[2])  # touching glands painted 1, 2 look different


@pytest.mark.viewer
def test_prediction_is_outlined_legends_follow_and_the_brush_is_at_hand(
    ui,
    qtbot,
    tiny_checkpoint,  # noqa: F811
):
    from napari.layers import Image, Labels, Shapes

    from napari_semimoe.plugin.layer_styles import LEGEND, PREDICTION_COLOR
    from napari_semimoe.plugin.preview import PREVIEW_LAYER

    viewer, widget, _ = ui
    install(widget, tiny_checkpoint)
    names = semimoe_layers()
    labels = viewer.layers["annotations"]
    predict(qtbot, widget, widget.review_panel.pred_tiles_btn)

    # The annotations: on top, selected, the brush at hand (not a hidden gates layer).
    assert viewer.layers.selection.active is labels
    assert viewer.layers[-1] is labels and labels.mode == "paint"
    assert labels.metadata[LEGEND]["kind"] == "swatches"

    seg = viewer.layers[names["seg"]]
    assert isinstance(seg, Labels) and seg.contour >= 1 and seg.visible
    assert seg.metadata[LEGEND]["items"][0][0] == PREDICTION_COLOR
    maps = [  # the live preview (white outlines, hidden till a training) is no map
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and LEGEND in layer.metadata and layer.name != PREVIEW_LAYER
    ]
    assert {names["prob"], names["sdf"], names["boundary"], names["uncertainty"]} <= {
        m.name for m in maps
    }
    for m in maps:
        assert m.blending != "additive" and m.colorbar.visible, m.name
        assert m.metadata[LEGEND]["kind"] == "map" and m.metadata[LEGEND]["help"], m.name
        assert not m.visible  # shown one at a time, by the user

    # Expert weights: named bars per tile, not three bare numbers.
    gates = viewer.layers[names["gates"]]
    assert isinstance(gates, Shapes)
    texts = [t for t in gates.features["label"] if t]
    assert any(t.startswith("segmentation ") and t.endswith("%") for t in texts)
    assert any(t.startswith("distance map ") for t in texts)

    # The dock's legend lists what is shown, in words, and follows visibility.
    legend = widget.review_panel.legend
    legend.refresh()
    assert names["seg"] in legend.rows and names["prob"] not in legend.rows
    viewer.layers[names["uncertainty"]].visible = True
    qtbot.waitUntil(lambda: names["uncertainty"] in legend.rows, timeout=2000)
    assert "unsure" in legend.rows[names["uncertainty"]]
    viewer.layers[names["uncertainty"]].visible = False
    qtbot.waitUntil(lambda: names["uncertainty"] not in legend.rows, timeout=2000)

    # Predicting again keeps the annotations on top and selected.
    viewer.layers.selection.active = viewer.layers[names["prob"]]
    widget.status.setText("")
    predict(qtbot, widget, widget.review_panel.pred_tiles_btn)
    assert viewer.layers.selection.active is labels and viewer.layers[-1] is labels


def _panel(qtbot):
    from napari_semimoe.core.data import Geometry
    from napari_semimoe.plugin.panels.train import TrainPanel
    from napari_semimoe.plugin.session import Session
    from test_session import FakeLayers

    session = Session(FakeLayers())
    session.train_geometry = Geometry(scale=4.0, tile=64)
    tp = TrainPanel(session, cutter=None)
    qtbot.addWidget(tp)
    return tp


def test_train_settings_two_levels_and_every_field_says_what_it_does(qtbot):
    from napari_semimoe.plugin.train_form import DURATIONS, QUALITIES

    tp = _panel(qtbot)
    tp.show()
    fields = tp.findChildren((QSpinBox, QDoubleSpinBox, QComboBox, QCheckBox, QPushButton))
    assert len(fields) >= 16
    for w in fields:
        assert len(w.toolTip()) > 20, (type(w).__name__, getattr(w, "text", lambda: "")())
    # the technical term stays in the tooltip, not in the label
    assert "γ" in tp.gamma_spin.toolTip() and "λ" in tp.lambda_spin.toolTip()
    assert "width" in tp.width_spin.toolTip() and "learning rate" in tp.lr_spin.toolTip()

    # Simple level shown, advanced hidden until asked for.
    assert tp.duration_combo.isVisible() and tp.quality_combo.isVisible()
    assert not tp.width_spin.isVisible() and not tp.lr_spin.isVisible()
    tp.advanced_check.setChecked(True)
    assert tp.width_spin.isVisible() and tp.semi_check.isVisible()
    tp.advanced_check.setChecked(False)
    assert not tp.width_spin.isVisible()

    # The simple choices set the advanced fields, and show 'custom' for anything else.
    assert tp.duration_combo.currentText() == "standard (500 steps)"  # the dock's default
    tp.duration_combo.setCurrentIndex(2)
    assert tp.iter_spin.value() == DURATIONS[2][1] == tp.config()["iterations"]
    tp.quality_combo.setCurrentIndex(0)
    assert tp.width_spin.value() == QUALITIES[0][1] == tp.config()["width"]
    tp.iter_spin.setValue(123)
    assert tp.duration_combo.currentText().startswith("custom")
    assert tp.config()["family"] == "semimoe"
    # The time estimate is measured, never guessed: none before a run, then from its speed.
    assert "once a training" in tp.estimate_label.text()
    tp._first_it, tp._run_width = None, tp.width_spin.value()
    tp._measure({"iteration": 1, "elapsed": 1.0}, {"iteration": 11, "elapsed": 6.0})
    assert tp.estimate_label.text().startswith("about 1m02s")  # 123 steps x 0.5 s


def test_loss_chart_names_its_axes_and_curves_in_words(qtbot, monkeypatch):
    from qtpy.QtGui import QPainter

    from napari_semimoe.core.families import get_family
    from napari_semimoe.plugin.chart import LossChart

    chart = LossChart()
    qtbot.addWidget(chart)
    chart.resize(360, 240)
    chart.set_tasks(get_family().tasks)
    for i in range(1, 4):
        chart.add(
            {
                "iteration": i,
                "total": 3,
                "lam": 0.1 * i,
                "losses": {
                    "total": 2.0 / i,
                    "sup_seg": 1.0,
                    "sup_sdf": 0.5,
                    "sup_bnd": 0.4,
                    "unsup_seg": 0.2,
                },
            }
        )
    drawn: list[str] = []
    real = QPainter.drawText

    def record(self, *args):
        drawn.append(next(a for a in args if isinstance(a, str)))
        return real(self, *args)

    monkeypatch.setattr(QPainter, "drawText", record)
    chart.grab()
    for words in (
        "training step",
        "loss (lower = better)",
        "total loss",
        "segmentation",
        "distance map",
        "boundary",
        "learning from unlabeled tissue",
    ):
        assert words in drawn, (words, drawn)
    assert not {"seg", "sdf", "bnd", "unsup", "λ"} & set(drawn)  # no bare keys
    rows = chart.legend_rows(360 - 8, chart.fontMetrics())
    assert len(rows) >= 2  # wrapped to fit the dock, not cut off


def test_live_preview_outlines_are_drawn_off_the_gui_thread_on_a_hand_made_case():
    """The preview worker draws the outlines (the GUI thread only swaps the image): the inner
    edge of each gland, and the line between two touching glands stays."""
    from napari_semimoe.plugin.preview import outline_image

    inst = np.zeros((6, 8), np.int32)
    inst[1:5, 1:4], inst[1:5, 4:7] = 1, 2  # two touching 4 x 3 glands
    want = (inst > 0).astype(np.uint8)
    for y, x in [(2, 2), (3, 2), (2, 5), (3, 5)]:  # the only pixels off any edge
        want[y, x] = 0
    assert np.array_equal(outline_image(inst, width=1), want)
    block = np.zeros((9, 9), np.int32)
    block[1:8, 1:8] = 7
    thick = outline_image(block, width=2)  # 2 px inside the edge, the 3 x 3 centre clear
    want = (block > 0).astype(np.uint8)
    want[3:6, 3:6] = 0
    assert thick.dtype == np.uint8 and np.array_equal(thick, want)


def test_expert_weight_chart_is_a_small_corner_label_with_named_bars():
    """Each tile's chart: one named track per expert, bars as long as the weights, in the
    tile's corner and covering a few percent of it (not a panel over the tissue)."""
    from napari_semimoe.plugin.gate_bars import PANEL_COLOR, gate_bars

    names = ["segmentation", "distance map", "boundary"]
    bars = gate_bars([((10, 20, 100, 100), np.array([0.5, 0.3, 0.2]))], 2.0, names)
    boxes = [(r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()) for r in bars.rects]
    tile = (20, 40, 220, 240)  # level-0 px: working px x 2
    for y0, x0, y1, x1 in boxes:  # all inside the tile
        assert tile[0] <= y0 < y1 <= tile[2] and tile[1] <= x0 < x1 <= tile[3]
    (panel,) = [b for b, c in zip(boxes, bars.colors) if c == PANEL_COLOR]
    assert (panel[2] - panel[0]) * (panel[3] - panel[1]) <= 0.05 * 200 * 200
    assert [t for t in bars.texts if t] == ["segmentation 50%", "distance map 30%", "boundary 20%"]
    coloured = [b for b, c in zip(boxes, bars.colors) if c not in (PANEL_COLOR, "transparent")]
    lengths = sorted(x1 - x0 for _, x0, _, x1 in coloured)  # tracks (100 %) and bars
    track = lengths[-1]
    assert np.allclose(lengths[:3], [0.2 * track, 0.3 * track, 0.5 * track])


def test_every_dock_page_fits_the_dock_without_sideways_scrolling(ui):
    """Long words (a tile's 'unpainted pixels' choice, a slide's name, a button) must not
    make a page wider than the dock napari gives (it then scrolls sideways, text cut; the
    Train page, 356 px with its row of four buttons, shows whole in docs/images)."""
    _viewer, widget, _ = ui
    box = widget.toolbox
    widths = {box.itemText(i): box.widget(i).minimumSizeHint().width() for i in range(box.count())}
    assert max(widths.values()) <= 360, widths


def test_the_dock_offers_only_families_a_binary_project_can_train(qtbot):
    """DCA needs two classes or more: a binary project's Train page does not offer it."""
    from napari_semimoe.core.families import families, get_family

    tp = _panel(qtbot)
    offered = {tp.family_combo.itemData(i) for i in range(tp.family_combo.count())}
    assert "semimoe" in offered and "dca" in families() and "dca" not in offered
    assert all(get_family(n).min_classes <= 1 for n in offered)
