"""Sparse painting in the dock: a tile whose unpainted pixels are unknown reaches the
training child (trainset.npz) with those pixels marked unknown, and the loss ignores them;
a tile left as background is cut exactly as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.viewer


def test_sparse_painting_reaches_the_training_set_and_the_loss_ignores_it(ui, qtbot):
    from napari_semimoe.core.config import TrainConfig
    from napari_semimoe.core.families import get_family
    from napari_semimoe.core.project import _crop_labels
    from napari_semimoe.core.sparse import BACKGROUND_LABEL
    from napari_semimoe.core.targets import IGNORE, UNKNOWN
    from napari_semimoe.core.trainset import load_trainset
    from napari_semimoe.plugin.background_label import BACKGROUND_COLOUR

    viewer, widget, proj = ui
    panel, entry = widget.project_panel, widget.entry
    labels, tiles_layer = viewer.layers["annotations"], viewer.layers["training tiles"]
    t0, t1 = entry.train_tiles()[:2]
    assert t0.unpainted == t1.unpainted == "auto"
    # The background brush: its own id and colour, the annotations layer ready to paint.
    panel.pick_brush("background")
    assert labels.selected_label == BACKGROUND_LABEL and labels.mode == "paint"
    assert viewer.layers.selection.active is labels
    assert np.allclose(
        labels.colormap.map(np.array([BACKGROUND_LABEL], np.uint16))[0], BACKGROUND_COLOUR
    )
    panel.pick_brush("gland")
    assert labels.selected_label == int(labels.data.max()) + 1
    # Paint only part of tile 0: half of its glands are erased (left unpainted).
    sl = (slice(t0.y, t0.y + t0.h), slice(t0.x, t0.x + t0.w))
    ids = [int(i) for i in np.unique(labels.data[sl]) if i > 0]
    assert len(ids) >= 2
    data = labels.data.copy()
    for i in ids[::2]:
        data[data == i] = 0
    labels.data = data
    # Cut with tile 0's unpainted pixels as background: the erased glands are flagged.
    widget.session.save_annotations()
    widget.project.build_training_set(widget.layers.slide_of, lambda e: labels.data)
    assert any(t0.id in w for w in widget.project.cut_warnings)
    # Choose "unknown" for tile 0 (selected in the tiles layer) from the dock.
    tiles_layer.selected_data = {0}
    combo = panel.unpainted_combo
    combo.setCurrentIndex(combo.findData("unknown"))
    combo.activated.emit(combo.findData("unknown"))
    assert (t0.unpainted, t1.unpainted) == ("unknown", "auto")
    saved = json.loads((proj / "project.json").read_text())["images"][0]["tiles"]
    assert {t["id"]: t["unpainted"] for t in saved}[t0.id] == "unknown"
    done = []
    widget.cutter.rebuild(then=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)
    assert not any(t0.id in w for w in widget.project.cut_warnings)

    # What the training child receives.
    ts = load_trainset(proj / "trainset.npz")
    names = ts.labeled_names
    m0 = ts.labeled_masks[names.index(f"{entry.name}/tile-{t0.id}")]
    m1 = ts.labeled_masks[names.index(f"{entry.name}/tile-{t1.id}")]
    s = widget.project.state.scale
    shape = (round(t0.h / s), round(t0.w / s))
    crop0 = _crop_labels(labels.data, t0, entry.labels_scale, shape)
    assert m0.dtype == np.int32
    assert np.array_equal(m0 == UNKNOWN, crop0 == 0)  # every unpainted pixel is unknown
    assert np.array_equal(m0[crop0 > 0], crop0[crop0 > 0])  # the painted glands as painted
    assert (m0 == UNKNOWN).any() and (m0 > 0).any()
    # Tile 1 (auto, no background paint = background): exactly today's cut.
    crop1 = _crop_labels(labels.data, t1, entry.labels_scale, (round(t1.h / s), round(t1.w / s)))
    assert m1.dtype == crop1.dtype and np.array_equal(m1, crop1) and not (m1 < 0).any()

    # The supervised loss computed from that file ignores the unknown pixels.
    family, cfg = get_family("semimoe"), TrainConfig()
    y = family.targets(m0, cfg)
    unknown = m0 == UNKNOWN
    assert np.array_equal(y["seg"] == IGNORE, unknown)
    assert np.isnan(y["sdf"][unknown]).all()
    targets = {t.name: torch.from_numpy(t.collate(y[t.name][None])) for t in family.tasks}
    torch.manual_seed(0)
    logits = {t.name: torch.randn(1, t.channels, *m0.shape) for t in family.tasks}
    base = {t.name: t.loss(logits[t.name], targets[t.name]).item() for t in family.tasks}
    where = torch.from_numpy(unknown)
    moved = {k: torch.where(where, v + 5.0 * torch.randn_like(v), v) for k, v in logits.items()}
    for t in family.tasks:  # anything at the unknown pixels: the same loss
        assert t.loss(moved[t.name], targets[t.name]).item() == pytest.approx(base[t.name])
    known = {k: torch.where(~where, 3.0 * v, v) for k, v in logits.items()}
    assert family.task("seg").loss(known["seg"], targets["seg"]).item() != pytest.approx(
        base["seg"]
    )
    # Background paint in an "auto" tile means: only what is painted counts.
    data = labels.data.copy()
    region = data[t1.y : t1.y + t1.h, t1.x : t1.x + t1.w]  # a view
    top = region[:64]  # a band of background paint along the tile's top (gaps: glands)
    top[top == 0] = BACKGROUND_LABEL
    labels.data = data
    ts = widget.project.build_training_set(widget.layers.slide_of, lambda e: labels.data)
    m1 = ts.labeled_masks[ts.labeled_names.index(f"{entry.name}/tile-{t1.id}")]
    assert (m1 == UNKNOWN).any() and (m1 == 0).any() and not (m1 == BACKGROUND_LABEL).any()
    # No cut left running when the viewer closes (the choice also scheduled a re-cut).
    qtbot.waitUntil(lambda: not panel._pool_timer.isActive(), timeout=10_000)
    qtbot.waitUntil(lambda: not widget.cutter.busy, timeout=60_000)
