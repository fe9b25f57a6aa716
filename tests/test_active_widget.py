"""Suggestions and pseudo-label QA pages driven as a user would, under Xvfb."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import wait_training
from napari_semimoe.core.trainset import TRAINSET_FILE, load_trainset, parse_pool_name
from napari_semimoe.plugin.panels.active import (
    PSEUDO_LAYER,
    PSEUDO_TILES_LAYER,
    SUGGEST_LAYER,
)

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def overlaps(a, b) -> bool:
    return not (
        a[0] >= b[0] + b[2] or a[0] + a[2] <= b[0] or a[1] >= b[1] + b[3] or a[1] + a[3] <= b[1]
    )


def trained(ui, qtbot, iterations=4):
    viewer, widget, proj = ui
    widget.train_panel.iter_spin.setValue(iterations)
    widget.train_panel.start_training()
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["kind"] == "exit", widget.train_panel.job.last
    return viewer, widget, proj


def wait_panel(qtbot, panel, timeout=120_000):
    qtbot.waitUntil(lambda: not panel.busy, timeout=timeout)


def test_suggestions_list_navigate_and_label(ui, qtbot):
    from napari_semimoe.plugin.widget import camera

    viewer, widget, proj = trained(ui, qtbot)
    panel = widget.active
    panel.top_spin.setValue(4)
    panel.suggest()
    wait_panel(qtbot, panel)
    n = panel.suggest_list.count()
    assert 1 <= n <= 4 and len(viewer.layers[SUGGEST_LAYER].data) == n
    boxes = [(c.y0, c.x0, c.side, c.side) for c in panel.suggestions]
    assert all(c.side == 256 for c in panel.suggestions)  # 64 model px at scale 4
    train = [(t.y, t.x, t.h, t.w) for t in widget.entry.train_tiles()]
    for i, b in enumerate(boxes):  # not on training tiles, not on each other
        assert not any(overlaps(b, t) for t in train)
        assert not any(overlaps(b, o) for o in boxes[i + 1 :])
    scores = [c.score for c in panel.suggestions]
    assert scores == sorted(scores, reverse=True)

    # Clicking an entry centres the view on that tile.
    panel.suggest_list.setCurrentRow(1 if n > 1 else 0)
    c = panel.suggestions[panel.suggest_list.currentItem().data(Qt.UserRole)]
    np.testing.assert_allclose(
        np.asarray(camera(viewer).center[-2:]), (c.y0 + c.side / 2, c.x0 + c.side / 2), atol=1
    )

    # One click makes it a training tile whose annotation starts from the prediction.
    labels = viewer.layers["annotations"]
    labels.data[c.y0 + 4 : c.y0 + 12, c.x0 + 4 : c.x0 + 12] = 77  # the user painted here
    before = labels.data.copy()
    panel.label_suggestion()
    qtbot.waitUntil(lambda: not widget.cutting, timeout=30_000)
    tiles = widget.entry.train_tiles()
    assert (c.y0, c.x0, c.side, c.side) in [(t.y, t.x, t.h, t.w) for t in tiles]
    sl = (slice(c.y0, c.y0 + c.side), slice(c.x0, c.x0 + c.side))
    expected = np.kron(c.mask > 0, np.ones((4, 4), bool))
    expected[4:12, 4:12] = True
    assert np.array_equal(labels.data[sl] > 0, expected)
    assert (labels.data[c.y0 + 4 : c.y0 + 12, c.x0 + 4 : c.x0 + 12] == 77).all()  # kept
    assert panel.suggest_list.count() == n - 1  # it left the list
    ts = load_trainset(proj / TRAINSET_FILE)  # the trainer's data already has the new tile
    assert len(ts.labeled_images) == len(tiles)
    widget.review_panel.undo_accept()
    assert np.array_equal(labels.data, before)


def test_pseudo_label_qa_reject_and_promote(ui, qtbot):
    viewer, widget, proj = trained(ui, qtbot)
    panel = widget.active
    panel.show_pseudo_labels()
    wait_panel(qtbot, panel)
    pool = [n for n in load_trainset(proj / TRAINSET_FILE).unlabeled_names if parse_pool_name(n)]
    n = panel.qa_list.count()
    assert n == len(pool) > 2
    seg = viewer.layers[PSEUDO_LAYER]
    assert seg.data.shape == (384, 384) and set(np.unique(seg.data)) <= {0, 1, 2}
    np.testing.assert_allclose(seg.scale, (4.0, 4.0))
    assert len(viewer.layers[PSEUDO_TILES_LAYER].data) == n
    conf = [c.score for c in panel.pseudo]
    assert conf == sorted(conf)  # least confident first

    panel.qa_list.setCurrentRow(0)
    victim = panel.pseudo[panel.qa_list.currentItem().data(Qt.UserRole)]
    panel.reject_selected()
    assert panel.qa_list.count() == n - 1
    qtbot.waitUntil(lambda: not widget.cutting, timeout=30_000)
    assert panel.qa_list.count() == n - 1
    doc = json.loads((proj / "project.json").read_text())
    rejected = [t for t in doc["images"][0]["tiles"] if t["kind"] == "rejected"]
    assert [(t["y"], t["x"]) for t in rejected] == [(victim.y0, victim.x0)]
    names = load_trainset(proj / TRAINSET_FILE).unlabeled_names
    assert victim.name not in names
    assert "rejected" in widget.status.text()
    listed = [panel.pseudo[panel.qa_list.item(i).data(Qt.UserRole)] for i in range(n - 1)]
    assert all(c.name in names for c in listed)  # the list shows what the trainer samples

    panel.qa_list.setCurrentRow(0)
    promoted = panel.pseudo[panel.qa_list.currentItem().data(Qt.UserRole)]
    n_train = len(widget.entry.train_tiles())
    panel.promote_selected()
    qtbot.waitUntil(lambda: not widget.cutting, timeout=30_000)
    assert len(widget.entry.train_tiles()) == n_train + 1
    names = load_trainset(proj / TRAINSET_FILE).unlabeled_names
    assert promoted.name not in names
    # tiles overlapping the new training tile left the pool, and the list
    m = panel.qa_list.count()
    assert m <= n - 2
    assert all(
        panel.pseudo[panel.qa_list.item(i).data(Qt.UserRole)].name in names for i in range(m)
    )


def test_running_training_picks_up_a_rejection(ui, qtbot):
    viewer, widget, proj = trained(ui, qtbot)
    panel = widget.active
    panel.show_pseudo_labels()
    wait_panel(qtbot, panel)
    widget.train_panel.iter_spin.setValue(10_000)
    widget.train_panel.start_training(continue_from=True)
    qtbot.waitUntil(
        lambda: widget.train_panel.job is not None, timeout=30_000
    )  # tiles cut, job started
    qtbot.waitUntil(lambda: widget.train_panel.progress.value() >= 1, timeout=180_000)  # it trains
    panel.qa_list.setCurrentRow(0)
    panel.reject_selected()
    qtbot.waitUntil(lambda: "picked up" in widget.status.text(), timeout=60_000)
    widget.train_panel.stop_training()
    wait_training(qtbot, widget)
    assert widget.train_panel.job.last["result"] == "stopped"


def test_fewer_suggestions_than_asked_say_why():
    """'top 8' returning 2 tiles says why (the places left), not just the count."""
    from napari_semimoe.plugin.panels.active import Candidate, suggestion_words

    picks = [Candidate(0, 0, 512, 0.2, {}, np.zeros((1, 1), np.int32)) for _ in range(2)]
    line = suggestion_words(2, 8, picks)
    assert line.startswith("2 tiles suggested") and "Only 2 of the 8 asked" in line
    assert "512-px tile" in line and "overlaps no training tile" in line
    assert "Only" not in suggestion_words(2, 2, picks)
    assert "overlaps a training tile" in suggestion_words(0, 8, [])
