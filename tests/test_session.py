"""The dock's session without a viewer: label edits as undo steps, tile sync, and ONE working
geometry, the active model's (its checkpoint), whatever the training form says."""

from __future__ import annotations

import numpy as np
import pytest

from napari_semimoe.core.checkpoint import CHECKPOINT_NAME, save_checkpoint
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.model import SemiMoE
from napari_semimoe.core.project import Project
from napari_semimoe.plugin.common import rect
from napari_semimoe.plugin.session import Session


class FakeLabels:
    def __init__(self, shape):
        self.data = np.zeros(shape, np.uint16)
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1


class FakeLayers:
    """What the session needs of napari: the annotations and the drawn tiles."""

    def __init__(self, shape=(64, 64)):
        self.labels_layer = FakeLabels(shape)
        self.rects: list[np.ndarray] | None = []

    def labels(self, create: bool = False):
        return self.labels_layer

    def tile_rects(self):
        return self.rects


@pytest.fixture
def session(tmp_path):
    s = Session(FakeLayers())
    p = Project(tmp_path / "proj")
    s.set_project(p)
    s.set_entry(p.entry("slide"))
    return s


def test_an_edit_is_one_undo_step_kept_in_the_history(session):
    seen = {"edits": [], "undo": []}
    session.labels_edited.connect(seen["edits"].append)
    session.undo_changed.connect(seen["undo"].append)
    labels = session.layers.labels_layer
    labels.data[0:4, 0:4] = 7  # painted
    a = (slice(0, 8), slice(0, 8))
    b = (slice(20, 30), slice(20, 30))
    assert session.edit_labels(
        [(a, np.full((8, 8), 3, np.uint16)), (b, np.ones((10, 10)))], "accept"
    )
    assert (labels.data[a] == 3).all() and (labels.data[b] == 1).all()
    assert seen == {"edits": ["accept"], "undo": [True]} and session.can_undo
    versions = session.project.versions(session.entry)  # the annotations before, on disk
    assert [r for _, _, r in versions] == ["before accept"]
    before = session.project.load_version(session.entry, versions[0][0])
    assert (before[0:4, 0:4] == 7).all() and before[20:30, 20:30].max() == 0
    assert session.undo()  # both regions at once
    assert (labels.data[0:4, 0:4] == 7).all() and labels.data[4:8].max() == 0
    assert labels.data[b].max() == 0 and not session.can_undo and seen["undo"][-1] is False
    assert not session.undo()
    np.testing.assert_array_equal(session.project.load_annotations(session.entry), labels.data)


def test_nothing_to_edit_is_no_undo_step(session):
    assert not session.edit_labels([], "accept") and not session.can_undo


def test_switching_image_drops_the_undo_steps(session):
    session.edit_labels([((slice(0, 2), slice(0, 2)), np.ones((2, 2)))], "accept")
    session.set_entry(session.project.entry("other"))
    assert not session.can_undo


def test_tiles_sync_to_the_project_and_say_when_they_changed(session):
    changed = []
    session.tiles_changed.connect(lambda: changed.append(1))
    session.layers.rects = [rect(0, 0, 32, 32)]
    session.sync_tiles()
    first = session.entry.train_tiles()
    assert [(t.y, t.x, t.h, t.w) for t in first] == [(0, 0, 32, 32)] and changed == [1]
    session.sync_tiles()  # nothing changed: no re-cut
    assert changed == [1]
    session.layers.rects = [rect(0, 0, 32, 32), rect(10, 20, 16, 16)]
    session.sync_tiles()
    assert changed == [1, 1] and session.entry.train_tiles()[0].id == first[0].id  # id kept
    assert Project(session.project.root).state.images[0].tiles[1].y == 10  # saved


def _checkpoint(run, scale: float, tile: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    g = Geometry(scale=scale, tile=tile).to_dict()
    meta = {"width": 4, "geometry": g, "mean": [0.5] * 3, "std": [0.2] * 3}
    save_checkpoint(run / CHECKPOINT_NAME, SemiMoE(4), meta)


def test_the_working_geometry_is_the_models_not_the_forms(session):
    """The scale bug: start_training overwrote project.state.scale before the new run had a
    checkpoint, and panels read that (or the spin box). The session's geometry is the active
    checkpoint's until the new run writes one."""
    p = session.project
    assert session.geometry is None  # no model yet
    _checkpoint(p.new_run_dir(), 4.0, 64)
    assert session.geometry == Geometry(scale=4.0, tile=64)
    # a new training with other settings: the form and the project state say 2 / 128 ...
    session.train_geometry = Geometry(scale=2.0, tile=128)
    p.state.scale, p.state.tile = 2.0, 128
    run2 = p.new_run_dir()
    assert session.geometry == Geometry(scale=4.0, tile=64)  # ... the model is still 4 / 64
    _checkpoint(run2, 2.0, 128)  # the new run's first checkpoint
    assert session.geometry == Geometry(scale=2.0, tile=128)


def test_a_failed_job_is_one_line_naming_the_log_and_a_traceback_in_it(session, tmp_path, caplog):
    from napari_semimoe.core.errors import InputError

    said = []
    session.message.connect(said.append)
    session.log_path = tmp_path / "napari.log"
    try:
        raise RuntimeError("out of memory")
    except RuntimeError as exc:
        line = session.report("prediction", exc)
    assert (
        line == f"prediction failed: RuntimeError: out of memory (details: {tmp_path}/napari.log)"
    )
    assert said == [line] and "\n" not in line
    rec = [r for r in caplog.records if r.levelname == "ERROR"][-1]
    assert rec.exc_info and rec.exc_info[0] is RuntimeError  # the traceback goes to the log
    assert session.report("suggestions", InputError("no image")) == "suggestions failed: no image"
