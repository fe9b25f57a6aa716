"""Shared fixtures. Viewer tests need an X server: pytest-xvfb starts Xvfb when it is
installed; without any display, Qt would abort the whole run, so fall back to offscreen and
skip the tests that need a real viewer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

GLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "glas"


@pytest.hookimpl(trylast=True)  # after pytest-xvfb has set DISPLAY
def pytest_configure(config):
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY"):
        return
    skip = pytest.mark.skip(reason="needs an X server (install xvfb and pytest-xvfb)")
    for item in items:
        if "viewer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A data folder in the CLI's layout: 6 images 96x80 with instance masks, 2 unlabeled-only."""
    from PIL import Image

    from napari_semimoe.core.bench import synthetic_tiles

    images, masks = synthetic_tiles(6, size=96, seed=3)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    for i, (im, m) in enumerate(zip(images, masks)):
        im = im[:, :80]
        Image.fromarray(im).save(tmp_path / "data" / "images" / f"img_{i}.png")
        if i < 4:
            Image.fromarray(m[:, :80]).save(tmp_path / "data" / "masks" / f"img_{i}.png")
    return tmp_path / "data"


@pytest.fixture
def small_set():
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.data import TrainingSet

    images, masks = synthetic_tiles(6, size=48, seed=1)
    return TrainingSet(images[:3], masks[:3], images[3:])


@pytest.fixture
def ui(make_napari_viewer, qtbot, tmp_path):
    from napari_semimoe.plugin.widget import SemiMoEWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-semimoe", "he-sample")
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_project(tmp_path / "proj")
    # Small and fast: width 4, 64 px tiles at working scale 4.
    widget.train_panel.width_spin.setValue(4)
    widget.project_panel.scale_spin.setValue(4.0)
    widget.project_panel.tile_spin.setValue(64)
    widget.train_panel.threads_spin.setValue(1)
    widget.train_panel.precision_combo.setCurrentText("fp32")
    yield viewer, widget, tmp_path / "proj"
    if widget.train_panel.job is not None and not widget.train_panel.job.finished:
        widget.train_panel.job.kill()


def wait_training(qtbot, widget, timeout=240_000):
    qtbot.waitUntil(
        lambda: widget.train_panel.job is not None and widget.train_panel.job.finished,
        timeout=timeout,
    )
    qtbot.waitUntil(lambda: not widget.train_panel._poll.isActive(), timeout=5000)


def glas_or_skip() -> Path:
    if not (GLAS / "train" / "images").is_dir():
        pytest.skip("GlaS data not present (../shared/data/glas)")
    return GLAS


__all__ = ["glas_or_skip", "np"]
