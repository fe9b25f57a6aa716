"""Losses (spec §3) on hand-computed cases: squared seg Dice with exactly 2 classes, linear
boundary Dice, SDF MSE without broadcasting, the adaptive loss and detached pseudo-labels."""

from __future__ import annotations

import math

import pytest
import torch

from napari_semimoe.core.losses import (
    TASK_FACTORS,
    adaptive_loss,
    boundary_dice_loss,
    pseudo_labels,
    sdf_loss,
    seg_dice_loss,
    task_loss,
)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def _onehot_logits(labels: torch.Tensor, big: float = 50.0) -> torch.Tensor:
    """(B, H, W) 0/1 -> (B, 2, H, W) logits whose softmax is one-hot to float precision."""
    on = (labels > 0).float()
    return torch.stack([big * (1 - 2 * on), big * (2 * on - 1)], dim=1)


# ------------------------------------------------------------------ seg Dice


def test_seg_dice_uniform_probabilities_by_hand():
    # logits 0 -> p = 0.5 everywhere; one gland pixel out of 4.
    # gland: (2*0.5 + 1) / (4*0.25 + 1 + 1) = 2/3; background: (2*1.5 + 1) / (1 + 3 + 1) = 4/5.
    logits = torch.zeros(1, 2, 2, 2)
    target = _t([[[1, 0], [0, 0]]])
    want = ((1 - 2 / 3) + (1 - 4 / 5)) / 2  # 4/15
    assert seg_dice_loss(logits, target).item() == pytest.approx(want, rel=1e-6)


def test_seg_dice_non_uniform_probabilities_by_hand():
    # Gland logit ln 3, background 0 -> p_gland = 3/4 exactly; target: 2 of 4 pixels gland.
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3.0)
    target = _t([[[1, 1], [0, 0]]])
    pg, pb = 0.75, 0.25
    gland = (2 * 2 * pg + 1) / (4 * pg**2 + 2 + 1)
    back = (2 * 2 * pb + 1) / (4 * pb**2 + 2 + 1)
    want = 1 - (gland + back) / 2
    assert seg_dice_loss(logits, target).item() == pytest.approx(want, rel=1e-6)


def test_seg_dice_all_background_keeps_gland_term():
    # gland: (0 + 1) / (1 + 0 + 1) = 1/2; background: (2*2 + 1) / (1 + 4 + 1) = 5/6.
    # Dropping the gland class (upstream with an all-background batch) would give 1/6.
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    assert seg_dice_loss(logits, target).item() == pytest.approx(1 / 3, rel=1e-6)


