"""Issue 14 ('Trust') in the napari loop, driven as a user would under Xvfb: Accept never
erases painting, the annotation history survives napari, a typed project path opens it,
restored tiles look the same, the unlabeled pool follows the tiles, Continue and the
training process, and project files that try to leave the folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from conftest import wait_training

pytestmark = [pytest.mark.viewer]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the ui fixture's geometry (width 4, 64 px tiles at scale 4), trained
    for 2 iterations in-process: the tests need *a* model to predict, not a good one."""
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.checkpoint import CHECKPOINT_NAME
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.train import TrainConfig, Trainer

    images, masks = synthetic_tiles(4, size=64, seed=2)
    run = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig(
        width=4,
        iterations=2,
        threads=1,
        precision="fp32",
        geometry=Geometry(scale=4.0, tile=64).to_dict(),
    )
    Trainer(cfg, TrainingSet(images[:2], masks[:2], images[2:]), run).run()
    return run / CHECKPOINT_NAME


def semimoe_layers() -> dict[str, str]:
    """Semi-MoE's layer names by output (``seg``: its objects layer), from its family."""
    from napari_semimoe.core.families import get_family
    from napari_semimoe.plugin.panels.review import UNCERTAINTY_LAYER

    names = get_family("semimoe").layer_names()
    return {"seg": names["instances"], **names, "uncertainty": UNCERTAINTY_LAYER}


def install(widget, checkpoint: Path) -> None:
    """As if the user had trained once: the project's run-001 holds the checkpoint."""
    run = widget.project.new_run_dir()
    shutil.copy(checkpoint, run / checkpoint.name)
    widget.train_panel._set_training_ui(False)


def predict(qtbot, widget, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "prediction shown" in widget.status.text(), timeout=60_000)
    qtbot.waitUntil(lambda: not widget.review_panel.showing_prediction, timeout=30_000)


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.LeftButton)


# ---------------------------------------------------------------------- 1 · Accept


