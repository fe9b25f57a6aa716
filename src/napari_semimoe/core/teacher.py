"""A mean teacher for pseudo-labels (Tarvainen & Valpola, NeurIPS 2017): an exponential
moving average of the student network's weights, an option of Semi-MoE (``ema_teacher``).

Why: the paper's pseudo-labels are the student's own gated outputs of the same pass, so an
early mistake is taught back to the experts at once; an average over the last ~1/(1 - d)
steps changes slowly and is usually the better labeller. The teacher runs in eval mode
(its batch norm uses the running statistics, copied from the student at every update; no
gate dropout), so a tile's pseudo-labels do not depend on the other tiles of the batch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A frozen copy of ``student`` (with a saved teacher's ``state`` when resuming)."""
    teacher = copy.deepcopy(student)
    if state:
        teacher.load_state_dict(state)
    teacher.requires_grad_(False)
    return teacher.eval()


def teacher_decay(decay: float, step: int) -> float:
    """The decay at optimiser step ``step`` (1-based): ``min(d, (1 + step) / (10 + step))``,
    so the first steps follow the student closely instead of averaging in the random
    initial weights for hundreds of steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``t <- decay * t + (1 - decay) * s`` for every parameter; buffers (batch-norm
    running statistics) are copied from the student."""
    tp = list(teacher.parameters())
    sp = [p.detach() for p in student.parameters()]
    torch._foreach_lerp_(tp, sp, 1.0 - decay)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


def teacher_state(teacher: nn.Module) -> dict[str, torch.Tensor]:
    """The teacher's tensors for the checkpoint (``teacher.`` + name)."""
    return {f"teacher.{k}": v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}


def saved_teacher(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's state in checkpoint ``tensors`` ({} when the run saved none)."""
    n = len("teacher.")
    return {k[n:]: v for k, v in tensors.items() if k.startswith("teacher.")}
