"""The dock widget driven as a user would, in a real napari viewer under Xvfb."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import wait_training

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def test_full_loop(ui, qtbot, tmp_path):
    viewer, widget, proj = ui
    doc = json.loads((proj / "project.json").read_text())
    (entry,) = doc["images"]
    assert entry["name"] == "sample H&E slide"
    assert len(entry["tiles"]) == 2  # the sample's two annotated tiles
    ann_file = proj / "annotations" / f"{entry['id']}.tif"
    qtbot.waitUntil(ann_file.exists, timeout=10_000)  # written in the background

    # Add a tile and paint a gland in it: both are saved as the user works.
    widget.project_panel.add_tile_at_center()
    qtbot.waitUntil(
        lambda: len(json.loads((proj / "project.json").read_text())["images"][0]["tiles"]) == 3
    )
    labels = viewer.layers["annotations"]
    labels.data[700:740, 700:740] = 99
    labels.events.data()
    import tifffile

    qtbot.waitUntil(lambda: (tifffile.imread(ann_file) == 99).sum() == 1600, timeout=5000)

    # Train a few iterations in the child process.
    widget.train_panel.iter_spin.setValue(4)
    widget.train_panel.start_training()
    assert (
        not widget.train_panel.start_btn.isEnabled()
    )  # the tiles are cut in a thread, then it starts
    qtbot.waitUntil(lambda: widget.train_panel.job is not None, timeout=30_000)
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["kind"] == "exit", widget.train_panel.job.last
    assert widget.train_panel.progress.value() == 4
    assert len(widget.train_panel.chart.series["total"]) == 4
    assert (proj / "runs" / "run-001" / "checkpoint.safetensors").exists()
    assert widget.train_panel.start_btn.isEnabled()

    # Predict the training tiles; layers appear aligned with the slide.
    widget.review_panel.predict("tiles")
    qtbot.waitUntil(lambda: "prediction shown" in widget.status.text(), timeout=120_000)
    seg = viewer.layers["Semi-MoE predicted glands"]
    sdf = viewer.layers["Semi-MoE distance to gland edge"]
    prob = viewer.layers["Semi-MoE gland probability"]
    assert seg.data.shape == (384, 384)
    np.testing.assert_allclose(seg.scale, (4.0, 4.0))
    assert sdf.contrast_limits == [-1.0, 1.0]
    assert sdf.data.min() >= -1 and sdf.data.max() <= 1
    assert prob.data.min() >= 0 and prob.data.max() <= 1
    assert "Semi-MoE uncertainty" in viewer.layers and "Semi-MoE expert weights" in viewer.layers
    n_layers = len(viewer.layers)
    widget.review_panel.predict("tiles")  # again: layers are updated in place, not piled up
    qtbot.waitUntil(
        lambda: (
            widget.review_panel.worker is not None
            and not widget.review_panel.cancel_btn.isEnabled()
        ),
        timeout=120_000,
    )
    qtbot.waitUntil(lambda: not widget.review_panel.showing_prediction, timeout=30_000)
    assert len(viewer.layers) == n_layers

    # Accept into the annotations (Replace: the prediction there), then one undo.
    before = labels.data.copy()
    widget.review_panel.accept_mode.setCurrentIndex(1)
    widget.review_panel.accept_prediction()
    for t in widget.entry.train_tiles()[:2]:  # the sample's tiles: on the 4 px grid
        sl = (slice(t.y, t.y + t.h), slice(t.x, t.x + t.w))
        expected = np.kron(
            seg.data[t.y // 4 : (t.y + t.h) // 4, t.x // 4 : (t.x + t.w) // 4],
            np.ones((4, 4), seg.data.dtype),
        )
        assert np.array_equal(labels.data[sl] > 0, expected > 0)
    widget.review_panel.undo_accept()  # one step for all the tiles
    assert np.array_equal(labels.data, before)

    # Continue training from the checkpoint into a new run.
    widget.train_panel.start_training(continue_from=True)
    wait_training(qtbot, widget)
    assert (proj / "runs" / "run-002" / "checkpoint.safetensors").exists()


def test_pause_resume_stop(ui, qtbot):
    viewer, widget, proj = ui
    widget.train_panel.iter_spin.setValue(10_000)
    widget.train_panel.start_training()
    qtbot.waitUntil(lambda: widget.train_panel.progress.value() >= 1, timeout=180_000)
    widget.train_panel.toggle_pause()
    qtbot.waitUntil(lambda: "paused at" in widget.train_panel.eta_label.text(), timeout=60_000)
    paused_at = widget.train_panel.progress.value()
    qtbot.wait(1500)
    assert widget.train_panel.progress.value() == paused_at  # nothing runs while paused
    widget.train_panel.toggle_pause()
    qtbot.waitUntil(lambda: widget.train_panel.progress.value() > paused_at, timeout=60_000)
    widget.train_panel.stop_training()
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["result"] == "stopped"
    from napari_semimoe.core.checkpoint import read_checkpoint

    _, doc = read_checkpoint(proj / "runs" / "run-001")
    assert doc["meta"]["state"]["iteration"] >= paused_at


def test_predict_view_covers_only_what_is_shown(ui):
    from napari_semimoe.plugin.widget import camera

    viewer, widget, _ = ui
    cam = camera(viewer)
    cam.center = (400, 500)
    cam.zoom = 4.0
    ((y, x, h, w),) = widget.review_panel._region("view")
    assert 0 < h < 1536 and 0 < w < 1536
    assert y <= 400 <= y + h and x <= 500 <= x + w
    assert widget.review_panel._region("image") == [(0, 0, 1536, 1536)]


def test_reopen_restores_annotations_and_tiles(make_napari_viewer, qtbot, ui):
    viewer, widget, proj = ui
    widget.project_panel.add_tile_at_center()
    viewer.layers["annotations"].data[10:20, 10:20] = 5
    widget.session.save_annotations()
    from napari_semimoe.plugin.widget import SemiMoEWidget

    v2 = make_napari_viewer()
    v2.open_sample("napari-semimoe", "he-sample")
    v2.layers.remove("training tiles")
    w2 = SemiMoEWidget(v2)
    w2.set_project(proj)
    assert len(v2.layers["training tiles"].data) == 3
    assert (v2.layers["annotations"].data[10:20, 10:20] == 5).all()


def test_user_errors_are_messages_not_tracebacks(ui, qtbot):
    viewer, widget, proj = ui
    viewer.layers["training tiles"].data = []
    widget.train_panel.start_training()
    qtbot.waitUntil(lambda: "no training tile" in widget.status.text(), timeout=90_000)
    qtbot.waitUntil(lambda: widget.train_panel.start_btn.isEnabled(), timeout=5000)  # UI recovers
    widget.project_panel.add_tile_at_center()
    viewer.layers["annotations"].data[:] = 0
    widget.train_panel.start_training()
    qtbot.waitUntil(lambda: "no painted gland" in widget.status.text(), timeout=90_000)
    assert widget.train_panel.job is None and widget.train_panel.start_btn.isEnabled()
    widget.review_panel.predict("view")  # nothing trained: a warning, no worker
    assert widget.review_panel.worker is None


def test_training_process_crash_is_reported(ui, qtbot):
    viewer, widget, proj = ui
    widget.train_panel.iter_spin.setValue(10_000)
    widget.train_panel.start_training()
    qtbot.waitUntil(
        lambda: widget.train_panel.job is not None and widget.train_panel.job.is_alive(),
        timeout=30_000,
    )
    widget.train_panel.job.kill()
    wait_training(qtbot, widget)
    assert "ended unexpectedly" in widget.status.text()
    assert widget.train_panel.start_btn.isEnabled()


def test_gui_command_opens_sample_with_widget_docked(qtbot, tmp_path):
    """What the README's run command does (`napari-semimoe gui`), without blocking."""
    from napari_semimoe.plugin.launch import launch
    from napari_semimoe.plugin.sample import REAL_SAMPLE_NAME

    viewer, widget = launch(tmp_path / "p", run=False)  # the real sample (EBHI-Seg)
    try:
        names = [ly.name for ly in viewer.layers]
        assert names[:3] == [REAL_SAMPLE_NAME, "annotations", "training tiles"]
        assert "Semi-MoE" in viewer.window.dock_widgets
        assert widget.project is not None and widget.project.state.scale == 1.0
        assert widget.project_panel.image_combo.currentText() == REAL_SAMPLE_NAME
        assert viewer.layers.selection.active.name == "annotations"  # the brush at hand
        assert widget.toolbox.currentIndex() == 1  # painted tiles: 2 · Train
    finally:
        viewer.close()


