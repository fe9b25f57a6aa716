"""Semi-MoE network: three heterogeneous U-Net experts and the multi-gate pseudo-labelling module.

Follows the authors' code (three separate U-Nets, per-image gating), see
``docs/method.md``. The parameter counts at b = 64 / 16 reproduce upstream exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .routing import Routing
from .validate import width_problem

#: Tasks in a fixed order; every per-task tensor or dict in the package uses it.
TASKS: tuple[str, str, str] = ("seg", "sdf", "bnd")
#: Output channels of each task's head: 2-class logits, 1 SDF logit, 2-class logits.
TASK_CHANNELS: dict[str, int] = {"seg": 2, "sdf": 1, "bnd": 2}


class _SameLayoutGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient in its input's memory layout.

    Gradients arriving from ``torch.cat`` (channel slices) or from the losses (NCHW) do not
    match channels-last activations, and ReLU/BN backward then take a strided path ~10x
    slower than the dense one (measured: 24 vs 2 ms per 4x16x256^2 ReLU backward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if ctx.channels_last:
            return grad.contiguous(memory_format=torch.channels_last)
        return grad.contiguous()


def same_layout_grad(x: torch.Tensor) -> torch.Tensor:
    """Apply :class:`_SameLayoutGrad` when it matters (training, channels-last)."""
    if x.requires_grad and x.dim() == 4 and not x.is_contiguous():
        return _SameLayoutGrad.apply(x)
    return x


class _GlobalMeanFP32(torch.autograd.Function):
    """Spatial mean in fp32 whose backward writes the gradient once, in the input's layout
    and dtype (autograd's own mean backward builds an fp32 NCHW map and converts it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last)
        return x.mean(dim=(2, 3), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        g = (grad / (h * w)).to(ctx.dtype)
        # A broadcast view, not a map: autograd adds it to the features' other gradients
        # in one pass (materialising it cost a full-size copy per expert).
        if ctx.channels_last:
            return g[:, None, None, :].expand(n, h, w, c).permute(0, 3, 1, 2)
        return g[:, :, None, None].expand(n, c, h, w)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) spatial mean in fp32."""
    if x.requires_grad and not x.is_contiguous():
        return _GlobalMeanFP32.apply(x)
    return x.mean(dim=(2, 3), dtype=torch.float32)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=True),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class ConvBlock(nn.Sequential):
    """[Conv3x3 -> BN -> ReLU] x 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel applied after nearest x2 upsampling, as four 2x2 kernels on the input.

    Output pixel (2i + a, 2j + b) of the upsampled convolution reads input rows i - 1, i
    (a = 0) or i, i + 1 (a = 1), the kernel's rows summed where two of them land on the same
    input row (columns alike). ``(C_out, C_in, 3, 3)`` -> ``(4 C_out, C_in, 2, 2)``, phase
    ``p = 2a + b`` major. Same function, 16 instead of 36 multiply-adds per input pixel.
    """
    rows = (
        torch.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], 2),  # a = 0
        torch.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], 2),  # a = 1
    )
    phases = []
    for r in rows:  # (C_out, C_in, 2, 3)
        phases.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1))  # b = 0
        phases.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1))  # b = 1
    return torch.cat(phases)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


class _Interleave(torch.autograd.Function):
    """Phase maps ``(N, 4C, H + 1, W + 1)`` of :func:`phase_kernels` (convolved with
    padding 1) -> the upsampled convolution's output ``(N, C, 2H, 2W)``.

    Phase ``p = 2a + b`` fills pixels ``(2i + a, 2j + b)`` from its map at ``(i + a, j + b)``.
    Four strided copies each way; autograd's own slicing backward would build and sum four
    full-size zero-padded gradients instead.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        n, c4, h1, w1 = y.shape
        c, h, w = c4 // 4, h1 - 1, w1 - 1
        fmt = _memory_format(y)
        out = torch.empty((n, c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=fmt)
        o = out.view(n, c, h, 2, w, 2)
        for a in (0, 1):
            for b in (0, 1):
                p = 2 * a + b
                o[:, :, :, a, :, b].copy_(y[:, p * c : (p + 1) * c, a : a + h, b : b + w])
        ctx.shape, ctx.fmt = (n, c, h, w), fmt
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        g = grad.contiguous(memory_format=ctx.fmt).view(n, c, h, 2, w, 2)
        gy = torch.empty(
            (n, 4 * c, h + 1, w + 1), dtype=grad.dtype, device=grad.device, memory_format=ctx.fmt
        ).zero_()
        for a in (0, 1):
            for b in (0, 1):
                p = 2 * a + b
                gy[:, p * c : (p + 1) * c, a : a + h, b : b + w].copy_(g[:, :, :, a, :, b])
        return gy


def upsampled_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_upsample_x2(x))`` for a 3x3, padding-1 convolution, computed at the
    input's resolution (:func:`phase_kernels`): 0.44x the multiply-adds, no upsampled copy.

    An inference copy of the model may hold the phase kernels and bias precomputed on the
    convolution (``phase_weight``, ``phase_bias``: ``core.inference.optimize``), summed in
    fp32 once instead of at every call (and in bf16 when the weights are bf16)."""
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
        raise ValueError("upsampled_conv needs a 3x3 convolution with padding 1 and stride 1")
    k = getattr(conv, "phase_weight", None)
    if k is None:
        k = phase_kernels(conv.weight)
        bias = None if conv.bias is None else conv.bias.repeat(4)
    else:
        bias = getattr(conv, "phase_bias", None)
    return _Interleave.apply(F.conv2d(x, k, bias, padding=1))


def concat_conv(parts: list[torch.Tensor], conv: nn.Conv2d) -> torch.Tensor:
    """``conv(torch.cat(parts, 1))`` as a sum of one convolution per part: no concatenated
    copy, and the gradients reach each part densely instead of as channel slices
    (measured ~4 % of a training step on a 2-core CPU)."""
    out, c0 = None, 0
    for i, x in enumerate(parts):
        c1 = c0 + x.shape[1]
        y = F.conv2d(
            x, conv.weight[:, c0:c1], conv.bias if i == 0 else None, conv.stride, conv.padding
        )
        out = y if out is None else out + y
        c0 = c1
    return out


class UpStep(nn.Module):
    """Nearest upsample x2 -> Conv3x3 -> BN -> ReLU (halves channels), concat skip, ConvBlock."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(*_conv_bn_relu(cin, cout))
        self.block = ConvBlock(2 * cout, cout)
        #: True: upsample, then convolve (upstream's literal form; the reference path).
        self.literal = False

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.literal:
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            return self.block(torch.cat([same_layout_grad(skip), same_layout_grad(x)], dim=1))
        x = self.up[2](self.up[1](upsampled_conv(x, self.up[0])))
        y = concat_conv([skip, x], self.block[0])
        for layer in list(self.block)[1:]:
            y = layer(y)
        return y


class UNetExpert(nn.Module):
    """A 5-level U-Net returning its last decoder features F (b channels) and head logits C(F)."""

    def __init__(self, in_channels: int, out_channels: int, width: int) -> None:
        super().__init__()
        w = [width * 2**i for i in range(5)]
        self.enc = nn.ModuleList(
            [ConvBlock(in_channels, w[0])] + [ConvBlock(w[i - 1], w[i]) for i in range(1, 5)]
        )
        self.dec = nn.ModuleList([UpStep(w[i], w[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(w[0], out_channels, 1)

    def features(self, x: torch.Tensor, routing: nn.Module | None = None) -> torch.Tensor:
        """``routing``: the model's dMoE blocks (:class:`~.routing.Routing`), shared by its
        experts and so not a part of this one."""
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            if routing is not None:
                x = routing.after(i, x)
            skips.append(x)
        x = skips.pop()
        for step in self.dec:
            x = step(x, skips.pop())
        return x

    def forward(
        self, x: torch.Tensor, routing: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        f = same_layout_grad(self.features(x, routing))
        return f, same_layout_grad(self.head(f))


class Gate(nn.Module):
    """One task's gate: per-image softmax weights over the experts from pooled features."""

    def __init__(self, in_features: int, n_experts: int, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = in_features // 2  # 3b -> 1.5b
        self.fc1 = nn.Linear(in_features, hidden)
        self.attn = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_experts)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(pooled))
        h = h * torch.softmax(self.attn(h), dim=1)  # feature self-weighting
        return torch.softmax(self.out(self.drop(h)), dim=1)


class MultiGate(nn.Module):
    """Multi-gate pseudo-labelling (MGP) module: one gate and one fusion head per task."""

    def __init__(
        self, width: int, n_experts: int = 3, channels: dict[str, int] | None = None
    ) -> None:
        super().__init__()
        self.channels = dict(channels or TASK_CHANNELS)
        self.gates = nn.ModuleDict({t: Gate(width * n_experts, n_experts) for t in TASKS})
        self.heads = nn.ModuleDict({t: nn.Conv2d(width, self.channels[t], 1) for t in TASKS})
        #: True: build the fused maps literally, as upstream does (the reference path).
        self.literal = False

    def forward(
        self, feats: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Return gated logits G_m and gate weights W_m (B, n_experts) per task.

        G_m = Head_m(sum_i W_mi F_i) is computed as sum_i W_mi Head_m(F_i): the 1x1 head is
        affine and the weights sum to 1, so both are equal, but the second never builds
        the b-channel fused maps (3x less memory traffic, same gradients).
        """
        pooled = torch.cat([global_mean(f) for f in feats], dim=1)
        if self.literal:
            return self._literal(feats, pooled)
        weight = torch.cat([self.heads[t].weight for t in TASKS])
        bias = torch.cat([self.heads[t].bias for t in TASKS])
        per_expert = [
            same_layout_grad(F.conv2d(f, weight.to(f.dtype), bias.to(f.dtype))) for f in feats
        ]
        logits, weights = {}, {}
        c0 = 0
        for t in TASKS:
            c1 = c0 + self.channels[t]
            w = self.gates[t](pooled)
            wd = w.to(per_expert[0].dtype)
            g = per_expert[0][:, c0:c1] * wd[:, 0, None, None, None]
            for i in range(1, len(per_expert)):
                g = g + per_expert[i][:, c0:c1] * wd[:, i, None, None, None]
            logits[t] = g
            weights[t] = w
            c0 = c1
        return logits, weights

    def _literal(self, feats, pooled):
        logits, weights = {}, {}
        for t in TASKS:
            w = self.gates[t](pooled)
            fused = sum(w[:, i, None, None, None].to(f.dtype) * f for i, f in enumerate(feats))
            logits[t] = self.heads[t](fused)
            weights[t] = w
        return logits, weights


def run_experts(
    experts: nn.ModuleDict, x: torch.Tensor, routing: nn.Module | None = None
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Each expert's features F_i (in ``TASKS`` order) and head logits P_m."""
    feats, logits = [], {}
    for t in TASKS:
        f, p = experts[t](x, routing)
        feats.append(f)
        logits[t] = p
    return feats, logits


@dataclass
class MoEOutput:
    """Everything one forward pass yields: expert logits P_m, gated logits G_m, gate weights."""

    expert: dict[str, torch.Tensor]
    gated: dict[str, torch.Tensor]
    gates: dict[str, torch.Tensor]
    features: list[torch.Tensor]


def init_weights(module: nn.Module) -> None:
    """Upstream's initialisation, for every family's networks: Kaiming (fan-in) convolutions
    and linear layers with zero biases, batch norms at weight ~ N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class SemiMoE(nn.Module):
    """Three U-Net experts (seg, SDF, boundary) + MGP, plus the adaptive loss's log-variances s.

    ``seg_channels``: 2 (binary, today's model) or C + 1 for C foreground classes; the SDF
    and boundary heads stay on the union foreground."""

    def __init__(
        self,
        width: int = 16,
        in_channels: int = 3,
        seg_channels: int = 2,
        attribute_values: list[str] | None = None,
        route_experts: int = 8,
        route_top_k: int = 2,
    ) -> None:
        super().__init__()
        bad = width_problem(width)
        if bad:
            raise ValueError(f"model width {bad}")
        self.width = width
        self.in_channels = in_channels
        channels = TASK_CHANNELS | {"seg": int(seg_channels)}
        self.experts = nn.ModuleDict(
            {t: UNetExpert(in_channels, channels[t], width) for t in TASKS}
        )
        self.mgp = MultiGate(width, len(TASKS), channels)
        # Learnable task weights of the adaptive multi-objective loss (Eq. 11), init 1.0.
        self.loss_s = nn.Parameter(torch.ones(len(TASKS)))
        self.reset_parameters()
        #: dMoE blocks in the experts' encoders (``--attribute-routing``), after the reset:
        #: a binary model without them draws exactly today's initial weights.
        self.routing: nn.Module | None = None
        if attribute_values is not None:
            self.routing = Routing(width, attribute_values, route_experts, route_top_k)

    def reset_parameters(self) -> None:
        init_weights(self)

    @property
    def literal(self) -> bool:
        """True: every layer computed in upstream's literal form (upsample then convolve,
        fused maps built), the reference path; False: the same function, computed faster."""
        return self.mgp.literal

    @literal.setter
    def literal(self, value: bool) -> None:
        self.mgp.literal = bool(value)
        for m in self.modules():
            if isinstance(m, UpStep):
                m.literal = bool(value)

    def network_parameters(self) -> list[nn.Parameter]:
        """Experts + MGP parameters (the SGD group); ``loss_s`` is optimised separately."""
        return [p for n, p in self.named_parameters() if n != "loss_s"]

    def run_experts(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        return run_experts(self.experts, x, self.routing)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        feats, expert = self.run_experts(x)
        gated, gates = self.mgp(feats)
        return MoEOutput(expert=expert, gated=gated, gates=gates, features=feats)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts per part and in total (the spec's table counts all of them)."""
    counts = {}
    if isinstance(model, SemiMoE):
        for t in TASKS:
            counts[f"expert_{t}"] = sum(p.numel() for p in model.experts[t].parameters())
        counts["mgp"] = sum(p.numel() for p in model.mgp.parameters())
        counts["loss_s"] = model.loss_s.numel()
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
