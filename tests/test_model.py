"""Semi-MoE network: parameter counts pinned by the spec, shapes, the fast MGP form against the
literal one, stop-gradient of the pseudo-labels (model level and inside the trainer's fast
pass), and the iteration schedules of TrainConfig."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.losses import adaptive_loss, pseudo_labels, task_loss
from napari_semimoe.core.model import (
    TASKS,
    MultiGate,
    SemiMoE,
    UNetExpert,
    concat_conv,
    count_parameters,
    phase_kernels,
    upsampled_conv,
)
from napari_semimoe.core.train import TrainConfig, Trainer, lr_schedule

# ------------------------------------------------------------------ parameter counts

# Spec §1 table: 3 U-Nets + MGP + 3 loss scalars.
SPEC_TOTALS = {64: 103_665_974, 32: 25_933_734, 16: 6_492_062, 8: 1_627_338}


def _block(ci: int, co: int) -> int:
    """[Conv3x3 (bias) -> BN] x 2: weights + biases + BN gamma/beta."""
    return (9 * ci * co + co + 2 * co) + (9 * co * co + co + 2 * co)


def _unet_by_hand(b: int, out: int, cin: int = 3) -> int:
    w = [b * 2**i for i in range(5)]
    n = _block(cin, w[0]) + sum(_block(w[i - 1], w[i]) for i in range(1, 5))
    for i in range(4, 0, -1):  # up conv (halves channels) + BN, then block on the concat
        n += 9 * w[i] * w[i - 1] + w[i - 1] + 2 * w[i - 1] + _block(2 * w[i - 1], w[i - 1])
    return n + b * out + out  # 1x1 head


def _mgp_by_hand(b: int) -> int:
    h = 3 * b // 2
    gate = (3 * b * h + h) + (h * h + h) + (h * 3 + 3)
    heads = (b * 2 + 2) + (b * 1 + 1) + (b * 2 + 2)
    return 3 * gate + heads


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: one intra-op thread is faster for these tiny tensors."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def meta_model(monkeypatch):
    """Build on the meta device without the (irrelevant, slow there) initialisation."""
    monkeypatch.setattr(SemiMoE, "reset_parameters", lambda self: None)

    def build(width: int) -> SemiMoE:
        with torch.device("meta"):
            return SemiMoE(width)

    return build


@pytest.mark.parametrize("width", [64, 32, 16, 8])
def test_parameter_counts_match_spec_table(width, meta_model):
    counts = count_parameters(meta_model(width))
    assert counts["total"] == SPEC_TOTALS[width]
    # The hand formula agrees with the table too (pins the architecture, not just a sum).
    by_hand = _unet_by_hand(width, 2) * 2 + _unet_by_hand(width, 1) + _mgp_by_hand(width) + 3
    assert by_hand == SPEC_TOTALS[width]
    assert counts["expert_seg"] == _unet_by_hand(width, 2)
    assert counts["expert_sdf"] == _unet_by_hand(width, 1)
    assert counts["expert_bnd"] == _unet_by_hand(width, 2)
    assert counts["mgp"] == _mgp_by_hand(width)
    assert counts["loss_s"] == 3
    parts = sum(v for k, v in counts.items() if k != "total")
    assert parts == counts["total"]


def test_per_part_counts_at_b64(meta_model):
    counts = count_parameters(meta_model(64))
    assert counts["expert_seg"] == 34_527_106
    assert counts["expert_bnd"] == 34_527_106
    assert counts["expert_sdf"] == 34_527_106 - 65  # one head channel fewer: 64 weights + bias
    assert counts["mgp"] == 84_718
    with torch.device("meta"):
        unet = UNetExpert(3, 2, 64)
    assert count_parameters(unet) == {"total": 34_527_106}


def test_network_parameters_excludes_loss_s():
    m = SemiMoE(4)
    net = m.network_parameters()
    assert all(p is not m.loss_s for p in net)
    assert len(net) == len(list(m.parameters())) - 1
    torch.testing.assert_close(m.loss_s.detach(), torch.ones(3))


# ------------------------------------------------------------------ construction and shapes


@pytest.mark.parametrize("width", [1, 3, 5, 0])
def test_odd_or_too_small_width_raises(width):
    with pytest.raises(ValueError):
        SemiMoE(width)


def test_forward_shapes_and_gates():
    torch.manual_seed(0)
    b = 4
    m = SemiMoE(b)
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    assert TASKS == ("seg", "sdf", "bnd")
    expected = {"seg": (2, 2, 32, 32), "sdf": (2, 1, 32, 32), "bnd": (2, 2, 32, 32)}
    for t in TASKS:
        assert tuple(out.expert[t].shape) == expected[t]
        assert tuple(out.gated[t].shape) == expected[t]
        w = out.gates[t]
        assert tuple(w.shape) == (2, 3)
        assert bool((w > 0).all())
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    assert len(out.features) == 3
    for f in out.features:
        assert tuple(f.shape) == (2, b, 32, 32)


def test_expert_returns_features_and_head_of_them():
    torch.manual_seed(1)
    e = UNetExpert(3, 2, 4).eval()
    x = torch.randn(1, 3, 32, 32)
    f, p = e(x)
    assert tuple(f.shape) == (1, 4, 32, 32)
    torch.testing.assert_close(p, e.head(f))


def test_initialisation():
    torch.manual_seed(0)
    m = SemiMoE(8)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            assert bool((mod.bias == 0).all())
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert bool((mod.bias == 0).all())
            assert bool(((mod.weight - 1).abs() < 0.15).all())  # N(1, 0.02): 7.5 sigma
    # Kaiming normal, fan_in: std = sqrt(2 / fan_in); 147k weights, so within a few percent.
    conv = m.experts["seg"].enc[4][3]  # 128 -> 128 channels
    fan_in = 128 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    bn_w = torch.cat([mod.weight for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)])
    assert bn_w.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_w.std().item() == pytest.approx(0.02, rel=0.25)


# ------------------------------------------------------------------ fast MGP == literal MGP


def _mgp_loss(logits, weights, rs):
    loss = 0.0
    for t in TASKS:
        loss = loss + (logits[t] * rs[t]).sum() + (weights[t] * rs["w" + t]).sum()
    return loss


def _run_mgp(mgp, feats0, rs, literal):
    mgp.literal = literal
    feats = [f.clone().requires_grad_(True) for f in feats0]
    mgp.zero_grad(set_to_none=True)
    logits, weights = mgp(feats)
    _mgp_loss(logits, weights, rs).backward()
    grads = {n: p.grad.clone() for n, p in mgp.named_parameters()}
    return logits, weights, [f.grad.clone() for f in feats], grads


@pytest.mark.parametrize("train", [False, True])
def test_multigate_fast_equals_literal(train):
    torch.manual_seed(0)
    b, B = 4, 2
    mgp = MultiGate(b)
    for p in mgp.parameters():  # non-zero biases so the affine part of the heads matters
        torch.nn.init.normal_(p, 0.0, 0.5)
    mgp.train(train)
    feats0 = [torch.randn(B, b, 8, 8) for _ in range(3)]
    chans = {"seg": 2, "sdf": 1, "bnd": 2}
    rs = {t: torch.randn(B, chans[t], 8, 8) for t in TASKS}
    rs.update({"w" + t: torch.randn(B, 3) for t in TASKS})

    torch.manual_seed(123)  # same dropout masks in both runs (gates are called in task order)
    lf, wf, gf, pf = _run_mgp(mgp, feats0, rs, literal=False)
    torch.manual_seed(123)
    ll, wl, gl, pl = _run_mgp(mgp, feats0, rs, literal=True)
    tol = {"rtol": 1e-5, "atol": 1e-5}
    for t in TASKS:
        torch.testing.assert_close(lf[t], ll[t], **tol)
        torch.testing.assert_close(wf[t], wl[t], **tol)
    for a, c in zip(gf, gl):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, c, **tol)
    assert pf.keys() == pl.keys()
    for n in pf:
        torch.testing.assert_close(pf[n], pl[n], **tol)
    for t in TASKS:
        assert pf[f"heads.{t}.weight"].abs().max() > 0
        assert pf[f"gates.{t}.out.weight"].abs().max() > 0

    # The literal form really is Head_m(sum_i W_mi F_i): recompute it by hand.
    mgp.literal = False
    mgp.eval()
    with torch.no_grad():
        logits, weights = mgp(feats0)
        for t in TASKS:
            w = weights[t]
            fused = sum(w[:, i, None, None, None] * feats0[i] for i in range(3))
            torch.testing.assert_close(logits[t], mgp.heads[t](fused), **tol)


def test_semimoe_fast_equals_literal_all_grads():
    """Phase up-convolutions, split concat convolutions and the per-expert gated heads
    compute upstream's literal network: same outputs and gradients."""
    torch.manual_seed(0)
    m = SemiMoE(4).eval()
    x = torch.randn(2, 3, 32, 48)

    def run(literal):
        m.literal = literal
        assert all(s.literal == literal for e in m.experts.values() for s in e.dec)
        m.zero_grad(set_to_none=True)
        out = m(x)
        loss = sum((out.gated[t] ** 2).mean() + out.gates[t][:, 0].sum() for t in TASKS)
        loss.backward()
        return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    of, gf = run(False)
    ol, gl = run(True)
    for t in TASKS:
        torch.testing.assert_close(of.gated[t], ol.gated[t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(of.expert[t], ol.expert[t], rtol=1e-5, atol=1e-5)
    assert gf.keys() == gl.keys()
    assert "experts.seg.head.weight" not in gf  # only gated outputs in the loss
    assert "experts.sdf.enc.0.0.weight" in gf
    for n in gf:
        torch.testing.assert_close(gf[n], gl[n], rtol=1e-4, atol=1e-6)


def test_phase_kernels_on_a_hand_made_case():
    """One input pixel, one 3x3 kernel: after nearest x2 upsampling the pixel covers a 2x2
    block, so output pixel (0, 0) of the block's top-left phase sees kernel taps (1..2, 1..2)
    and the top row of the phase-(0, 0) kernel holds row 0, the bottom row rows 1 + 2."""
    w = torch.arange(9.0).reshape(1, 1, 3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    k = phase_kernels(w)
    assert k.shape == (4, 1, 2, 2)
    # phase (a=0, b=0): rows (0 | 1+2), columns (0 | 1+2)
    assert k[0, 0].tolist() == [[0.0, 1.0 + 2.0], [3.0 + 6.0, 4.0 + 5.0 + 7.0 + 8.0]]
    # phase (a=1, b=1): rows (0+1 | 2), columns (0+1 | 2)
    assert k[3, 0].tolist() == [[0.0 + 1.0 + 3.0 + 4.0, 2.0 + 5.0], [6.0 + 7.0, 8.0]]
    # each phase kernel sums to the whole kernel (a constant image stays constant inside)
    assert torch.allclose(k.sum((2, 3)), w.sum())
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    conv.weight.data.copy_(w)
    out = upsampled_conv(x, conv)
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, padding=1)
    assert out.shape == (1, 1, 6, 6)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_upsampled_conv_equals_upsample_then_conv(layout):
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    # float64: the two forms sum in different orders, and only rounding may differ
    conv = torch.nn.Conv2d(6, 5, 3, padding=1).double().to(memory_format=fmt)
    x0 = torch.randn(2, 6, 7, 10, dtype=torch.float64).contiguous(memory_format=fmt)
    g = torch.randn(2, 5, 14, 20, dtype=torch.float64)

    def run(fn):
        conv.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y = fn(x)
        y.backward(g)
        return y, x.grad, conv.weight.grad, conv.bias.grad

    fast = run(lambda x: upsampled_conv(x, conv))
    lit = run(lambda x: conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
    assert fast[0].is_contiguous(memory_format=fmt)
    for a, b in zip(fast, lit):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_concat_conv_equals_conv_of_the_concatenation():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(7, 4, 3, padding=1)
    a0, b0 = torch.randn(2, 3, 9, 9), torch.randn(2, 4, 9, 9)
    g = torch.randn(2, 4, 9, 9)

    def run(fn):
        conv.zero_grad(set_to_none=True)
        a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = fn(a, b)
        y.backward(g)
        return y, a.grad, b.grad, conv.weight.grad, conv.bias.grad

    split = run(lambda a, b: concat_conv([a, b], conv))
    cat = run(lambda a, b: conv(torch.cat([a, b], 1)))
    for x, y in zip(split, cat):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_channels_last_training_has_the_same_gradients_in_one_layout():
    """The fast path's layout guards change no value, and every ReLU backward sees dense
    channels-last gradients (mixed layouts took a ~10x slower strided kernel)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.manual_seed(0)
    m = SemiMoE(4).eval()
    x = torch.randn(2, 3, 32, 32)

    def grads(model, inp):
        model.zero_grad(set_to_none=True)
        out = model(inp)
        loss = sum((out.gated[t] ** 2).mean() + (out.expert[t] ** 3).mean() for t in TASKS)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(m, x)
    layouts = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten.threshold_backward and args[0].dim() == 4:
                layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
            return func(*args, **(kwargs or {}))

    m_cl = m.to(memory_format=torch.channels_last)
    with Watch():
        cl = grads(m_cl, x.contiguous(memory_format=torch.channels_last))
    assert plain.keys() == cl.keys()
    for n in plain:
        torch.testing.assert_close(cl[n], plain[n], rtol=1e-4, atol=1e-6)
    assert layouts and all(layouts), f"{layouts.count(False)} of {len(layouts)} not dense"


# ------------------------------------------------------------------ stop-gradient of pseudo-labels


def test_gates_get_no_gradient_from_unsupervised_term():
    torch.manual_seed(0)
    m = SemiMoE(4).train()
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    with torch.no_grad():
        gated, _ = m.mgp([f.detach() for f in out.features])
    pl = pseudo_labels(gated)
    uns = {t: task_loss(t, out.expert[t], pl[t]) for t in TASKS}
    adaptive_loss(uns, m.loss_s, 0.4).backward()
    for n, p in m.mgp.named_parameters():
        assert p.grad is None or bool((p.grad == 0).all()), n
    for t in TASKS:
        params = list(m.experts[t].parameters())
        assert all(p.grad is not None for p in params)
        assert m.experts[t].head.weight.grad.abs().max() > 0
        assert m.experts[t].enc[0][0].weight.grad.abs().max() > 0
    assert bool((m.loss_s.grad != 0).all())

    # Control: the same check fails when the SDF pseudo-label is *not* detached.
    m.zero_grad(set_to_none=True)
    out = m(x)
    leaky = torch.tanh(out.gated["sdf"])
    task_loss("sdf", out.expert["sdf"], leaky).backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in m.mgp.parameters())


def _tiny_trainer(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    mask = (((yy - 14) ** 2 + (xx - 17) ** 2) < 64).astype(np.uint8)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    unl = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    data = TrainingSet(imgs, [mask, mask * 3], unlabeled_images=unl)
    cfg = TrainConfig(
        width=4,
        iterations=10,
        labeled_batch=2,
        unlabeled_batch=2,
        device="cpu",
        precision="fp32",
        compile="off",
        geometry=Geometry(input_size=32).to_dict(),
    )
    return Trainer(cfg, data, tmp_path / "run")


def _grads_of(tr, xl, y, xu, lam):
    tr.model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # same gate-dropout masks in every call
    tr._fast_pass(xl, y, xu, lam)
    return {n: None if p.grad is None else p.grad.clone() for n, p in tr.model.named_parameters()}


def test_fast_pass_unsup_term_gives_gates_no_gradient(tmp_path):
    tr = _tiny_trainer(tmp_path)
    xl, y, xu = tr._batches()
    assert xu is not None and tuple(xl.shape) == (2, 3, 32, 32)
    # Train mode: same forward (BN over labeled + unlabeled, same dropout), only lam differs.
    tr.model.train()
    g0 = _grads_of(tr, xl, y, xu, 0.0)
    g1 = _grads_of(tr, xl, y, xu, 1.0)
    mgp = [n for n in g0 if n.startswith("mgp.")]
    assert mgp
    for n in mgp:
        assert g0[n] is not None and g0[n].abs().max() > 0, n  # the sup term does reach them
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-9)
    # ... while the unsupervised term does change the experts' and the s gradients.
    for t in TASKS:
        assert not torch.allclose(g1[f"experts.{t}.head.weight"], g0[f"experts.{t}.head.weight"])
    assert not torch.allclose(g1["loss_s"], g0["loss_s"])

    # Eval mode (BN running stats, no dropout): sup-only vs sup + unsup, gates identical.
    tr.model.eval()
    gs = _grads_of(tr, xl, y, None, 1.0)
    gu = _grads_of(tr, xl, y, xu, 1.0)
    for n in mgp:
        torch.testing.assert_close(gu[n], gs[n], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(gu["experts.seg.head.weight"], gs["experts.seg.head.weight"])


# ------------------------------------------------------------------ schedules


def test_lr_factor_default_schedule():
    cfg = TrainConfig(iterations=100)
    assert cfg.warmup_iters == 10
    assert cfg.decay_iters == 25
    expected = {0: 0.1, 1: 0.2, 4: 0.5, 9: 1.0, 10: 1.0, 34: 1.0, 35: 0.5, 59: 0.5, 60: 0.25}
    expected[85] = 0.125
    expected[99] = 0.125
    for it, f in expected.items():
        assert cfg.lr_factor(it) == pytest.approx(f, abs=1e-12), it
    lrs = lr_schedule(cfg)
    assert len(lrs) == 100
    assert lrs[0] == pytest.approx(0.05)
    assert np.all(np.diff(lrs[:10]) > 0)
    assert np.allclose(np.diff(lrs[:10]), 0.05)  # linear warm-up
    assert np.all(np.diff(lrs[10:]) <= 0)


def test_lr_factor_explicit_schedule():
    cfg = TrainConfig(iterations=20, warmup=4, decay_every=3, decay_factor=0.5)
    got = [cfg.lr_factor(i) for i in range(14)]
    want = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert got == pytest.approx(want)
    no_warm = TrainConfig(iterations=20, warmup=0, decay_every=5)
    assert [no_warm.lr_factor(i) for i in (0, 4, 5, 10)] == pytest.approx([1, 1, 0.5, 0.25])


def test_lambda_ramp():
    cfg = TrainConfig(iterations=100, lambda_max=0.5)
    lam = np.array([cfg.lambda_at(i) for i in range(100)])
    assert lam[0] == pytest.approx(0.005)
    assert lam[49] == pytest.approx(0.25)
    assert lam[-1] == pytest.approx(0.5)
    assert np.allclose(np.diff(lam), 0.005)
    assert TrainConfig().lambda_max == 0.5
    assert TrainConfig().gamma == 0.4
    sup = TrainConfig(iterations=100, supervised_only=True)
    assert all(sup.lambda_at(i) == 0.0 for i in (0, 50, 99))