def test_first_start_takes_most_of_the_screen(qapp, monkeypatch):
    """Qt's default ~950 x 550 window left the slide a strip between the docks on a
    1600 x 1000 screen; a size napari restored (the user's) is kept."""
    from qtpy.QtCore import QRect
    from qtpy.QtWidgets import QApplication

    from napari_semimoe.plugin import launch as L

    class Screen:
        def availableGeometry(self):
            return QRect(0, 40, 1600, 1000)

    class Window:
        def __init__(self, w, h):
            self.geom, self.set = (0, 0, w, h), None

        def geometry(self):
            return self.geom

        def set_geometry(self, *g):
            self.set = g

    monkeypatch.setattr(QApplication, "primaryScreen", staticmethod(lambda: Screen()))
    first = type("V", (), {"window": Window(950, 550)})()
    L._use_the_screen(first)
    assert first.window.set == (80, 90, 1440, 900)  # 90 %, centred
    restored = type("V", (), {"window": Window(1300, 820)})()
    L._use_the_screen(restored)
    assert restored.window.set is None


def test_annotations_from_several_images_train_one_model(ui, qtbot):
    from napari_semimoe.core.trainset import load_trainset

    viewer, widget, proj = ui
    first = viewer.layers["sample H&E slide"]
    viewer.add_image(np.ascontiguousarray(first.data[:768, :768]), name="second", rgb=True)
    widget.project_panel.image_combo.setCurrentText("second")
    assert widget.entry.name == "second"
    assert len(viewer.layers["training tiles"].data) == 0  # its own, empty, tiles
    assert viewer.layers["annotations"].data.shape == (768, 768)
    assert viewer.layers["annotations"].data.max() == 0
    from napari_semimoe.plugin.widget import camera

    camera(viewer).center = (384, 384)
    widget.project_panel.add_tile_at_center()
    viewer.layers["annotations"].data[300:340, 300:340] = 1
    widget.session.save_annotations()
    widget.project_panel.image_combo.setCurrentText(
        "sample H&E slide"
    )  # back: the first image's work
    assert len(viewer.layers["training tiles"].data) == 2
    assert viewer.layers["annotations"].data.shape == (1536, 1536)
    assert viewer.layers["annotations"].data.max() > 1
    widget.project.build_training_set(
        widget.layers.slide_of,
        lambda e: viewer.layers["annotations"].data if e is widget.entry else None,
    )
    ts = load_trainset(proj / "trainset.npz")
    owners = {n.split("/")[0] for n in ts.labeled_names}
    assert owners == {"sample H&E slide", "second"}
    assert len(ts.labeled_images) == 3


