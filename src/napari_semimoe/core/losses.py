"""Losses of Semi-MoE (spec §3), with upstream's shape and class-count bugs fixed.

Sparse painting: integer targets may hold -1 (:data:`~.targets.IGNORE`) and the SDF target
NaN where the pixel is unknown; every supervised term is then computed over the known pixels
only (as if the unknown ones were cut out of the tile). Targets without such pixels take
exactly the unmasked formulas, so their numbers are unchanged.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .model import TASKS
from .targets import IGNORE

#: Upstream keeps a 0.5 factor on the SDF term of the adaptive loss.
TASK_FACTORS: dict[str, float] = {"seg": 1.0, "sdf": 0.5, "bnd": 1.0}


def _one_hot(target: torch.Tensor, n: int = 2) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, n, H, W) float one-hot of exactly ``n`` classes.

    Two classes: anything > 0 is foreground (instance ids are glands, as ever); more: the
    labels are class ids 0..n-1 (a class absent from the batch still has its channel)."""
    t = (target > 0).long() if n == 2 else target.long()
    return F.one_hot(t, num_classes=n).permute(0, 3, 1, 2).float()


def _known(target: torch.Tensor) -> torch.Tensor | None:
    """(B, 1, H, W) float 1 = known pixel, 0 = ignored; None when every pixel is known."""
    known = target >= 0
    if bool(known.all()):
        return None
    return known.unsqueeze(1).float()


def _masked(p: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax and one-hot target (as many classes as ``p`` has channels), both zero on the
    ignored pixels (none: unchanged)."""
    n = p.shape[1]
    k = _known(target)
    if k is None:
        return p, _one_hot(target, n)
    return p * k, _one_hot(target.clamp_min(0), n) * k


def seg_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Squared-denominator soft Dice on softmax, every class (2, or C + 1 multi-class), per
    sample, then averaged (over the known pixels: target -1 = ignored)."""
    p, t = _masked(torch.softmax(logits.float(), dim=1), target)
    inter = (p * t).sum(dim=(2, 3))
    denom = (p * p).sum(dim=(2, 3)) + (t * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def boundary_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Linear soft Dice 1 - (2TP + eps) / (2TP + FP + FN + eps), per sample and class
    (over the known pixels: target -1 = ignored)."""
    p, t = _masked(torch.softmax(logits.float(), dim=1), target)
    tp = (p * t).sum(dim=(2, 3))
    fp = (p * (1 - t)).sum(dim=(2, 3))
    fn = ((1 - p) * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * tp + eps) / (2.0 * tp + fp + fn + eps)).mean()


def sdf_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between tanh(logits) and the SDF target, both (B, 1, H, W) (upstream broadcast B x B);
    NaN target pixels are ignored (the mean is over the batch's known pixels)."""
    if target.dim() == 3:
        target = target.unsqueeze(1)
    if logits.shape != target.shape:
        raise ValueError(
            f"SDF logits {tuple(logits.shape)} and target {tuple(target.shape)} differ"
        )
    target = target.float()
    known = ~torch.isnan(target)
    if bool(known.all()):
        return F.mse_loss(torch.tanh(logits.float()), target)
    diff = torch.where(known, torch.tanh(logits.float()) - target.nan_to_num(0.0), 0.0)
    return (diff * diff).sum() / known.sum().clamp_min(1)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DCA's L_seg (the poster leaves it open): :func:`seg_dice_loss` over all classes plus
    the mean cross-entropy of the known pixels (target -1 = ignored)."""
    t = target.long()
    known = t >= 0
    if bool(known.any()):
        ce = F.cross_entropy(logits.float(), t, ignore_index=-1)
    else:
        ce = logits.float().sum() * 0.0
    return seg_dice_loss(logits, target) + ce


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
def pseudo_labels(
    gated: dict[str, torch.Tensor], confidence: float = 0.0
) -> dict[str, torch.Tensor]:
    """Detached pseudo-labels from the gates: argmax seg / boundary, tanh SDF.

    ``confidence`` > 0 (an option, not the paper): a pixel whose seg (boundary) softmax
    maximum is below it becomes unknown in the seg and SDF (boundary) targets, so the
    unsupervised losses see only the pixels the gates are sure of."""
    out = {
        "seg": gated["seg"].argmax(dim=1),
        "sdf": torch.tanh(gated["sdf"].float()),
        "bnd": gated["bnd"].argmax(dim=1),
    }
    if confidence > 0:
        unsure = torch.softmax(gated["seg"].float(), dim=1).amax(dim=1) < confidence
        out["seg"] = out["seg"].masked_fill(unsure, IGNORE)
        out["sdf"] = out["sdf"].masked_fill(unsure.unsqueeze(1), float("nan"))
        unsure_b = torch.softmax(gated["bnd"].float(), dim=1).amax(dim=1) < confidence
        out["bnd"] = out["bnd"].masked_fill(unsure_b, IGNORE)
    return out
