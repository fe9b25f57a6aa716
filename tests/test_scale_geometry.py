"""One working geometry: the active model's (its checkpoint), not the form's spin boxes.

After a training at 64 model px and scale 4, changing the form's tile and scale (what the
NEXT training will use) must not change what the trained model's suggestions are: their
side is the model's tile at the model's scale."""

from __future__ import annotations

import pytest

from conftest import wait_training
from test_trust_widget import click, install, predict, tiny_checkpoint  # noqa: F401

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def test_suggestions_take_the_tile_from_the_model_not_the_form(ui, qtbot):
    viewer, widget, proj = ui
    widget.train_panel.iter_spin.setValue(2)
    widget.train_panel.start_training()
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["kind"] == "exit", widget.train_panel.job.last
    widget.project_panel.tile_spin.setValue(128)  # the form now says 128 px at scale 2
    widget.project_panel.scale_spin.setValue(2.0)
    panel = widget.active
    panel.top_spin.setValue(2)
    panel.suggest()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert panel.suggestions
    assert all(c.side == 256 for c in panel.suggestions)  # 64 model px at scale 4


def test_accept_after_a_new_training_changed_the_scale_uses_the_models(
    ui,
    qtbot,
    tiny_checkpoint,  # noqa: F811 (the fixture imported above)
):
    """The issue's case: a prediction made by the scale-4 model, then Start with scale 2
    (project.state.scale becomes 2, the new run has no checkpoint yet), then Accept: the
    glands land where the scale-4 model predicted them, not at half the distance."""
    import numpy as np

    from napari_semimoe.core.data import Geometry
    from test_trust_widget import semimoe_layers

    OUT = semimoe_layers()

    viewer, widget, proj = ui
    install(widget, tiny_checkpoint)
    labels = viewer.layers["annotations"]
    labels.data[:] = 0  # nothing painted: every predicted gland is accepted
    predict(qtbot, widget, widget.review_panel.pred_tiles_btn)
    seg = viewer.layers[OUT["seg"]]
    t1 = widget.entry.train_tiles()[0]
    seg.data[:] = 0
    gy, gx = (t1.y + t1.h * 3 // 4) // 4, (t1.x + t1.w * 3 // 4) // 4  # working px, scale 4
    seg.data[gy : gy + 3, gx : gx + 3] = 5
    seg.refresh()
    # Start at another scale, before its run has a checkpoint:
    widget.project_panel.scale_spin.setValue(2.0)
    widget.project.state.scale = 2.0
    widget.project.new_run_dir()
    assert widget.session.geometry == Geometry(scale=4.0, tile=64)  # still the model's
    click(qtbot, widget.review_panel.accept_btn)
    got = np.argwhere(labels.data > 0)
    assert len(got) == 12 * 12  # 3 x 3 working px = 12 x 12 level-0 px
    assert tuple(got.min(0)) == (gy * 4, gx * 4) and tuple(got.max(0)) == (gy * 4 + 11, gx * 4 + 11)
