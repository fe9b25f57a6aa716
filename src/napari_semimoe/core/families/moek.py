"""The ``moe-k`` family: K homogeneous U-Net experts, a gate, entropy load balancing and
cross-expert consistency on unlabeled tiles (the Semi-MoE project page's variant, see
``docs/method.md`` "K experts and attribute routing" for the choices its text leaves open).

- K experts E_1..E_K (:class:`~..model.UNetExpert`, 2-class heads, independent weights).
- A per-image gate g = softmax(G(x)) in R^K from the experts' pooled bottleneck features;
  with ``top_k`` < K it is noisy top-k (exactly k non-zero weights, noise in training only).
- Prediction: the gated logits ŷ = Σ_k g_k E_k(x).
- Loss: Dice(ŷ, y) on labeled tiles, + β (log K − H(ḡ)) with ḡ the batch-mean gate (the
  page's "balance" term with the sign that prevents collapse), + λ(t) x consistency
  (1/K) Σ_k MSE(softmax E_k(x_u), sg(softmax ŷ(x_u))) on unlabeled tiles.
- With ``attribute_routing`` the experts' two coarsest encoder levels pass through dMoE
  blocks (:class:`~..routing.Routing`, one per level, shared by the K experts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..device import autocast
from ..losses import seg_dice_loss
from ..model import UNetExpert, global_mean, same_layout_grad
from ..routing import Routing, balance_term, noisy_top_k, routing_options
from .base import Family, Inference, Losses, softmax_foreground
from .semimoe import SEMIMOE_TASKS


def consistency_loss(experts: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:
    """(1/K) Σ_k MSE(softmax E_k, sg(softmax ŷ)); ``experts`` (K, B, C, H, W), ``gated``
    (B, C, H, W) logits."""
    target = torch.softmax(gated.detach().float(), dim=1)
    p = torch.softmax(experts.float(), dim=2)
    return ((p - target) ** 2).mean()


class MoEGate(nn.Module):
    """Per-image gate over K experts from pooled features (clean and noise heads)."""

    def __init__(self, in_features: int, n_experts: int, hidden: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.fc = nn.Linear(in_features, hidden)
        self.drop = nn.Dropout(0.1)
        self.clean = nn.Linear(hidden, n_experts)
        self.noise = nn.Linear(hidden, n_experts)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.relu(self.fc(pooled)))
        noisy = self.top_k < self.clean.out_features  # a dense gate is the page's softmax
        return noisy_top_k(
            self.clean(h), self.noise(h) if noisy else None, self.top_k, self.training
        )


@dataclass
class MoEKOutput:
    """One forward pass: gated logits ŷ (B, 2, H, W), each expert's logits (K, B, 2, H, W),
    gate weights (B, K), and the pooled bottleneck features the gate saw (B, K x 16b)."""

    gated: torch.Tensor
    experts: torch.Tensor
    gates: torch.Tensor
    pooled: torch.Tensor


class MoEK(nn.Module):
    """K homogeneous U-Net experts + a gate (+ optional dMoE blocks in the encoders)."""

    def __init__(
        self,
        width: int,
        n_experts: int = 4,
        top_k: int = 0,
        attribute_values: list[str] | None = None,
        route_experts: int = 8,
        route_top_k: int = 2,
    ) -> None:
        super().__init__()
        if n_experts < 2:
            raise ValueError(f"moe-k needs at least 2 experts, got {n_experts}")
        self.width = width
        #: One tile's gate weights (the predictor's gates files): K of them.
        self.gate_shape = (n_experts,)
        self.experts = nn.ModuleList([UNetExpert(3, 2, width) for _ in range(n_experts)])
        k = top_k if 0 < top_k < n_experts else n_experts
        bottleneck = 16 * width
        self.gate = MoEGate(n_experts * bottleneck, n_experts, max(8, 2 * width), k)
        self.routing: Routing | None = None
        if attribute_values is not None:
            self.routing = Routing(width, attribute_values, route_experts, route_top_k)

    def route(self, attributes: list[str | None]) -> torch.Tensor | None:
        """Router indices of images' attributes (unknown / unseen: "any"); None without
        attribute routing."""
        return None if self.routing is None else self.routing.route(attributes)

    def _expert(self, expert: UNetExpert, x: torch.Tensor):
        skips = []
        for i, block in enumerate(expert.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            if self.routing is not None:
                x = self.routing.after(i, x)
            skips.append(x)
        bottleneck = skips[-1]
        x = skips.pop()
        for step in expert.dec:
            x = step(x, skips.pop())
        return global_mean(bottleneck), same_layout_grad(expert.head(same_layout_grad(x)))

    def forward(self, x: torch.Tensor, routes: torch.Tensor | None = None) -> MoEKOutput:
        """``routes`` (one router index per image) overrides the routes set on the model's
        :class:`Routing` for this pass only."""
        kept = None if self.routing is None else self.routing.routes
        if routes is not None and self.routing is not None:
            self.routing.routes = routes
        try:
            pooled, logits = zip(*(self._expert(e, x) for e in self.experts))
        finally:
            if self.routing is not None:
                self.routing.routes = kept
        pooled = torch.cat(pooled, dim=1)
        gates = self.gate(pooled)
        experts = torch.stack(logits)
        g = gates.to(experts.dtype)
        gated = (experts * g.t()[:, :, None, None, None]).sum(0)
        return MoEKOutput(gated, experts, gates, pooled)


class MoEKFamily(Family):
    name = "moe-k"
    label = "MoE-K"
    #: Semi-MoE's segmentation task (target, loss, map, style); K experts, none per task.
    tasks = (dataclasses.replace(SEMIMOE_TASKS[0], expert_title=""),)
    width_tensor = "model.experts.0.enc.0.0.weight"
    #: The gate weights of K experts; the default K, a checkpoint's own K is in its config.
    gate_shape = (4,)

    def build(self, config: Any) -> MoEK:
        return MoEK(
            int(config.width),
            int(getattr(config, "experts", 4)),
            int(getattr(config, "top_k", 0)),
            **routing_options(config),
        )

    def describe(self, width: int) -> str:
        return f"MoE-K b={width}"

    def balance_weight(self, config: Any) -> float:
        b = getattr(config, "balance", None)
        return 0.01 if b is None else float(b)

    def loss_terms(self, model, sup, uns, lam, config, extras=None):
        """Dice on ŷ, β (log K − H(ḡ)) over every tile of the pass, λ(t) x consistency."""
        terms = {"supervised": sup["seg"]}
        beta = self.balance_weight(config)
        if beta > 0 and extras and extras.get("gates") is not None:
            terms["balance"] = beta * balance_term(extras["gates"])
        if uns:
            terms["consistency"] = (
                lam * float(getattr(config, "consistency", 1.0)) * uns["consistency"]
            )
        return terms

    def train_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        m, cfg = trainer.model, trainer.config
        nl = xl.shape[0]
        x = xl if xu is None else torch.cat([xl, xu])
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(trainer.device, trainer.amp):
            out = m(x)
        sup = {"seg": seg_dice_loss(out.gated[:nl], y["seg"])}
        uns: dict[str, torch.Tensor] = {}
        if xu is not None and lam > 0:
            uns = {"consistency": consistency_loss(out.experts[:, nl:], out.gated[nl:])}
        terms = self.loss_terms(m, sup, uns, lam, cfg, {"gates": out.gates})
        total = sum(list(terms.values())[1:], terms["supervised"])
        total.backward()
        return total.detach(), sup, uns

    def infer(self, model, x, experts: bool, embeddings: bool) -> Inference:
        out = model(x)
        maps = {"prob": softmax_foreground(out.gated)}
        return Inference(maps, out.gates.float(), out.pooled.float() if embeddings else None)