def test_accept_after_predict_view_keeps_every_painted_pixel(ui, qtbot, tiny_checkpoint):
    """Predict view on one tile, then Accept: the other tiles keep their painting, the
    painted glands of the predicted tile win, predicted glands are only added where
    nothing was painted; Replace overwrites only where predicted; one Undo undoes all."""
    from napari_semimoe.plugin.widget import COVERED, camera

    OUT = semimoe_layers()

    viewer, widget, proj = ui
    install(widget, tiny_checkpoint)
    labels = viewer.layers["annotations"]
    t1, t2 = widget.entry.train_tiles()  # the sample's two painted tiles (512 px)
    assert (labels.data[t1.y : t1.y + t1.h, t1.x : t1.x + t1.w] > 0).any()
    sl1 = (slice(t1.y, t1.y + t1.h), slice(t1.x, t1.x + t1.w))
    gy, gx = np.argwhere(labels.data[sl1] > 0)[len(np.argwhere(labels.data[sl1] > 0)) // 2]
    cam = camera(viewer)
    cam.center = (t1.y + gy, t1.x + gx)  # zoomed onto a painted gland of the first tile
    cam.zoom = 6.0
    predict(qtbot, widget, widget.review_panel.pred_view_btn)
    seg = viewer.layers[OUT["seg"]]
    cov = seg.metadata[COVERED]
    assert 0 < cov.mean() < 0.5  # the view covered part of the slide only

    # What the model predicted there (made known for the test): a gland on a painted
    # gland, one where nothing is painted.
    painted = labels.data.copy()
    h, w = cov.shape
    pw = (painted[: h * 4, : w * 4] > 0).reshape(h, 4, w, 4).any(axis=(1, 3))
    in_t1w = np.zeros_like(cov)
    in_t1w[t1.y // 4 : (t1.y + t1.h) // 4, t1.x // 4 : (t1.x + t1.w) // 4] = True
    free = np.argwhere(cov & in_t1w & ~ndi.binary_dilation(pw, iterations=3))
    touch = np.argwhere(cov & in_t1w & pw)
    assert len(free) and len(touch), "the view shows painted and unpainted tissue"
    seg.data[cov] = 0
    fy, fx = free[len(free) // 2]
    seg.data[fy - 1 : fy + 2, fx - 1 : fx + 2] = 7  # a predicted gland on unpainted tissue
    ty, tx = touch[0]
    seg.data[ty, tx] = 9  # a predicted gland on a painted one
    seg.refresh()

    click(qtbot, widget.review_panel.accept_btn)  # default: add
    after = labels.data.copy()
    keep = painted > 0
    assert np.array_equal(after[keep], painted[keep]), "a painted pixel changed"
    sl2 = (slice(t2.y, t2.y + t2.h), slice(t2.x, t2.x + t2.w))
    assert np.array_equal(after[sl2], painted[sl2]), "a tile without prediction changed"
    added = (after != painted) & ~keep
    assert added.sum() == 9 * 16  # the 3 x 3 working-px gland, 4 x 4 annotation px each
    new_id = np.unique(after[added])
    assert len(new_id) == 1 and new_id[0] > painted.max()  # a fresh id, merged with nothing
    outside = np.ones(after.shape, bool)
    outside[t1.y : t1.y + t1.h, t1.x : t1.x + t1.w] = False
    assert np.array_equal(after[outside], painted[outside])

    click(qtbot, widget.review_panel.undo_btn)  # one Accept is one undo step
    assert np.array_equal(labels.data, painted)
    assert not widget.review_panel.undo_btn.isEnabled()

    widget.review_panel.accept_mode.setCurrentIndex(1)  # Replace, chosen explicitly
    click(qtbot, widget.review_panel.accept_btn)
    after = labels.data
    full = np.kron(cov, np.ones((4, 4), bool))[: after.shape[0], : after.shape[1]]
    in_t1 = np.zeros(after.shape, bool)
    in_t1[t1.y : t1.y + t1.h, t1.x : t1.x + t1.w] = True
    where = full & in_t1
    pred = np.kron(seg.data > 0, np.ones((4, 4), bool))[: after.shape[0], : after.shape[1]]
    assert np.array_equal(after[where] > 0, pred[where])  # the prediction there
    assert np.array_equal(after[~where], painted[~where])  # nothing else touched
    assert (painted[where] > 0).any()  # it did overwrite painting (the test is not empty)
    click(qtbot, widget.review_panel.undo_btn)
    assert np.array_equal(labels.data, painted)


def test_history_is_restored_in_a_fresh_viewer_and_restore_is_undoable(
    ui, qtbot, make_napari_viewer, tiny_checkpoint
):
    """An accept that went wrong, napari closed: after reopening, the dock lists the
    versions kept on disk; restoring one is itself undoable and kept in the history."""
    import tifffile

    from napari_semimoe.core.project import HISTORY_KEEP
    from napari_semimoe.plugin.widget import SemiMoEWidget

    OUT = semimoe_layers()

    viewer, widget, proj = ui
    install(widget, tiny_checkpoint)
    labels = viewer.layers["annotations"]
    predict(qtbot, widget, widget.review_panel.pred_tiles_btn)
    seg = viewer.layers[OUT["seg"]]
    seg.data[:] = 0  # a model that finds no gland in the tiles
    seg.refresh()
    painted = labels.data.copy()
    widget.review_panel.accept_mode.setCurrentIndex(1)
    click(qtbot, widget.review_panel.accept_btn)  # the mistake: replaces the painting in the tile
    accepted = labels.data.copy()
    assert not np.array_equal(accepted, painted)
    widget.project_panel.save_now()
    viewer.close()  # napari closed: its undo is gone

    v2 = make_napari_viewer()
    v2.open_sample("napari-semimoe", "he-sample")
    w2 = SemiMoEWidget(v2)
    qtbot.addWidget(w2)
    w2.project_panel.project_edit.setText(str(proj))
    qtbot.keyClick(w2.project_panel.project_edit, Qt.Key_Return)
    lab2 = v2.layers["annotations"]
    assert np.array_equal(lab2.data, accepted)
    w2.toolbox.setCurrentIndex(2)
    items = [
        w2.review_panel.history_combo.itemText(i)
        for i in range(w2.review_panel.history_combo.count())
    ]
    assert any("before replace" in t for t in items), items
    i = next(i for i, t in enumerate(items) if "before replace" in t)
    w2.review_panel.history_combo.setCurrentIndex(i)
    click(qtbot, w2.review_panel.restore_btn)
    assert np.array_equal(lab2.data, painted)
    w2.project_panel.save_now()
    ann = w2.project.annotations_path(w2.entry)
    assert np.array_equal(tifffile.imread(ann), painted)  # on disk too
    versions = w2.project.versions(w2.entry)
    assert versions[0][2] == "before restore"  # what the restore replaced is kept
    assert np.array_equal(w2.project.load_version(w2.entry, versions[0][0]), accepted)
    click(qtbot, w2.review_panel.undo_btn)  # and the restore itself is one undo step
    assert np.array_equal(lab2.data, accepted)
    assert len(versions) <= HISTORY_KEEP


def test_history_keeps_the_last_versions_pruned_and_readable(tmp_path, monkeypatch):
    import napari_semimoe.core.project as P

    monkeypatch.setattr(P, "HISTORY_EVERY_S", 0.0)  # a version at every save
    p = P.Project(tmp_path)
    e = p.entry("slide")
    for i in range(P.HISTORY_KEEP + 5):
        p.save_annotations(e, np.full((8, 8), i, np.uint16))
    p.keep_version(e, np.full((8, 8), 99, np.uint16), "before-accept")
    vs = p.versions(e)
    assert len(vs) == P.HISTORY_KEEP
    assert vs[0][2] == "before accept" and (p.load_version(e, vs[0][0]) == 99).all()
    values = [int(p.load_version(e, v[0])[0, 0]) for v in vs[1:]]
    assert values == sorted(values, reverse=True) and values[0] == P.HISTORY_KEEP + 3
    assert not [f for f in os.listdir(p.history_dir(e)) if f.endswith(".tmp")]
    with pytest.raises(P.InputError):  # only files of this image's history
        p.load_version(e, tmp_path / "project.json")


# ---------------------------------------------------------------------- 2 · project field


def test_typed_project_path_opens_it_and_without_one_nothing_is_editable(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_semimoe.plugin.widget import NO_PROJECT, SemiMoEWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-semimoe", "he-sample")
    w = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(w)
    # No project: painting and tiles are locked, and the dock says why.
    assert not viewer.layers["annotations"].editable
    assert not viewer.layers["training tiles"].editable
    assert "project folder first" in w.status.text() and NO_PROJECT in w.status.text()
    n = len(viewer.layers["training tiles"].data)
    w.project_panel.add_tile_at_center()
    assert len(viewer.layers["training tiles"].data) == n  # blocked with the prompt
    assert "project folder first" in w.status.text()

    # Typing a path and Enter opens (creates) it.
    target = tmp_path / "typed" / "proj"
    qtbot.keyClicks(w.project_panel.project_edit, str(target))
    qtbot.keyClick(w.project_panel.project_edit, Qt.Key_Return)
    assert w.project is not None and w.project.root == target
    assert (target / "project.json").exists()
    assert viewer.layers["annotations"].editable and viewer.layers["training tiles"].editable
    w.project_panel.add_tile_at_center()
    doc = json.loads((target / "project.json").read_text())
    assert len(doc["images"][0]["tiles"]) == n + 1

    # A path that cannot be a project: one line, the open project stays.
    (tmp_path / "afile").write_text("x")
    w.project_panel.project_edit.setText(str(tmp_path / "afile"))
    qtbot.keyClick(w.project_panel.project_edit, Qt.Key_Return)
    assert w.project.root == target
    assert "cannot use as a project folder" in w.status.text()
    assert w.project_panel.project_edit.text() == str(target)


# ---------------------------------------------------------------------- 3 · tiles on reopen


def test_reopened_tiles_look_as_before_closing(ui, qtbot, make_napari_viewer):
    from napari_semimoe.plugin.widget import SemiMoEWidget, camera

    viewer, widget, proj = ui
    cam = camera(viewer)
    cam.center = (1530, 1530)  # a tile on the slide's border
    widget.project_panel.add_tile_at_center()
    cam.center = (700, 700)
    widget.project_panel.add_tile_at_center()
    tiles = viewer.layers["training tiles"]

    def look(layer):
        return (
            [np.round(d, 3).tolist() for d in layer.data],
            list(layer.edge_width),
            np.round(layer.edge_color, 3).tolist(),
            np.round(layer.face_color, 3).tolist(),
            list(layer.shape_type),
            layer.visible,
        )

    before = look(tiles)
    assert len(before[0]) == 4 and any(max(np.max(d, 0)) == 1536 for d in tiles.data)
    widget.project_panel.save_now()
    viewer.close()
    for keep_sample_tiles in (True, False):
        v2 = make_napari_viewer()
        v2.open_sample("napari-semimoe", "he-sample")
        if not keep_sample_tiles:
            v2.layers.remove("training tiles")
        w2 = SemiMoEWidget(v2, project_dir=proj)
        assert w2.entry is not None and len(w2.entry.train_tiles()) == 4
        assert look(v2.layers["training tiles"]) == before
        np.testing.assert_allclose(v2.layers["training tiles"].scale, tiles.scale)
        v2.close()


# ---------------------------------------------------------------------- 4 · QA pool


def test_pool_follows_the_tiles_and_an_empty_pool_is_said(ui, qtbot, tiny_checkpoint):
    from napari_semimoe.core.trainset import TRAINSET_FILE, trainset_names
    from napari_semimoe.plugin.common import rect as _rect
    from napari_semimoe.plugin.panels.active import NO_POOL

    viewer, widget, proj = ui
    install(widget, tiny_checkpoint)
    panel = widget.active
    widget.toolbox.setCurrentIndex(4)
    click(qtbot, panel.qa_btn)
    qtbot.waitUntil(lambda: panel.qa_list.count() > 0 and not panel.busy, timeout=60_000)
    n = panel.qa_list.count()
    pool = lambda: trainset_names(proj / TRAINSET_FILE)[1]  # noqa: E731

    # A tile over the whole slide: no unlabeled tissue is left, without pressing Start.
    tiles = viewer.layers["training tiles"]
    tiles.add_rectangles([_rect(0, 0, 1536, 1536)])
    qtbot.waitUntil(lambda: not pool(), timeout=30_000)
    qtbot.waitUntil(lambda: NO_POOL in panel.pool_label.text(), timeout=10_000)
    assert panel.qa_list.count() == 0  # the listed tiles left the pool
    click(qtbot, panel.qa_btn)  # nothing to show: said, no busy bar left animating
    qtbot.waitUntil(lambda: NO_POOL in widget.status.text(), timeout=10_000)
    assert not panel.busy
    assert panel.qa_progress.maximum() > 0  # a 0..0 range is Qt's endless busy animation

    # Deleting it brings the pool back at once (not at the next Start).
    tiles.selected_data = {len(tiles.data) - 1}
    tiles.remove_selected()
    qtbot.waitUntil(lambda: len(pool()) > 0, timeout=30_000)
    qtbot.waitUntil(lambda: "unlabeled pool:" in panel.pool_label.text(), timeout=10_000)
    assert str(len(pool())) in panel.pool_label.text()
    assert len([p for p in pool() if p.startswith(widget.entry.name)]) >= n


def test_empty_pool_progress_bar_stops(qapp):
    from qtpy.QtWidgets import QProgressBar, QPushButton, QWidget

    from napari_semimoe.plugin.jobs import ProgressJob

    parent = QWidget()
    bar, btn = QProgressBar(parent), QPushButton(parent)
    job = ProgressJob(bar, btn, parent)
    job.start()
    assert bar.maximum() == 0  # busy while waiting for a first report
    job.finish()  # nothing was ever reported
    assert bar.maximum() > 0 and not btn.isEnabled()


# ---------------------------------------------------------------------- 5 · training


@pytest.mark.slow
def test_continue_needs_a_training_reaps_the_process_and_keeps_the_chart(ui, qtbot):
    viewer, widget, proj = ui
    widget.toolbox.setCurrentIndex(1)
    assert not widget.train_panel.continue_btn.isEnabled()  # nothing to continue from yet
    widget.train_panel.iter_spin.setValue(3)
    click(qtbot, widget.train_panel.start_btn)
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["kind"] == "exit", widget.train_panel.job.last
    pid = widget.train_panel.job._proc.pid
    # joined: no zombie left until the next job
    qtbot.waitUntil(lambda: not Path(f"/proc/{pid}").exists(), timeout=20_000)
    assert widget.train_panel.continue_btn.isEnabled()
    first = list(widget.train_panel.chart.series["total"])
    assert [x for x, _ in first] == [1, 2, 3]
    widget.train_panel.iter_spin.setValue(2)
    click(qtbot, widget.train_panel.continue_btn)
    wait_training(qtbot, widget)
    xs = [x for x, _ in widget.train_panel.chart.series["total"]]
    assert xs == [1, 2, 3, 4, 5]  # the previous run's history kept, the new one after it
    assert widget.train_panel.chart.series["total"][:3] == first
    assert widget.train_panel.chart.boundaries == [3]
    assert (proj / "runs" / "run-002" / "checkpoint.safetensors").exists()


def test_continue_is_enabled_when_a_project_with_a_run_opens(ui, tiny_checkpoint, tmp_path):
    viewer, widget, proj = ui
    assert not widget.train_panel.continue_btn.isEnabled()
    install(widget, tiny_checkpoint)
    widget.set_project(proj)  # reopened
    assert widget.train_panel.continue_btn.isEnabled()


# ---------------------------------------------------------------------- 6 · security


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: d["images"][0].update(id="../../x"), "unsafe or repeated id"),
        (lambda d: d["images"][0].update(id="/tmp/x"), "unsafe or repeated id"),
        (lambda d: d["images"][0].update(id=""), "unsafe or repeated id"),
        (lambda d: d["images"][0]["tiles"].append({"y": 0, "x": 0, "h": 1e30, "w": 5}), "tile"),
        (lambda d: d["images"][0].update(labels_scale=float("nan")), "labels_scale"),
        (lambda d: d.update(scale=-1), "working scale"),
        (lambda d: d.update(images=7), "unreadable project file"),
    ],
)
def test_a_project_file_that_leaves_the_folder_is_refused(tmp_path, edit, says):
    from napari_semimoe.core.errors import InputError
    from napari_semimoe.core.project import Project

    p = Project(tmp_path / "p")
    p.entry("slide")
    p.save_annotations(p.state.images[0], np.zeros((4, 4), np.uint16))
    doc = json.loads((tmp_path / "p" / "project.json").read_text())
    edit(doc)
    (tmp_path / "p" / "project.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        Project(tmp_path / "p")
    assert says in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["p"]  # nothing written outside


def test_runs_outside_the_project_are_ignored_with_a_warning(tmp_path):
    from napari_semimoe.core.checkpoint import CHECKPOINT_NAME
    from napari_semimoe.core.project import Project

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / CHECKPOINT_NAME).write_bytes(b"not ours")
    p = Project(tmp_path / "p")
    (tmp_path / "p" / "runs" / "linked").symlink_to(outside)
    p.state.runs = ["../../elsewhere", str(outside), "..", "linked"]
    p.save()
    q = Project(tmp_path / "p")
    assert q.state.runs == []
    assert q.last_checkpoint() is None
    assert len(q.warnings) == 4 and all("ignored" in w for w in q.warnings)
    run = q.new_run_dir()
    assert run.parent == tmp_path / "p" / "runs"


def test_a_bad_project_in_the_widget_is_one_line(ui, qtbot, tmp_path):
    viewer, widget, proj = ui
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "project.json").write_text(json.dumps({"images": [{"name": "a", "id": "../../x"}]}))
    widget.project_panel.project_edit.setText(str(bad))
    qtbot.keyClick(widget.project_panel.project_edit, Qt.Key_Return)
    assert widget.project.root == proj  # still the good one
    assert "unsafe or repeated id" in widget.status.text()
    assert not list(tmp_path.glob("x*"))


