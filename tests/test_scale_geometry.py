"""One working geometry: the active model's (its checkpoint), not the form's spin boxes.

After a training at 64 model px and scale 4, changing the form's tile and scale (what the
NEXT training will use) must not change what the trained model's suggestions are: their
side is the model's tile at the model's scale."""

from __future__ import annotations

import pytest

from conftest import wait_training

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
