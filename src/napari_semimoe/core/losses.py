"""Losses of Semi-MoE (spec §3), with upstream's shape and class-count bugs fixed."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .model import TASKS

#: Upstream keeps a 0.5 factor on the SDF term of the adaptive loss.
TASK_FACTORS: dict[str, float] = {"seg": 1.0, "sdf": 0.5, "bnd": 1.0}


def _one_hot2(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, 2, H, W) float one-hot; always exactly 2 classes."""
    t = (target > 0).long()
    return F.one_hot(t, num_classes=2).permute(0, 3, 1, 2).float()


def seg_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Squared-denominator soft Dice on softmax, both classes, per sample, then averaged."""
    p = torch.softmax(logits.float(), dim=1)
    t = _one_hot2(target)
    inter = (p * t).sum(dim=(2, 3))
    denom = (p * p).sum(dim=(2, 3)) + (t * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def boundary_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Linear soft Dice 1 - (2TP + eps) / (2TP + FP + FN + eps), per sample and class."""
    p = torch.softmax(logits.float(), dim=1)
    t = _one_hot2(target)
    tp = (p * t).sum(dim=(2, 3))
    fp = (p * (1 - t)).sum(dim=(2, 3))
    fn = ((1 - p) * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * tp + eps) / (2.0 * tp + fp + fn + eps)).mean()


def sdf_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between tanh(logits) and the SDF target, both (B, 1, H, W) (upstream broadcast B x B)."""
    if target.dim() == 3:
        target = target.unsqueeze(1)
    if logits.shape != target.shape:
        raise ValueError(
            f"SDF logits {tuple(logits.shape)} and target {tuple(target.shape)} differ"
        )
    return F.mse_loss(torch.tanh(logits.float()), target.float())


TASK_LOSSES = {"seg": seg_dice_loss, "sdf": sdf_loss, "bnd": boundary_dice_loss}


def task_loss(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return TASK_LOSSES[task](logits, target)


def adaptive_loss(losses: dict[str, torch.Tensor], s: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 11: sum_m e^{-s_m} f_m L_m + gamma * sum_j e^{s_j}, with f_sdf = 0.5."""
    total = gamma * torch.exp(s).sum()
    for i, t in enumerate(TASKS):
        total = total + torch.exp(-s[i]) * TASK_FACTORS[t] * losses[t]
    return total


@torch.no_grad()
def pseudo_labels(gated: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached pseudo-labels from the gates: argmax seg / boundary, tanh SDF."""
    return {
        "seg": gated["seg"].argmax(dim=1),
        "sdf": torch.tanh(gated["sdf"].float()),
        "bnd": gated["bnd"].argmax(dim=1),
    }