def test_seg_dice_is_per_sample_then_averaged():
    # Sample A (one gland px): 4/15; sample B (all background): 1/3 -> mean 0.3.
    # Pooling the batch into one Dice would give 0.35 instead.
    logits = torch.zeros(2, 2, 2, 2)
    target = _t([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    assert seg_dice_loss(logits, target).item() == pytest.approx(0.3, rel=1e-6)


def test_seg_dice_instance_ids_are_foreground():
    logits = torch.zeros(1, 2, 2, 2)
    ids = _t([[[3, 0], [0, 0]]])
    assert seg_dice_loss(logits, ids).item() == pytest.approx(4 / 15, rel=1e-6)
    torch.manual_seed(0)
    rnd = torch.randn(2, 2, 6, 6)
    lab = _t([[[0, 3, 3, 0, 7, 7]] * 6, [[7, 0, 0, 0, 0, 3]] * 6])
    torch.testing.assert_close(seg_dice_loss(rnd, lab), seg_dice_loss(rnd, (lab > 0).long()))


def test_seg_dice_perfect_and_inverted_one_hot():
    target = _t([[[1, 1, 0], [0, 1, 0], [0, 0, 0]]])  # 3 gland, 6 background
    assert seg_dice_loss(_onehot_logits(target), target).item() == pytest.approx(0, abs=1e-6)
    # Inverted prediction: intersections 0 -> gland 1/(3+6+1), background 1/(6+3+1).
    inv = _onehot_logits(1 - target)
    assert seg_dice_loss(inv, target).item() == pytest.approx(0.9, rel=1e-6)


def test_seg_dice_gradient_and_dtype():
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.bfloat16, requires_grad=True)
    loss = seg_dice_loss(logits, _t([[[1, 0], [0, 0]]]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().max() > 0


# ------------------------------------------------------------------ boundary Dice


def test_boundary_dice_linear_form_by_hand():
    # p = 0.5, one boundary px of 4. boundary: TP 0.5, FP 1.5, FN 0.5 -> 1 - 1/3;
    # background: TP 1.5, FP 0.5, FN 1.5 -> 1 - 3/5. Mean 8/15.
    # (the squared form would give 1 - 1/2 for the boundary class: a different number)
    logits = torch.zeros(1, 2, 2, 2)
    target = _t([[[1, 0], [0, 0]]])
    assert boundary_dice_loss(logits, target).item() == pytest.approx(8 / 15, rel=1e-6)


def test_boundary_dice_non_uniform_by_hand():
    logits = torch.zeros(2, 2, 1, 4)
    logits[:, 1] = math.log(3.0)  # p_bnd = 3/4
    target = _t([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    # sample 0, class 1: TP 1.5, FP 1.5, FN 0.5 -> 1 - 3/5; class 0: TP 0.5, FP 0.5, FN 1.5
    #   -> 1 - 1/3. sample 1, class 1: TP 0, FP 3 -> 1; class 0: TP 1, FP 0, FN 3 -> 1 - 2/5.
    want = ((2 / 5) + (2 / 3) + 1 + (3 / 5)) / 4
    assert boundary_dice_loss(logits, target).item() == pytest.approx(want, rel=1e-6)


def test_boundary_dice_empty_boundary_perfect_is_zero_and_ids():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    assert boundary_dice_loss(_onehot_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)
    ids = _t([[[5, 0], [0, 0]]])
    assert boundary_dice_loss(torch.zeros(1, 2, 2, 2), ids).item() == pytest.approx(
        8 / 15, rel=1e-6
    )


# ------------------------------------------------------------------ SDF loss


def test_sdf_loss_perfect_prediction_is_zero():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 5, 5) * 1.8 - 0.9  # in (-1, 1)
    logits = torch.atanh(target)
    assert sdf_loss(logits, target).item() == pytest.approx(0.0, abs=1e-10)
    # (B, H, W) target is accepted and NOT broadcast to B x B pairs (upstream gives ~2x var).
    assert sdf_loss(logits, target[:, 0]).item() == pytest.approx(0.0, abs=1e-10)


def test_sdf_loss_b2_no_broadcast_by_hand():
    # Upstream (B,1,H,W) vs (B,H,W) broadcasts to (B,B,H,W): with targets +-1/2 and a
    # perfect prediction it would give 0.5; here it is 0.
    target = torch.stack([torch.full((3, 3), 0.5), torch.full((3, 3), -0.5)])
    logits = torch.atanh(target).unsqueeze(1)
    assert sdf_loss(logits, target).item() == pytest.approx(0.0, abs=1e-10)
    wrong = (torch.tanh(logits) - target).pow(2).mean().item()  # the upstream broadcast
    assert wrong == pytest.approx(0.5, rel=1e-6)


def test_sdf_loss_value_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]])
    assert sdf_loss(logits, target).item() == pytest.approx((0.25 + 0.25 + 1) / 4, rel=1e-6)
    logits = torch.full((1, 1, 1, 2), math.atanh(0.5))
    target = torch.tensor([[[[0.0, 1.0]]]])
    assert sdf_loss(logits, target).item() == pytest.approx((0.25 + 0.25) / 2, rel=1e-6)


def test_sdf_loss_shape_mismatch_raises():
    logits = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError):
        sdf_loss(logits, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError):
        sdf_loss(logits, torch.zeros(1, 4, 4))  # would broadcast over the batch
    with pytest.raises(ValueError):
        sdf_loss(logits, torch.zeros(2, 2, 4, 4))


