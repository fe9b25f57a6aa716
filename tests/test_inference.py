"""Inference parts: the three mergers (memory, memory-mapped, zarr) give identical maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_semimoe.core.data import Geometry
from napari_semimoe.core.inference import (
    InMemoryMerger,
    LoadedModel,
    MemmapMerger,
    PredictOptions,
    Predictor,
    ZarrMerger,
    blend_window,
    make_merger,
)
from napari_semimoe.core.model import SemiMoE


def test_mergers_sum_and_normalise_identically(tmp_path):
    rng = np.random.default_rng(0)
    names, shape, fills = ["a", "b"], (150, 130), {"a": 0.0, "b": -1.0}
    win = blend_window(64, 16)
    mergers = [
        InMemoryMerger(names, shape, fills),
        MemmapMerger(names, shape, fills, tmp_path / "mm"),
        ZarrMerger(names, shape, fills, str(tmp_path / "z.zarr"), chunk=48),
    ]
    # tiles that overlap, run past the border, and leave a corner uncovered
    for y, x in [(0, 0), (0, 48), (40, 10), (100, 100), (120, 0)]:
        maps = {k: rng.random((64, 64), dtype=np.float32) for k in names}
        for m in mergers:
            m.add(y, x, maps, win)
    out = [m.finish() for m in mergers]
    for k in names:
        ref = np.asarray(out[0][k])
        assert ref[64:100, 74:100].min() == fills[k]  # never covered: the fill value
        for o in out[1:]:
            np.testing.assert_array_equal(np.asarray(o[k][:]), ref)


@pytest.mark.parametrize("kind", ["memmap", "zarr"])
def test_predictions_through_each_merger_are_identical(kind, tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel(
        SemiMoE(4).eval(), Geometry(tile=32), [0.7, 0.5, 0.7], [0.2] * 3, {}, torch.device("cpu")
    )
    rng = np.random.default_rng(1)
    img = (ndi.gaussian_filter(rng.random((70, 90, 3)), (2, 2, 0)) * 255).astype(np.uint8)
    read = lambda y, x, h, w: img[y : y + h, x : x + w]  # noqa: E731
    ref = Predictor(loaded, PredictOptions(precision="fp32", experts=True))
    other = Predictor(loaded, PredictOptions(precision="fp32", experts=True, merger=kind))
    a = ref.predict_region_reader(read, img.shape[:2])
    b = other.predict_region_reader(read, img.shape[:2], out_dir=tmp_path / kind)
    assert (
        set(a.maps)
        == set(b.maps)
        == {"prob", "sdf", "boundary", "expert_prob", "expert_sdf", "expert_boundary"}
    )
    for k in a.maps:
        np.testing.assert_array_equal(np.asarray(b.maps[k][:]), a.maps[k])
    np.testing.assert_array_equal(a.gates, b.gates)


def test_merger_kinds_are_checked(tmp_path):
    with pytest.raises(ValueError, match="needs a folder"):
        make_merger(["a"], (4, 4), {"a": 0.0}, None, "zarr")
    with pytest.raises(ValueError, match="unknown merger"):
        make_merger(["a"], (4, 4), {"a": 0.0}, tmp_path, "hdf5")