def test_project_files_follow_the_users_umask(tmp_path):
    from napari_semimoe.core.data import TrainingSet
    from napari_semimoe.core.project import Project
    from napari_semimoe.core.trainset import save_trainset

    old = os.umask(0o022)
    try:
        p = Project(tmp_path / "p")
        e = p.entry("slide")
        p.save_annotations(e, np.zeros((4, 4), np.uint16))
        p.keep_version(e, np.zeros((4, 4), np.uint16), "before-accept")
        img = np.zeros((8, 8, 3), np.uint8)
        save_trainset(tmp_path / "p" / "trainset.npz", TrainingSet([img], [img[..., 0]], []))
        files = [
            tmp_path / "p" / "project.json",
            p.annotations_path(e),
            tmp_path / "p" / "trainset.npz",
            p.versions(e)[0][0],
        ]
    finally:
        os.umask(old)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


# ---------------------------------------------------------------------- 7 · autosave


def test_autosave_fires_while_the_user_keeps_painting(ui, qtbot):
    """A user painting stroke after stroke (a paint event every 0.2 s) is saved within the
    autosave interval: a kill of napari loses at most that, not the whole session."""
    import time

    import tifffile

    viewer, widget, _ = ui
    labels = viewer.layers["annotations"]
    labels.brush_size = 6
    path = widget.project.annotations_path(widget.entry)
    widget.project.writer.flush(10)
    interval = widget.project_panel._autosave.interval() / 1000
    t0 = time.monotonic()
    saved_at = None
    for i in range(20):  # 4 s of strokes
        labels.paint((300 + 5 * i, 700), 42)
        qtbot.wait(200)
        if saved_at is None and path.exists():
            widget.project.writer.flush(5)
            if (tifffile.imread(path) == 42).any():
                saved_at = time.monotonic() - t0
    assert saved_at is not None and saved_at < interval + 1.0, saved_at
