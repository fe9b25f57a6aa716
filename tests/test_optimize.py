"""The inference copy of the network (core/inference/optimize.py): the same function, on a
copy, and what the predictor and `bench` make of it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from napari_semimoe.core.bench import predict_bench
from napari_semimoe.core.data import Geometry, normalise
from napari_semimoe.core.families import get_family
from napari_semimoe.core.inference import LoadedModel, PredictOptions, Predictor
from napari_semimoe.core.inference.optimize import (
    fold_batchnorm,
    inference_model,
    remaining_batchnorms,
)
from napari_semimoe.core.model import SemiMoE


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine weights far from the identity, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


@pytest.fixture(scope="module")
def model() -> SemiMoE:
    """A random width-4 Semi-MoE whose mask is about half foreground (the tests compare
    masks, so both classes must be in them): the seg head's bias is moved by the median
    logit on a texture, and its weights scaled up so few pixels sit near the threshold."""
    torch.manual_seed(0)
    m = _randomise_batchnorm(SemiMoE(4)).eval()
    head = m.mgp.heads["seg"]
    head.weight.data *= 4
    x = torch.from_numpy(normalise(_texture(128, 128), [0.5] * 3, [0.2] * 3))[None]
    with torch.no_grad():
        seg = m(x).gated["seg"]
        head.bias.data[1] -= (seg[:, 1] - seg[:, 0]).median()
    return m


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.random((h, w, 3)), (3, 3, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.uint8)


def _loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(
        model, Geometry(scale=1.0, tile=64), [0.5] * 3, [0.2] * 3, {}, torch.device("cpu")
    )


def test_folding_is_exact_leaves_no_batch_norm_and_copies(model):
    before = copy.deepcopy(model.state_dict())
    folded, n = fold_batchnorm(model)
    assert n == 66 and remaining_batchnorms(folded) == 0  # 3 experts x 22 conv -> BN pairs
    assert remaining_batchnorms(model) == 66  # the original keeps its batch norms
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        a, b = model(x), folded(x)
    for t in ("seg", "sdf", "bnd"):
        scale = a.gated[t].abs().max().item()
        assert (a.gated[t] - b.gated[t]).abs().max().item() <= 1e-5 * max(1.0, scale)
        assert (a.expert[t] - b.expert[t]).abs().max().item() <= 1e-5 * max(1.0, scale)
        assert torch.allclose(a.gates[t], b.gates[t], atol=1e-6)


def test_folding_needs_eval_mode_and_keeps_a_batch_norm_it_cannot_fold():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1),
    )  # fmt: skip
    _randomise_batchnorm(net, seed=1)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net.train())
    folded, n = fold_batchnorm(net.eval())
    assert n == 1 and remaining_batchnorms(folded) == 1  # the one after a ReLU stays
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), folded(x), atol=1e-5)


def test_predictor_masks_equal_folded_vs_unfolded_and_the_model_is_untouched(model):
    trained = copy.deepcopy(model)
    before = copy.deepcopy(trained.state_dict())
    img = _texture(100, 90)
    fast = Predictor(_loaded(trained), PredictOptions(precision="fp32"))
    assert fast.steps[0] == "fold 66 batch norms"
    got = fast.predict_image(img, instances=False)
    # the loaded (training) model: same weights, batch norms, fp32, NCHW, trainable
    assert remaining_batchnorms(trained) == 66
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    w = trained.experts["seg"].enc[0][0].weight
    assert w.dtype == torch.float32 and w.is_contiguous() and w.requires_grad
    plain = Predictor(
        _loaded(copy.deepcopy(model)), PredictOptions(precision="fp32", optimize=False)
    )
    want = plain.predict_image(img, instances=False)
    for k in ("prob", "sdf", "boundary"):
        assert np.abs(got[k] - want[k]).max() < 1e-4, k
    assert 0.05 < want["mask"].mean() < 0.95  # a mask with both classes: the test can fail
    np.testing.assert_array_equal(got["mask"], want["mask"])


def test_bf16_masks_agree_with_fp32(model):
    img = _texture(100, 100, seed=3)
    fp32 = Predictor(_loaded(model), PredictOptions(precision="fp32", optimize=False))
    bf16 = Predictor(_loaded(model), PredictOptions(precision="bf16"))
    assert "bf16 weights" in bf16.steps
    a = fp32.predict_image(img, instances=False)["mask"].astype(bool)
    b = bf16.predict_image(img, instances=False)["mask"].astype(bool)
    assert 0.05 < a.mean() < 0.95
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice > 0.97, dice


def test_bf16_weights_only_under_bf16_autocast(model):
    fp32 = inference_model(model, amp=None)
    bf16 = inference_model(model, amp=torch.bfloat16)
    conv = bf16.model.experts["seg"].enc[0][0]
    assert conv.weight.dtype == torch.bfloat16
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert fp32.model.experts["seg"].enc[0][0].weight.dtype == torch.float32
    assert model.experts["seg"].enc[0][0].weight.dtype == torch.float32


def test_bench_reports_each_path_and_its_ratio(model):
    r = predict_bench(
        model, get_family(), [0.5] * 3, [0.2] * 3, torch.device("cpu"), _texture(64, 64),
        rounds=1, predict_size=64, tile=64, log=lambda s: None,
    )  # fmt: skip
    paths = r["predict_paths"]
    assert set(paths) == {"today", "fold", "optimized", "reference"}
    for k, p in paths.items():
        assert p["mpx_per_s"] > 0 and p["tiles_per_s"] > 0, k
        today_s, this_s = paths["today"]["seconds_all"][0], p["seconds_all"][0]
        assert p["speedup_vs_today"] == pytest.approx(today_s / this_s, rel=0.01), k
    assert paths["today"]["steps"] == [] and "bf16 weights" not in paths["fold"]["steps"]
    assert r["predict_speedup_vs_today"] == paths["optimized"]["speedup_vs_today"]
    assert r["predict_tiles"] == 1 and r["predict_image"] == [64, 64]
    assert paths["fold"]["mask_agreement_vs_today"] > 0.9
