"""The moe-k family: the load-balancing term's sign, noisy top-k gating, cross-expert
consistency, and a tiny run through the ordinary trainer, checkpoint and predictor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_semimoe.core.bench import synthetic_tiles
from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.families import families, get_family
from napari_semimoe.core.families.moek import MoEK, balance_term, consistency_loss
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.routing import noisy_top_k
from napari_semimoe.core.train import TrainConfig, Trainer


def test_balance_term_is_zero_at_uniform_positive_at_collapse():
    k = 4
    uniform = torch.full((6, k), 1 / k)
    assert float(balance_term(uniform)) == pytest.approx(0.0, abs=1e-6)
    # Each image uses all experts unevenly, but the batch mean is uniform: still 0.
    perm = torch.eye(k)[[0, 1, 2, 3]]
    assert float(balance_term(perm)) == pytest.approx(0.0, abs=1e-6)
    collapse = torch.eye(k)[[0, 0, 0]]
    assert float(balance_term(collapse)) == pytest.approx(math.log(k), rel=1e-5)
    half = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 2)
    assert 0 < float(balance_term(half)) < math.log(k)


def test_balance_gradient_pushes_the_gates_toward_uniform():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [1.5, 0.2, -0.5, 0.0]], requires_grad=True)
    before = float(balance_term(torch.softmax(logits, 1)).detach())
    balance_term(torch.softmax(logits, 1)).backward()
    # The most used expert's logit is pushed down, the least used one's up.
    g = logits.grad.sum(0)
    assert g[0] > 0 and g[2] < 0
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    assert float(balance_term(torch.softmax(stepped, 1))) < before


def test_noisy_top_k_keeps_exactly_k_and_has_no_noise_at_eval():
    torch.manual_seed(0)
    clean = torch.randn(5, 8)
    noise = torch.randn(5, 8)
    w = noisy_top_k(clean, noise, 2, training=True)
    assert ((w > 0).sum(1) == 2).all()
    assert torch.allclose(w.sum(1), torch.ones(5))
    a = noisy_top_k(clean, noise, 2, training=False)
    b = noisy_top_k(clean, noise, 2, training=False)
    assert torch.equal(a, b)  # no noise: the same weights every time
    top = clean.topk(2, 1).indices
    assert torch.allclose(
        a,
        torch.softmax(clean.gather(1, top), 1)
        .new_zeros(5, 8)
        .scatter(1, top, torch.softmax(clean.gather(1, top), 1)),
    )
    # Training noise changes the weights (same support size).
    w2 = noisy_top_k(clean, noise, 2, training=True)
    assert not torch.equal(w, w2) and ((w2 > 0).sum(1) == 2).all()
    assert torch.allclose(noisy_top_k(clean, None, 8, training=True), torch.softmax(clean, 1))


def test_moek_forward_mixes_expert_logits_with_the_gate():
    torch.manual_seed(0)
    m = MoEK(4, n_experts=3, top_k=2).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out.experts.shape == (3, 2, 2, 32, 32) and out.gates.shape == (2, 3)
    assert ((out.gates > 0).sum(1) == 2).all()
    mix = sum(out.gates[:, k, None, None, None] * out.experts[k] for k in range(3))
    assert torch.allclose(out.gated, mix, atol=1e-5)
    # Consistency is zero when every expert agrees with the mixture, positive otherwise.
    same = torch.stack([out.gated] * 3)
    assert float(consistency_loss(same, out.gated)) == pytest.approx(0.0, abs=1e-7)
    assert float(consistency_loss(out.experts, out.gated)) > 0


def test_moek_trains_checkpoints_and_predicts(tmp_path):
    assert "moe-k" in families()
    images, masks = synthetic_tiles(4, size=48, seed=1)
    cfg = TrainConfig(
        family="moe-k",
        width=4,
        experts=3,
        top_k=2,
        iterations=3,
        threads=1,
        precision="fp32",
        lambda_max=5.0,
        geometry=Geometry(input_size=32).to_dict(),
    )
    trainer = Trainer(cfg, TrainingSet(images[:2], masks[:2], images[2:]), tmp_path / "run")
    assert trainer.run() == "done"
    losses = trainer.history[-1]["losses"]
    assert {"sup_seg", "unsup_consistency", "total"} <= set(losses)
    assert losses["unsup_consistency"] > 0 and np.isfinite(losses["total"])
    _, doc = read_checkpoint(tmp_path / "run")
    assert doc["meta"]["family"] == "moe-k" and doc["meta"]["config"]["experts"] == 3

    loaded = load_model(tmp_path / "run", device="cpu")
    assert isinstance(loaded.model, MoEK) and len(loaded.model.experts) == 3
    p = Predictor(loaded, PredictOptions(precision="fp32", overlap=8))
    out = p.predict_image(images[0])
    assert out["prob"].shape == (48, 48) and 0 <= out["prob"].min() <= out["prob"].max() <= 1
    assert out["gates"].shape == (len(out["tiles"]), 3)
    assert ((out["gates"] > 0).sum(1) == 2).all()  # top-2 of 3 at prediction too
    assert np.allclose(out["gates"].sum(1), 1, atol=1e-5)


def test_moek_settings_are_checked():
    with pytest.raises(InputError, match="experts"):
        TrainConfig(family="moe-k", experts=1).validate()
    with pytest.raises(InputError, match="top_k"):
        TrainConfig(family="moe-k", experts=3, top_k=4).validate()
    assert get_family("moe-k").balance_weight(TrainConfig()) == 0.01
    assert get_family("moe-k").balance_weight(TrainConfig(balance=0)) == 0.0


def test_semimoe_gates_get_the_balance_term_only_when_asked():
    fam = get_family("semimoe")
    torch.manual_seed(0)
    from napari_semimoe.core.model import SemiMoE

    m = SemiMoE(4)
    sup = {t: torch.tensor(0.5) for t in ("seg", "sdf", "bnd")}
    gates = {t: torch.eye(3)[[0, 0]] for t in ("seg", "sdf", "bnd")}  # collapsed
    off = fam.loss_terms(m, sup, {}, 0.0, TrainConfig(), {"gates": gates})
    assert "balance" not in off
    on = fam.loss_terms(m, sup, {}, 0.0, TrainConfig(balance=0.1), {"gates": gates})
    assert float(on["balance"]) == pytest.approx(0.1 * 3 * math.log(3), rel=1e-5)


def test_train_moek_from_the_cli(tiny_dataset, tmp_path, capsys):
    from napari_semimoe.cli import main

    run = tmp_path / "run"
    tiny = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    args = ["train", "--data", str(tiny_dataset), "--iterations", "1", *tiny, "--family", "moe-k"]
    extra = ["--experts", "2", "--top-k", "1", "--balance", "0.1", "--stain-jitter", "0.05"]
    assert main([*args, *extra, "--out", str(run)]) == 0
    cfg = load_model(run).meta["config"]
    assert (cfg["experts"], cfg["top_k"], cfg["balance"], cfg["stain_jitter"]) == (2, 1, 0.1, 0.05)
    capsys.readouterr()
    assert main([*args, "--experts", "1", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--experts" in err[0]
