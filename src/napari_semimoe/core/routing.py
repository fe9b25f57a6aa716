"""Routing: noisy top-k gating (Shazeer et al. 2017) and dMoE's attribute-aware blocks
(``docs/method.md``, "K experts and attribute routing").

A dMoE block treats every pixel of a feature map as a token and adds to it the weighted
output of ``k`` of ``n`` shared MLP experts (a residual: the shared path stays). Which
experts, and how much, is decided by a router of the image's attribute (site, scanner, stain
batch, ...): one router per attribute value seen in training, plus the "any" router, which is
trained on a random share of the images with their attribute hidden and answers for an image
whose attribute is missing or new. The experts are shared by all routers; only the routers
are per attribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: The name of the router for images whose attribute is unknown or was not seen in training.
ANY = "any"
#: Encoder levels (0 = finest, 4 = bottleneck) that get a dMoE block with attribute routing:
#: the coarse ones, where the per-token experts are cheap (``docs/method.md``).
ROUTED_LEVELS: tuple[int, ...] = (3, 4)


def balance_term(gates: torch.Tensor) -> torch.Tensor:
    """log K − H(ḡ), ḡ = the batch mean of (B, K) gate weights: 0 when the experts are used
    equally on average, log K when every image goes to one expert; minimising it spreads
    the load (the page's −Σ ḡ log ḡ is H(ḡ), whose minimum is the collapse)."""
    g = gates.float().mean(0)
    k = g.shape[0]
    entropy = -(g * torch.log(g.clamp_min(1e-12))).sum()
    return math.log(k) - entropy


def noisy_top_k(
    clean: torch.Tensor,
    noise_logits: torch.Tensor | None,
    k: int,
    training: bool,
) -> torch.Tensor:
    """Gate weights over the last axis: softmax(KeepTopK(H, k)) with
    H = clean + N(0, 1) * softplus(noise_logits) while training (no noise otherwise).

    The n - k other entries are set to -inf before the softmax, so exactly k weights are
    non-zero (ties broken by ``topk``'s order); ``k`` >= n is a dense softmax."""
    h = clean
    if training and noise_logits is not None:
        h = h + torch.randn_like(clean) * F.softplus(noise_logits)
    n = h.shape[-1]
    if k >= n:
        return torch.softmax(h, dim=-1)
    top = h.topk(k, dim=-1).indices
    keep = torch.full_like(h, float("-inf")).scatter(-1, top, 0.0)
    return torch.softmax(h + keep, dim=-1)


class ExpertMLP(nn.Module):
    """dMoE's shallow expert: Linear C -> 4C, ReLU, Dropout, Linear 4C -> C (on tokens)."""

    def __init__(self, channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, 4 * channels)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(4 * channels, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(tokens))))


