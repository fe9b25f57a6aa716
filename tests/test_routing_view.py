"""The routing view's pieces without a viewer: the routing map stretches each tile's coarse
expert map over its tile, the per-attribute gate table groups the latest weights of each
tile by origin, the "any" line, the probe reads a routed model's gates in the predictor's
own batches (and leaves it as it was), and moe-k's gate bars show its K experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_semimoe.plugin.routing_view import (
    UNKNOWN,
    GateTable,
    RoutingRun,
    any_note,
    routing_canvas,
)


def test_routing_canvas_stretches_each_coarse_map_over_its_tile():
    m = np.array([[0, 1], [2, 3]], np.uint8)  # a 32 px tile at one token per 16 px
    out = routing_canvas([((10, 0), [(0, 0, 32, 32), (0, 32, 32, 20)], [m, m])], (50, 60))
    assert out[:10].max() == 0  # above the region: not predicted
    assert out[10, 0] == 1 and out[10, 16] == 2 and out[26, 0] == 3 and out[41, 31] == 4
    assert out[10, 32] == 1 and out[10, 51] == 2 and (out[:, 52:] == 0).all()  # clipped


def test_gate_table_groups_by_origin_and_a_repeat_replaces():
    t = GateTable()
    t.record("m1", "a", "lab A", [(0, 0), (0, 64)], [[1, 0], [0.5, 0.5]])
    t.record("m1", "b", None, [(0, 0)], [[0, 1]])
    rows = t.rows()
    assert [r[0] for r in rows] == ["lab A", UNKNOWN] and [r[1] for r in rows] == [2, 1]
    np.testing.assert_allclose(rows[0][2], [0.75, 0.25])
    t.record("m1", "a", "lab B", [(0, 0)], [[0, 1]])  # the same tile predicted again
    assert [(r[0], r[1]) for r in t.rows()] == [("lab A", 1), ("lab B", 1), (UNKNOWN, 1)]
    t.record("m2", "a", "lab A", [(0, 0)], [[1, 0]])  # another model: a new table
    assert [(r[0], r[1]) for r in t.rows()] == [("lab A", 1)]


def test_any_note():
    assert any_note("any", "lab Z") == "'lab Z' was not seen in training: the 'any' router is used"
    assert "origin unknown" in any_note("any", None)
    assert any_note("lab A", "lab A") == "" and any_note(None, "lab A") == ""


@pytest.fixture(scope="module")
def routed_predictor():
    from napari_semimoe.core.data import Geometry
    from napari_semimoe.core.families import get_family
    from napari_semimoe.core.inference import LoadedModel, PredictOptions, Predictor
    from napari_semimoe.core.train import TrainConfig

    cfg = TrainConfig(
        family="moe-k", width=4, experts=2, attribute_routing=True, attribute_values=["a"]
    )
    fam = get_family("moe-k").configure(cfg)
    model = fam.build(cfg).eval()
    loaded = LoadedModel(
        model, Geometry(scale=1.0, tile=64), [0.5] * 3, [0.2] * 3, {}, torch.device("cpu"), fam
    )
    # fp32: on a CPU with bf16 units "auto" would round the gate weights to 8 bits
    return Predictor(loaded, PredictOptions(batch=2, precision="fp32"))


def test_the_probe_reads_the_coarsest_gates_per_tile_and_leaves_the_predictor(routed_predictor):
    pred = routed_predictor
    image = np.random.default_rng(0).integers(0, 255, (64, 160, 3), np.uint8)
    plain = pred.predict_region_reader(lambda y, x, h, w: image[y : y + h, x : x + w], (64, 160))
    run = RoutingRun(pred, "new lab")
    assert run.router == "any" and run.n_route == 8
    wp = pred.predict_region_reader(lambda y, x, h, w: image[y : y + h, x : x + w], (64, 160))
    run.region(wp)
    r = run.result()
    assert r["routed"] and "'new lab' was not seen" in r["note"]
    tiles, maps, means = r["regions"][0]
    assert len(tiles) == len(maps) == len(means) == len(wp.tiles) > 2  # 3 batches of 2
    assert maps[0].shape == (4, 4) and maps[0].max() < 8  # 64 px / 16: the bottleneck
    np.testing.assert_allclose([m.sum() for m in means], 1.0, atol=1e-5)
    assert "predict_batch" not in vars(pred)  # closed: the predictor's own method again
    assert not pred.net.routing.blocks["4"]._forward_hooks
    # The probe only reads: the maps are those of a prediction without it.
    pred.use_attribute("new lab")
    again = pred.predict_region_reader(lambda y, x, h, w: image[y : y + h, x : x + w], (64, 160))
    np.testing.assert_allclose(again.maps["prob"], wp.maps["prob"], atol=1e-6)
    assert plain.maps["prob"].shape == wp.maps["prob"].shape


def test_moek_gate_bars_show_k_experts():
    from napari_semimoe.core.families import get_family
    from napari_semimoe.plugin.gate_bars import expert_names, gate_bars

    names = expert_names(get_family("moe-k").tasks, 5)
    assert names == [f"expert {i}" for i in range(1, 6)]
    bars = gate_bars([((0, 0, 64, 64), np.full(5, 0.2))], 1.0, names)
    assert len(bars.rects) == 1 + 3 * 5  # the panel, then track, bar and text per expert
    assert [t for t in bars.texts if t] == [f"expert {i} 20%" for i in range(1, 6)]
