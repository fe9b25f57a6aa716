"""A trained network turned into a faster one for inference, computing the same function.

The steps, each on a copy (the plugin trains and predicts from the same checkpoint, and a
caller may still train the model it handed over):

- **fold**: every ``BatchNorm2d`` that follows a ``Conv2d`` in an ``nn.Sequential`` (the
  ``ConvBlock`` / ``UpStep`` blocks of ``core/model.py``, so any family built from them) is
  folded into that convolution's weights and bias (computed in float64, exact in fp32 up to
  rounding) and replaced by ``nn.Identity``; in eval mode a batch norm is an affine map per
  channel, so the folded convolution is the same function with one memory pass less.
- **phase kernels**: the up-steps' 3x3 kernels as their four 2x2 phase kernels
  (:func:`~napari_semimoe.core.model.phase_kernels`), summed once in fp32, not per call.
- **channels-last** memory format (oneDNN's fast layout on a CPU).
- **bf16 weights** when prediction runs under bf16 autocast: the convolutions' and linear
  layers' weights are stored in bf16 once, instead of being cast at every call.

OpenVINO (bf16) was measured as a candidate backend and left out: 1.09x over this copy, for
a large optional dependency and a conversion per input shape (``docs/inference-speed.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from torch import nn

from ..model import UpStep, phase_kernels

log = logging.getLogger(__name__)


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode batch norm into the convolution before it, in place."""
    w = conv.weight.detach().double()
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    dtype = conv.weight.dtype
    with torch.no_grad():
        conv.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(dtype))
        new_bias = ((b - mean) * scale + beta).to(dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        else:
            conv.bias.copy_(new_bias)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def fold_batchnorm_(model: nn.Module) -> int:
    """Fold, in place, every batch norm that directly follows a convolution inside an
    ``nn.Sequential``; returns how many were folded. The model must be in eval mode
    (training-mode batch norm normalises with the batch's statistics, which no weight
    can hold)."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call .eval() first)")
    n = 0
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if _foldable(conv, bn):
                _fold_pair(conv, bn)
                seq._modules[b] = nn.Identity()
                n += 1
    return n


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A folded copy of the eval-mode ``model`` (left as it is) and how many were folded."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call .eval() first)")
    folded = copy.deepcopy(model)
    return folded, fold_batchnorm_(folded)


def precompute_phase_kernels_(model: nn.Module) -> int:
    """Store each up-step convolution's phase kernels (and repeated bias) on it, computed
    once in fp32, as buffers (so they follow ``.to()``); returns how many."""
    n = 0
    for step in model.modules():
        if isinstance(step, UpStep):
            conv = step.up[0]
            with torch.no_grad():
                conv.register_buffer("phase_weight", phase_kernels(conv.weight.detach()))
                bias = None if conv.bias is None else conv.bias.detach().repeat(4)
                conv.register_buffer("phase_bias", bias)
            n += 1
    return n


def cast_weights_(model: nn.Module, dtype: torch.dtype) -> int:
    """Convolution and linear weights (and phase kernels) to ``dtype``, in place. Only for
    a model run under autocast to the same dtype, which would cast them at every call."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is not None and t.is_floating_point():
                    t.data = t.data.to(dtype)
            n += 1
    return n


def remaining_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclasses.dataclass
class InferenceNet:
    """The network a predictor runs, and what was done to it (for logs and ``bench``)."""

    model: nn.Module
    steps: list[str]


def inference_model(
    model: nn.Module,
    *,
    amp: torch.dtype | None = None,
    channels_last: bool = True,
    fold: bool = True,
    bf16_weights: bool = True,
) -> InferenceNet:
    """The fast inference copy of an eval-mode ``model`` (which is not modified).

    ``amp``: the autocast dtype the caller runs it under (None: fp32); bf16 weights are
    stored only then.
    """
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    steps = []
    if fold:
        n = fold_batchnorm_(net)
        steps.append(f"fold {n} batch norms")
        left = remaining_batchnorms(net)
        if left:
            log.debug("%d batch norms not after a convolution in a Sequential: kept", left)
    if precompute_phase_kernels_(net):
        steps.append("phase kernels")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        steps.append("channels-last")
    if bf16_weights and amp == torch.bfloat16:
        cast_weights_(net, torch.bfloat16)
        steps.append("bf16 weights")
    return InferenceNet(net, steps)
