"""The train page's settings come from core's TrainConfig: one source of defaults."""

from __future__ import annotations

import dataclasses

from napari_semimoe.core.data import Geometry
from napari_semimoe.core.train import TrainConfig


def test_the_form_defaults_are_trainconfigs(qtbot, monkeypatch):
    from napari_semimoe.plugin.panels import train as panel_mod
    from napari_semimoe.plugin.session import Session
    from test_session import FakeLayers

    session = Session(FakeLayers())
    session.train_geometry = Geometry(scale=4.0, tile=64)
    tp = panel_mod.TrainPanel(session, cutter=None)
    qtbot.addWidget(tp)
    cfg = tp.config()
    expected = dataclasses.asdict(
        TrainConfig(**panel_mod.DOCK_OVERRIDES, geometry=session.train_geometry.to_dict())
    )
    assert cfg == expected  # every setting, untouched form = TrainConfig + the dock's two
    assert tp.iter_spin.value() == 500 and cfg["checkpoint_every"] == 25
    d = TrainConfig()
    assert (tp.width_spin.value(), tp.lr_spin.value(), tp.gamma_spin.value()) == (
        d.width,
        d.lr,
        d.gamma,
    )
    assert tp.semi_check.isChecked() is not d.supervised_only
    # a changed default in core reaches a new form (no copy of it in the plugin)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    monkeypatch.setattr(fields["gamma"], "default", 0.7)
    monkeypatch.setattr(panel_mod, "DEFAULTS", panel_mod.form_defaults())
    assert panel_mod.TrainPanel(session, cutter=None).gamma_spin.value() == 0.7