def test_painting_is_saved_in_the_background_and_a_failed_save_is_reported(ui, qtbot, monkeypatch):
    import tifffile

    import napari_semimoe.core.project as project_mod

    viewer, widget, _ = ui
    labels = viewer.layers["annotations"]
    labels.brush_size = 12
    labels.paint((700, 700), 9)  # the brush emits the paint event
    qtbot.waitUntil(lambda: widget.project.writer.busy or _saved(widget, 9), timeout=5_000)
    widget.project.writer.flush(10)
    assert (tifffile.imread(widget.project.annotations_path(widget.entry)) == 9).any()

    def full_disk(*_a, **_k):
        raise OSError("No space left on device")

    monkeypatch.setattr(project_mod, "write_tiff", full_disk)
    labels.paint((900, 900), 4)
    qtbot.waitUntil(lambda: "annotations not saved" in widget.status.text(), timeout=5_000)
    assert "No space left on device" in widget.status.text()


def _saved(widget, value) -> bool:
    import tifffile

    p = widget.project.annotations_path(widget.entry)
    return p.exists() and (tifffile.imread(p) == value).any()


def test_closing_napari_saves_the_last_strokes(ui):
    import tifffile

    viewer, widget, _ = ui
    labels = viewer.layers["annotations"]
    labels.brush_size = 10
    labels.paint((600, 600), 7)  # the autosave would fire ~1 s later
    path = widget.project.annotations_path(widget.entry)
    viewer.close()  # at once: napari never sends closeEvent to dock widgets
    assert (tifffile.imread(path) == 7).any()


def test_quitting_napari_stops_training_with_a_checkpoint(ui, qtbot):
    from napari_semimoe.core.checkpoint import read_checkpoint

    viewer, widget, proj = ui
    widget.train_panel.iter_spin.setValue(10_000)
    widget.train_panel.start_training()
    qtbot.waitUntil(lambda: widget.train_panel.progress.value() >= 1, timeout=180_000)
    widget.shutdown()  # what QApplication.aboutToQuit runs
    exits = [e for e in widget.train_panel.job.poll() if e["kind"] == "exit"]
    assert exits and exits[-1]["result"] == "stopped"  # asked to stop, not killed
    assert widget.train_panel.job.finished
    _, doc = read_checkpoint(proj / "runs" / "run-001")
    assert doc["meta"]["state"]["iteration"] >= 1  # stopped, not killed: progress was saved