def test_task_loss_dispatch():
    logits = torch.zeros(1, 2, 2, 2)
    tgt = _t([[[1, 0], [0, 0]]])
    assert task_loss("seg", logits, tgt).item() == pytest.approx(4 / 15, rel=1e-6)
    assert task_loss("bnd", logits, tgt).item() == pytest.approx(8 / 15, rel=1e-6)
    assert task_loss("sdf", torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1)).item() == 1.0


# ------------------------------------------------------------------ adaptive loss


def test_adaptive_loss_by_hand_with_gradient():
    assert TASK_FACTORS == {"seg": 1.0, "sdf": 0.5, "bnd": 1.0}
    s = torch.tensor([0.0, math.log(2.0), 1.0], dtype=torch.float64, requires_grad=True)
    L = {
        "seg": torch.tensor(0.3, dtype=torch.float64, requires_grad=True),
        "sdf": torch.tensor(0.8, dtype=torch.float64, requires_grad=True),
        "bnd": torch.tensor(0.5, dtype=torch.float64, requires_grad=True),
    }
    gamma = 0.4
    e = math.e
    # e^0 * 0.3 + e^-ln2 * 0.5 * 0.8 + e^-1 * 0.5 + 0.4 * (1 + 2 + e)
    want = 0.3 + 0.2 + 0.5 / e + gamma * (3 + e)
    out = adaptive_loss(L, s, gamma)
    assert out.item() == pytest.approx(want, rel=1e-12)
    out.backward()
    # d/ds_m = -e^{-s_m} f_m L_m + gamma e^{s_m}
    ds = [-0.3 + gamma * 1, -0.2 + gamma * 2, -0.5 / e + gamma * e]
    assert s.grad.tolist() == pytest.approx(ds, rel=1e-12)
    # d/dL_m = e^{-s_m} f_m
    assert L["seg"].grad.item() == pytest.approx(1.0)
    assert L["sdf"].grad.item() == pytest.approx(0.25)
    assert L["bnd"].grad.item() == pytest.approx(1 / e)


def test_adaptive_loss_gamma_is_a_setting():
    s = torch.ones(3)
    L = {t: torch.tensor(1.0) for t in ("seg", "sdf", "bnd")}
    a = adaptive_loss(L, s, 0.4).item()
    b = adaptive_loss(L, s, 0.8).item()
    assert b - a == pytest.approx(0.4 * 3 * math.e, rel=1e-6)
    assert a == pytest.approx(2.5 / math.e + 0.4 * 3 * math.e, rel=1e-6)


# ------------------------------------------------------------------ pseudo-labels


def test_pseudo_labels_values_and_detached():
    seg = torch.tensor([[[[2.0, -1.0]], [[1.0, 0.5]]]], requires_grad=True)  # (1, 2, 1, 2)
    sdf = torch.tensor([[[[0.0, math.atanh(0.5)]]]], requires_grad=True)  # (1, 1, 1, 2)
    bnd = torch.tensor([[[[-3.0, 4.0]], [[-2.0, 1.0]]]], requires_grad=True)
    pl = pseudo_labels({"seg": seg, "sdf": sdf, "bnd": bnd})
    assert pl["seg"].tolist() == [[[0, 1]]]
    assert pl["bnd"].tolist() == [[[1, 0]]]
    assert pl["seg"].dtype == torch.long and pl["bnd"].dtype == torch.long
    assert tuple(pl["sdf"].shape) == (1, 1, 1, 2)
    assert pl["sdf"].flatten().tolist() == pytest.approx([0.0, 0.5], abs=1e-6)
    for v in pl.values():
        assert not v.requires_grad
        assert v.grad_fn is None
    # They feed straight into the task losses (shapes match the supervised targets).
    assert sdf_loss(sdf, pl["sdf"]).item() == pytest.approx(0.0, abs=1e-10)
    loss = seg_dice_loss(seg, pl["seg"])
    loss.backward()
    assert seg.grad is not None
