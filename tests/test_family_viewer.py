"""A model family registered in a few lines (the toy of tests/test_families.py: one 2-conv
network, one task) is trained into a project's runs folder, then shown in the dock with no
edit of the trainer, the predictor or the plugin: its layers by its names and styles, Accept
from its objects layer, its loss curves in the chart, and the Semi-MoE-only parts (gates,
experts, uncertainty, suggestions, pseudo-labels) left out with a line that says why."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from test_families import ToyFamily  # the whole toy family, as a plugin author writes it
from test_trust_widget import click, predict

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


@pytest.fixture
def toy():
    from napari_semimoe.core.families import register_family, unregister_family

    family = register_family(ToyFamily())
    yield family
    unregister_family("toy")


def test_a_registered_family_trains_predicts_and_shows_in_the_dock(toy, ui, qtbot):
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.layer_styles import map_style

    viewer, widget, proj = ui
    # Train the toy into the project's runs folder, at the ui fixture's geometry.
    images, masks = synthetic_tiles(4, size=64, seed=3)
    cfg = TrainConfig(
        family="toy",
        width=4,
        iterations=3,
        threads=1,
        precision="fp32",
        geometry=Geometry(scale=4.0, tile=64).to_dict(),
    )
    events = []
    run = widget.project.new_run_dir()
    trainer = Trainer(cfg, TrainingSet(images[:2], masks[:2], images[2:]), run)
    assert trainer.run(on_event=lambda e: events.append(e.to_dict())) == "done"
    widget.train_panel._set_training_ui(False)
    assert widget.session.family is toy  # read from the checkpoint

    # The chart draws the run's own tasks from its log, as the train panel feeds it.
    chart = widget.train_panel.chart
    widget.train_panel._chart_family(cfg.family)
    chart.clear()
    for e in events:
        if e["kind"] == "iteration":
            chart.add(e)
    assert list(chart.series) == ["total", "fg", "unsup", "lambda"]
    assert len(chart.series["fg"]) == 3 and len(chart.series["total"]) == 3
    assert "sdf" not in chart.series and "fg" in chart.toolTip()
    chart.grab()  # paints without a key error

    # Predict the image: the toy's layers, by its names, styled as its task says.
    names = toy.layer_names()
    predict(qtbot, widget, widget.review_panel.pred_all_btn)
    prob = viewer.layers[names["toyprob"]]
    style = map_style("toyprob")
    assert prob.colormap.name == style["colormap"] == "plasma"
    assert prob.blending == style["blending"] == "translucent"
    assert list(prob.contrast_limits) == [0.0, 1.0]
    assert prob.data.shape == (384, 384) and 0 <= prob.data.min() <= prob.data.max() <= 1
    objects = viewer.layers[names["instances"]]
    assert objects.data.shape == (384, 384) and objects.data.dtype == np.int32
    np.testing.assert_allclose(objects.scale, (4.0, 4.0))
    # Nothing of Semi-MoE's: no gates (the toy has none), no uncertainty, no expert maps.
    assert names["gates"] not in viewer.layers
    assert not [layer.name for layer in viewer.layers if "Semi-MoE" in layer.name]
    assert not widget.review_panel.experts_check.isEnabled()
    assert "no experts" in widget.review_panel.experts_check.toolTip()

    # Accept takes the toy's objects layer into the annotations.
    labels = viewer.layers["annotations"]
    labels.data[:] = 0
    t1 = widget.entry.train_tiles()[0]
    objects.data[:] = 0
    gy, gx = (t1.y + t1.h // 2) // 4, (t1.x + t1.w // 2) // 4  # working px, scale 4
    objects.data[gy : gy + 3, gx : gx + 3] = 7
    objects.refresh()
    click(qtbot, widget.review_panel.accept_btn)
    got = np.argwhere(labels.data > 0)
    assert len(got) == 12 * 12  # 3 x 3 working px = 12 x 12 level-0 px
    assert tuple(got.min(0)) == (gy * 4, gx * 4)
    assert "accepted the prediction" in widget.status.text()
    click(qtbot, widget.review_panel.undo_btn)
    assert not labels.data.any()

    # Suggestions and pseudo-labels need Semi-MoE's maps: one line, no job started.
    for button, what in (
        (widget.active.suggest_btn, "suggestions"),
        (widget.active.qa_btn, "pseudo-labels"),
    ):
        qtbot.mouseClick(button, Qt.LeftButton)
        text = widget.status.text()
        assert text.startswith(f"{what} need a model with prob, sdf, boundary maps"), text
        assert "(toy) has toyprob" in text and widget.active.worker is None

    # A new image drops the toy's prediction layers too.
    widget.session.image_changed.emit(widget.entry)
    assert names["toyprob"] not in viewer.layers and names["instances"] not in viewer.layers
