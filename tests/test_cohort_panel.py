"""The dock's Cohort page driven as a user would under Xvfb: two small slides and a corrupt
one on a real LocalCluster (one worker), progress per slide, both done, the corrupt one
failed with its reason, Open adds lazy (zarr-backed) layers, and closing the dock during a
second cohort stops it and closes the workers."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from qtpy.QtCore import Qt

pytest.importorskip("distributed")
pytestmark = [pytest.mark.viewer]

SLIDE = (320, 384)  # native px; the model's working scale 2 -> 160 x 192


@pytest.fixture(scope="module")
def cohort_inputs(tmp_path_factory):
    """A tiny model at working scale 2 (width 4, 1 iteration) and a folder of two small
    pyramidal slides and a truncated TIFF."""
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.sample import synthetic_he

    d = tmp_path_factory.mktemp("cohort-panel")
    patch, mask = synthetic_he(512)
    cfg = TrainConfig(
        iterations=1,
        width=4,
        threads=1,
        precision="fp32",
        geometry=Geometry(scale=2, tile=64).to_dict(),
        compile="off",
    )
    half = patch[::2, ::2]
    Trainer(cfg, TrainingSet([half], [mask[::2, ::2]], [half]), d / "run").run()
    slides = d / "slides"
    slides.mkdir()
    for i in range(2):
        img = np.roll(patch, 101 * i, axis=(0, 1))[: SLIDE[0], : SLIDE[1]]
        write_pyramid_tiles(
            slides / f"case{i}.tif",
            SLIDE,
            lambda y, x, h, w, a=img: a[y : y + h, x : x + w],
            levels=2,
            tile=64,
            mpp=0.5,
        )
    (slides / "corrupt.tif").write_bytes((slides / "case0.tif").read_bytes()[:3000])
    return {"run": d / "run", "slides": slides}


@pytest.fixture
def dock(make_napari_viewer, tmp_path, cohort_inputs):
    from napari_semimoe.core.checkpoint import CHECKPOINT_NAME
    from napari_semimoe.plugin.widget import SemiMoEWidget

    viewer = make_napari_viewer()
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_project(tmp_path / "proj")
    run = widget.project.new_run_dir()  # as if the user had trained once
    shutil.copy(cohort_inputs["run"] / CHECKPOINT_NAME, run / CHECKPOINT_NAME)
    widget.toolbox.setCurrentWidget(widget.cohort_panel)
    yield viewer, widget, widget.cohort_panel
    widget.cohort_panel.shutdown()


def _row(panel, name: str) -> dict[str, str]:
    return {c: panel.table.text(name, i) for i, c in enumerate(("name", "status", "tiles"))}


def test_cohort_panel_runs_slides_with_progress_and_opens_a_result(
    dock, qtbot, cohort_inputs, tmp_path
):
    import dask.array as da
    import zarr

    viewer, widget, panel = dock
    panel.add_sources([cohort_inputs["slides"]])
    assert sorted(panel.table.rows) == ["case0", "case1", "corrupt"]  # listed before it runs
    assert {_row(panel, n)["status"] for n in panel.table.rows} == {"queued"}
    assert panel.out_edit.text() == str(tmp_path / "proj" / "cohort")  # default: the project
    panel.workers_spin.setValue(1)
    panel.threads_spin.setValue(1)

    seen: list = []  # every progress report, as the worker thread hands it over
    store = panel._store
    panel._store = lambda p: (seen.append(p), store(p))
    opts = panel.options()
    opts.tissue_only = False  # the synthetic slides' background counts as a slide's too
    opts.block, opts.chunk = 128, 64  # 2 x 2 blocks per slide: progress in steps
    panel.start(opts)
    assert panel.running and not panel.start_btn.isEnabled() and panel.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: not panel.running and panel.start_btn.isEnabled(), timeout=120_000)
    qtbot.waitUntil(lambda: "cohort finished" in panel.summary_label.text(), timeout=5_000)

    # progress came per slide: each good slide went through its stages, then done
    stages = {n: [p.slides[n] for p in seen] for n in ("case0", "case1")}
    for n, states in stages.items():
        assert "maps" in states and states[-1] == "done", (n, states)
        assert states.index("maps") < states.index("done")
    assert seen[-1].tiles_done == seen[-1].tiles_total > 0
    assert len({p.tiles_done for p in seen}) >= 3  # the bar moved in steps
    assert panel.bar.value() == panel.bar.maximum() == seen[-1].tiles_total

    for n in ("case0", "case1"):
        row = _row(panel, n)
        assert row["status"] == "done" and int(row["tiles"]) > 0, row
        assert panel.table.open_button(n).isEnabled()
    bad = _row(panel, "corrupt")
    assert bad["status"].startswith("failed: ") and "corrupt.tif" in bad["status"], bad
    assert not panel.table.open_button("corrupt").isEnabled()
    panel.table.setCurrentCell(panel.table.rows["corrupt"], 0)  # its reason in full below
    assert panel.detail_label.text() == f"corrupt: {bad['status']}"
    assert "truncated" in bad["status"] or "corrupt" in bad["status"]
    assert "2 of 3 slides done, 1 failed" in panel.summary_label.text()
    assert panel.dashboard_label.text().startswith("dask dashboard")

    # Open: the result's layers, read lazily through the plugin's reader
    n_before = len(viewer.layers)
    qtbot.mouseClick(panel.table.open_button("case1"), Qt.LeftButton)
    # (an opened map may also become the project's current image: layers of case1 only)
    added = [la for la in list(viewer.layers)[n_before:] if la.name.startswith("case1_")]
    assert {"case1_mask", "case1_instances", "case1_prob"} <= {la.name for la in added}
    for layer in added:
        levels = layer.data if layer.multiscale else [layer.data]
        for level in levels:
            assert not isinstance(level, np.ndarray), (layer.name, type(level))
            assert isinstance(level, zarr.Array | da.Array), (layer.name, type(level))
    inst = viewer.layers["case1_instances"]
    assert inst.data[0].shape == (SLIDE[0] // 2, SLIDE[1] // 2)
    np.testing.assert_allclose(inst.scale, (1.0, 1.0))  # 0.5 µm/px x working scale 2

    # A second cohort, then the dock is closed while it runs: it stops, the workers close.
    panel.out_edit.setText(str(tmp_path / "second"))
    panel.start(opts)
    qtbot.waitUntil(lambda: panel._progress is not None, timeout=60_000)
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    qtbot.waitUntil(lambda: panel.start_btn.isEnabled(), timeout=5_000)
    assert "cohort stopped" in panel.summary_label.text()
    assert any(_row(panel, n)["status"] == "stopped" for n in ("case0", "case1"))
    qtbot.waitUntil(lambda: not panel.client.active, timeout=5_000)
    viewer.window.add_dock_widget(widget)  # back in the window (and closed with it)


def test_default_helpers_leave_a_core_for_the_viewer_and_fit_the_memory():
    from napari_semimoe.plugin.cohort_cluster import default_workers

    assert default_workers(cores=2, mem_gb=16) == (1, 1)
    assert default_workers(cores=8, mem_gb=64) == (3, 2)  # 7 spare cores: 3 x 2
    assert default_workers(cores=32, mem_gb=64) == (7, 4)
    assert default_workers(cores=32, mem_gb=6) == (3, 4)  # one helper per 2 GB at most
    w, t = default_workers()
    assert w * t <= max(1, len(os.sched_getaffinity(0)) - 1)


def test_slide_rows_show_tiles_and_reasons_when_the_progress_has_them(qtbot):
    """Per-slide tiles and a failure's reason as soon as the progress report carries them
    (``tiles``: name -> (done, total), ``errors``: name -> reason); without them a slide
    being predicted still reads 'running' and the summary fills the rest at the end."""
    from types import SimpleNamespace

    from napari_semimoe.plugin.cohort_view import SlideTable

    table = SlideTable(lambda name: None)
    qtbot.addWidget(table)
    table.reset(["a", "b", "c"])
    states = {"a": "maps", "b": "maps", "c": "failed"}
    table.show_progress(
        SimpleNamespace(
            slides=states, tiles={"a": (3, 10), "b": (0, 8)}, errors={"c": "c.tif: truncated"}
        )
    )
    assert [table.text("a", i) for i in (1, 2)] == ["running · predicting", "3 / 10"]
    assert [table.text("b", i) for i in (1, 2)] == ["queued", "0 / 8"]
    assert table.text("c", 1) == "failed: c.tif: truncated"
    table.reset(["a", "b", "c"])
    table.show_progress(SimpleNamespace(slides=states))
    assert [table.text(n, 1) for n in "abc"] == ["running · predicting"] * 2 + ["failed"]