class AttributeMoE(nn.Module):
    """A dMoE block on a (B, C, H, W) feature map: shared experts, one router per attribute
    value plus :data:`ANY` (the last router).

    ``forward(h, routes)`` takes one router index per image (:meth:`route`); None routes
    every image through "any". A single-value ``values`` list with no attribute is plain MoE
    routing (one learnt router for all images)."""

    def __init__(
        self,
        channels: int,
        values: Sequence[str] = (),
        n_experts: int = 8,
        k: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= k <= n_experts:
            raise ValueError(f"top-k must be in 1..{n_experts} (the experts), got {k}")
        self.values: list[str] = [str(v) for v in values if str(v) != ANY]
        if len(set(self.values)) != len(self.values):
            raise ValueError("attribute values must be distinct")
        self.k = k
        self.experts = nn.ModuleList([ExpertMLP(channels, dropout) for _ in range(n_experts)])
        r = len(self.values) + 1
        # (router, C, n): router weights W^a and W^a_noise side by side, gathered per image.
        self.w = nn.Parameter(torch.zeros(r, channels, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(r, channels, n_experts))
        nn.init.normal_(self.w, std=channels**-0.5)

    @property
    def routers(self) -> list[str]:
        """Router names in index order (the attribute values, then "any")."""
        return [*self.values, ANY]

    def route(self, attribute: str | None) -> int:
        """The router index of an attribute: its own router, or "any" when it is missing
        or was not seen in training."""
        if attribute is None:
            return len(self.values)
        try:
            return self.values.index(str(attribute))
        except ValueError:
            return len(self.values)

    def gates(self, h: torch.Tensor, routes: torch.Tensor | int | None) -> torch.Tensor:
        """Per-pixel gate weights (B, H, W, n) of each image's router (``routes``: one index
        per image, one index for all, or None for "any")."""
        b = h.shape[0]
        if routes is None:
            routes = len(self.values)
        if isinstance(routes, int):
            routes = torch.full((b,), routes, dtype=torch.long, device=h.device)
        routes = routes.to(h.device)
        tokens = h.permute(0, 2, 3, 1).float()
        w, wn = self.w[routes], self.w_noise[routes]  # (B, C, n)
        clean = torch.einsum("bhwc,bcn->bhwn", tokens, w)
        noise = torch.einsum("bhwc,bcn->bhwn", tokens, wn) if self.training else None
        return noisy_top_k(clean, noise, self.k, self.training)

    def forward(self, h: torch.Tensor, routes: torch.Tensor | None = None) -> torch.Tensor:
        g = self.gates(h, routes)
        tokens = h.permute(0, 2, 3, 1)
        # Every expert on every token (the blocks sit at the coarse levels, where this is
        # cheap); the weights are zero outside each token's top k.
        out = tokens
        for i, expert in enumerate(self.experts):
            gi = g[..., i : i + 1].to(tokens.dtype)
            out = out + gi * expert(tokens)
        return out.permute(0, 3, 1, 2).contiguous(memory_format=_format(h))


class Routing(nn.Module):
    """dMoE blocks after some encoder levels of a model, shared by all its encoders (the
    three Semi-MoE experts, the K of moe-k, DCA's one): the option ``--attribute-routing``
    of every family.

    The routes of the pass in progress are state (``routes``: one router index per image,
    one for the whole batch, or None for "any"), set by the trainer and the predictor
    (:func:`set_routes`), so that a family's passes and inference need no extra argument."""

    def __init__(
        self,
        width: int,
        values: Sequence[str],
        n_experts: int = 8,
        k: int = 2,
        levels: Sequence[int] = ROUTED_LEVELS,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(
            {str(lv): AttributeMoE(width * 2**lv, values, n_experts, k) for lv in levels}
        )
        self.routes: torch.Tensor | int | None = None

    @property
    def first(self) -> AttributeMoE:
        return next(iter(self.blocks.values()))

    @property
    def routers(self) -> list[str]:
        return self.first.routers

    def route(self, attributes: Sequence[str | None]) -> torch.Tensor:
        """Router indices of images' attributes (unknown / unseen: "any")."""
        return torch.tensor([self.first.route(a) for a in attributes], dtype=torch.long)

    def after(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder level ``level``'s output through its dMoE block, if it has one."""
        key = str(level)
        if key not in self.blocks:
            return x
        return self.blocks[key](x, self.routes)


def routing_options(config) -> dict:
    """A run config's attribute-routing settings as model arguments ({} when off)."""
    if not getattr(config, "attribute_routing", False):
        return {}
    return {
        "attribute_values": [str(v) for v in getattr(config, "attribute_values", []) or []],
        "route_experts": int(getattr(config, "route_experts", 8)),
        "route_top_k": int(getattr(config, "route_top_k", 2)),
    }


def routing_of(model: nn.Module) -> Routing | None:
    """A model's :class:`Routing`, None when it was built without attribute routing."""
    r = getattr(model, "routing", None)
    return r if isinstance(r, Routing) else None


def set_routes(model: nn.Module, routes: torch.Tensor | int | None) -> None:
    """The routes of the next passes (see :class:`Routing`); no-op without routing."""
    r = routing_of(model)
    if r is not None:
        r.routes = routes


def _format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def assign_routes(
    attributes: Sequence[str | None],
    block: AttributeMoE,
    rng: np.random.Generator | None = None,
    any_fraction: float = 0.1,
) -> torch.Tensor:
    """Router indices of a batch's images; while training (``rng`` given) each image goes to
    "any" with probability ``any_fraction``, so that the "any" router learns too."""
    idx = [block.route(a) for a in attributes]
    if rng is not None and any_fraction > 0:
        hide = rng.random(len(idx)) < any_fraction
        idx = [len(block.values) if h else i for i, h in zip(idx, hide)]
    return torch.tensor(idx, dtype=torch.long)
