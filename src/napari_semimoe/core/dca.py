"""DCA (Divide, Conquer, Aggregate; CVPR 2026 poster) on 2-D H&E: the log-gap split of the
classes, label-split remapping, logit stitching and the network (one U-Net encoder, three
asymmetric decoders, DFAM). How it maps onto this product: ``docs/method.md``.

Only pure functions and modules here; the ``dca`` family (:mod:`.families.dca`) trains and
predicts with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import InputError
from .model import ConvBlock, UpStep, init_weights, upsampled_conv
from .routing import Routing
from .validate import width_problem

GROUPS = ("head", "medium", "tail")
#: Conv blocks per decoder stage (coarse -> fine) and dilation of each expert (spec §2).
DECODER_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "head": (2, 2, 1, 1),
    "medium": (3, 3, 2, 1),
    "tail": (4, 4, 3, 2),
}
DECODER_DILATION: dict[str, int] = {"head": 2, "medium": 1, "tail": 1}
#: How the aggregated path mixes the decoders' features: DFAM's per-pixel attention, or the
#: ablation's plain average.
FUSIONS = ("dfam", "average")
#: How the classes are split when the user gives no split: the poster's log-gap rule, or the
#: ablation's equal thirds by rank.
SPLIT_RULES = ("log-gap", "thirds")


# ----------------------------------------------------------------------------- divide


@dataclass(frozen=True)
class Split:
    """Head / medium / tail class ids, and the numbers they came from (shown to the user).

    ``shares[k - 1]`` = P_k, ``order`` = class ids by share (descending), ``gaps[j - 1]`` =
    G_j between ranks j and j + 1 of the classes with pixels; ``source``: log-gap or user."""

    head: tuple[int, ...]
    medium: tuple[int, ...]
    tail: tuple[int, ...]
    shares: tuple[float, ...] = ()
    order: tuple[int, ...] = ()
    gaps: tuple[float, ...] = ()
    source: str = "log-gap"
    counts: tuple[int, ...] = field(default=())

    def groups(self) -> list[tuple[str, tuple[int, ...]]]:
        """The non-empty groups in head, medium, tail order (one decoder each)."""
        return [(g, getattr(self, g)) for g in GROUPS if getattr(self, g)]

    def to_dict(self) -> dict:
        return {
            "head": list(self.head),
            "medium": list(self.medium),
            "tail": list(self.tail),
            "shares": list(self.shares),
            "order": list(self.order),
            "gaps": list(self.gaps),
            "counts": list(self.counts),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict, n_foreground: int) -> Split:
        """A stored or user-given split, checked: head, medium, tail partition 1..C, head
        and tail non-empty (medium may be empty, as for C = 2)."""
        if not isinstance(d, dict):
            raise InputError(f"a DCA split must be a mapping head/medium/tail, got {d!r}")
        groups = {}
        for g in GROUPS:
            ids = d.get(g, [])
            if not isinstance(ids, (list, tuple)) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in ids
            ):
                raise InputError(f"DCA split: {g} must be a list of class ids, got {ids!r}")
            groups[g] = tuple(int(c) for c in ids)
        every = sorted(c for ids in groups.values() for c in ids)
        if every != list(range(1, n_foreground + 1)):
            raise InputError(
                f"DCA split: head, medium and tail must hold each class 1..{n_foreground} "
                f"exactly once, got {every}"
            )
        if not groups["head"] or not groups["tail"]:
            raise InputError("DCA split: head and tail need at least one class each")
        return cls(
            groups["head"],
            groups["medium"],
            groups["tail"],
            tuple(float(x) for x in d.get("shares", ())),
            tuple(int(x) for x in d.get("order", ())),
            tuple(float(x) for x in d.get("gaps", ())),
            str(d.get("source", "user")),
            tuple(int(x) for x in d.get("counts", ())),
        )

    def describe(self) -> str:
        return " / ".join(f"{g} {list(getattr(self, g))}" for g in GROUPS)


def log_gap_split(counts: Sequence[int]) -> Split:
    """The poster's parameter-free split of classes 1..C from their labeled pixels V_k.

    P_k = V_k / sum V; classes ranked by P descending (ties: the smaller id first); G_j =
    log P_(j) - log P_(j+1); k_HM = argmax G over 1..n-1, k_MT = argmax over k_HM+1..n-1
    (argmax ties: the first). Edge cases the poster leaves open: C = 2 gives head + tail;
    a class with no labeled pixel goes to the tail (it has no log share); when k_HM is the
    last gap there is no medium. C < 2 or no labeled foreground pixel is refused."""
    v = np.asarray(counts, np.int64)
    c = v.size
    if c < 2:
        raise InputError(f"DCA needs at least 2 foreground classes, got {c}")
    total = int(v.sum())
    if total == 0:
        raise InputError("DCA split: the labeled masks hold no foreground pixel")
    shares = v / total
    ids = np.arange(1, c + 1)
    order = sorted(ids.tolist(), key=lambda k: (-shares[k - 1], k))
    ranked = [k for k in order if v[k - 1] > 0]
    empty = tuple(k for k in order if v[k - 1] == 0)
    n = len(ranked)
    p = np.array([shares[k - 1] for k in ranked])
    gaps = np.log(p[:-1]) - np.log(p[1:]) if n > 1 else np.empty(0)
    if n == 1:
        head, medium, tail = tuple(ranked), (), ()
    else:
        k_hm = int(np.argmax(gaps)) + 1  # ranks 1..k_hm are head
        # k_MT over j = k_hm+1 .. n-1; none left: no medium
        k_mt = k_hm if k_hm >= n - 1 else k_hm + 1 + int(np.argmax(gaps[k_hm:]))
        head = tuple(ranked[:k_hm])
        medium = tuple(ranked[k_hm:k_mt])
        tail = tuple(ranked[k_mt:])
    tail = tail + empty  # never empty: n >= 2 leaves rank n, n == 1 leaves an empty class
    return Split(
        head,
        medium,
        tail,
        tuple(float(s) for s in shares),
        tuple(order),
        tuple(float(g) for g in gaps),
        "log-gap",
        tuple(int(x) for x in v),
    )


def thirds_split(counts: Sequence[int]) -> Split:
    """The ablation's fixed rule (poster Tab. 4): classes ranked by labeled share as for the
    log-gap split (a class with no labeled pixel last), cut into three near-equal groups by
    rank (``numpy.array_split``: head and medium take the extra classes); C = 2 gives head +
    tail."""
    ref = log_gap_split(counts)
    ranked = [k for k in ref.order if ref.counts[k - 1] > 0]
    ranked += [k for k in ref.order if ref.counts[k - 1] == 0]
    parts = [tuple(int(k) for k in a) for a in np.array_split(np.array(ranked), 3)]
    head, medium, tail = parts
    if not tail:  # C = 2: no medium decoder
        medium, tail = (), medium
    return dataclasses.replace(ref, head=head, medium=medium, tail=tail, source="thirds")


def parse_split_text(text: str, n_foreground: int) -> Split:
    """``"1,2/3/4,5"`` (head/medium/tail class ids; medium may be empty) -> a checked split."""
    parts = text.split("/")
    if len(parts) != 3:
        raise InputError(f"a DCA split is head/medium/tail class ids, e.g. 1,2/3/4; got {text!r}")
    try:
        groups = [[int(t) for t in p.split(",") if t.strip()] for p in parts]
    except ValueError:
        raise InputError(f"a DCA split holds class ids (integers), got {text!r}") from None
    return Split.from_dict(dict(zip(GROUPS, groups), source="user"), n_foreground)


# ----------------------------------------------------------------------------- conquer


def split_labels(y: torch.Tensor, ids: Sequence[int], n_foreground: int) -> torch.Tensor:
    """Label split: class ``ids[i]`` -> i + 1, every other class -> 0 (background); ignored
    pixels (-1) stay ignored."""
    lut = torch.zeros(n_foreground + 2, dtype=torch.long, device=y.device)  # index + 1
    lut[0] = -1
    for i, c in enumerate(ids):
        lut[int(c) + 1] = i + 1
    return lut[y.long() + 1]


def stitch_logits(
    logits: Sequence[torch.Tensor], groups: Sequence[Sequence[int]], n_foreground: int
) -> torch.Tensor:
    """Logit stitching: foreground class c takes its logit from the one decoder responsible
    for it, the background logit is the mean of the decoders' background logits.
    ``logits[g]``: (N, 1 + |group g|, H, W) -> (N, C + 1, H, W)."""
    first = logits[0]
    out = first.new_empty((first.shape[0], n_foreground + 1, *first.shape[2:]))
    out[:, 0] = torch.stack([lg[:, 0] for lg in logits]).mean(0)
    for lg, ids in zip(logits, groups):
        for i, c in enumerate(ids):
            out[:, int(c)] = lg[:, i + 1]
    return out


def _conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=True),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DecoderStage(UpStep):
    """Up-step (nearest x2 -> Conv3x3 -> BN -> ReLU), concat skip, ``blocks`` x
    [Conv3x3 (dilated) -> BN -> ReLU]; an :class:`UpStep`, so inference precomputes its
    phase kernels as for Semi-MoE's."""

    def __init__(self, cin: int, cout: int, blocks: int, dilation: int) -> None:
        super().__init__(cin, cout)
        layers = _conv_bn_relu(2 * cout, cout, dilation)
        for _ in range(blocks - 1):
            layers += _conv_bn_relu(cout, cout, dilation)
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.literal:
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        else:
            x = self.up[2](self.up[1](upsampled_conv(x, self.up[0])))
        return self.block(torch.cat([skip, x], dim=1))


class ExpertDecoder(nn.Module):
    """One expert decoder: 4 stages coarse -> fine, a 1x1 head to background + its classes."""

    def __init__(self, width: int, blocks: Sequence[int], dilation: int, n_out: int) -> None:
        super().__init__()
        w = [width * 2**i for i in range(5)]
        self.stages = nn.ModuleList(
            [DecoderStage(w[4 - i], w[3 - i], blocks[i], dilation) for i in range(4)]
        )
        self.head = nn.Conv2d(w[0], n_out, 1)


class DFAM(nn.Module):
    """Dynamic feature aggregation at one stage (``channels`` per expert, ``n`` experts).

    F_con = concat of each expert's 1x1 projection (to ``channels // 2``: the poster does not
    give the width); A = softmax over the experts of 1x1(ReLU(3x3(F_con))), per pixel;
    returns (sum_x A_x F_x + F_up, A). ``fusion="average"`` is the ablation (poster Tab. 5):
    A = 1/n everywhere, no parameters."""

    def __init__(self, channels: int, n: int, fusion: str = "dfam") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"DCA fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion, self.n = fusion, n
        if fusion == "average":
            return
        half = max(1, channels // 2)
        self.proj = nn.ModuleList([nn.Conv2d(channels, half, 1) for _ in range(n)])
        self.mix = nn.Conv2d(n * half, half, 3, padding=1)
        self.attn = nn.Conv2d(half, n, 1)

    def forward(
        self, feats: Sequence[torch.Tensor], up: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fusion == "average":
            a = feats[0].new_full((feats[0].shape[0], self.n, *feats[0].shape[2:]), 1 / self.n)
            return up + sum(feats) / self.n, a
        con = torch.cat([p(f) for p, f in zip(self.proj, feats)], dim=1)
        a = torch.softmax(self.attn(F.relu(self.mix(con))).float(), dim=1).to(feats[0].dtype)
        out = up
        for i, f in enumerate(feats):
            out = out + a[:, i : i + 1] * f
        return out, a


@dataclass
class DCAOutput:
    """One pass: each decoder's logits (by group), the aggregated logits p_A (C + 1), the
    last stage's DFAM attention (N, n_decoders, H, W) and the pooled features."""

    decoders: dict[str, torch.Tensor]
    aggregated: torch.Tensor
    attention: torch.Tensor
    pooled: torch.Tensor


class DCANet(nn.Module):
    """One U-Net encoder (width b), one asymmetric decoder per non-empty group, DFAM at each
    decoder stage on an aggregated path that starts from the bottleneck."""

    def __init__(
        self,
        width: int,
        split: Split,
        n_foreground: int,
        in_channels: int = 3,
        fusion: str = "dfam",
        attribute_values: list[str] | None = None,
        route_experts: int = 8,
        route_top_k: int = 2,
    ):
        super().__init__()
        bad = width_problem(width)
        if bad:
            raise ValueError(f"model width {bad}")
        self.width, self.n_foreground = width, n_foreground
        self.groups = split.groups()
        w = [width * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, w[0])] + [ConvBlock(w[i - 1], w[i]) for i in range(1, 5)]
        )
        self.decoders = nn.ModuleDict(
            {
                g: ExpertDecoder(width, DECODER_BLOCKS[g], DECODER_DILATION[g], 1 + len(ids))
                for g, ids in self.groups
            }
        )
        n = len(self.groups)
        self.agg_up = nn.ModuleList(
            [nn.Sequential(*_conv_bn_relu(w[4 - i], w[3 - i])) for i in range(4)]
        )
        self.dfam = nn.ModuleList([DFAM(w[3 - i], n, fusion) for i in range(4)])
        self.head = nn.Conv2d(w[0], n_foreground + 1, 1)
        self.literal = False
        init_weights(self)
        #: dMoE blocks in the encoder (``--attribute-routing``), made after the init as in
        #: Semi-MoE.
        self.routing: Routing | None = None
        if attribute_values is not None:
            self.routing = Routing(width, attribute_values, route_experts, route_top_k)

    @property
    def literal(self) -> bool:
        return self._literal

    @literal.setter
    def literal(self, value: bool) -> None:
        self._literal = bool(value)
        for m in self.modules():
            if isinstance(m, UpStep):
                m.literal = bool(value)

    def forward(self, x: torch.Tensor) -> DCAOutput:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            if self.routing is not None:
                x = self.routing.after(i, x)
            skips.append(x)
        bottom = skips[-1]
        feats = {g: bottom for g, _ in self.groups}
        agg = bottom
        attention = None
        for s in range(4):
            skip = skips[3 - s]
            for g, _ in self.groups:
                feats[g] = self.decoders[g].stages[s](feats[g], skip)
            up = self.agg_up[s]
            if self._literal:
                agg_up = up(F.interpolate(agg, scale_factor=2.0, mode="nearest"))
            else:
                agg_up = up[2](up[1](upsampled_conv(agg, up[0])))
            agg, attention = self.dfam[s]([feats[g] for g, _ in self.groups], agg_up)
        decoders = {g: self.decoders[g].head(feats[g]) for g, _ in self.groups}
        return DCAOutput(decoders, self.head(agg), attention, agg.float().mean((2, 3)))


def decoder_parameters(width: int, blocks: Sequence[int], n_out: int) -> int:
    """Parameters of an :class:`ExpertDecoder` by formula (3x3 convs with bias, BN weight +
    bias per channel): the up-convolution, the first block on skip + up, the other blocks,
    and the 1x1 head."""
    w = [width * 2**i for i in range(5)]
    total = 0
    for i in range(4):
        cin, cout = w[4 - i], w[3 - i]
        total += 9 * cin * cout + 3 * cout  # up conv + BN
        total += 9 * 2 * cout * cout + 3 * cout  # first block
        total += (blocks[i] - 1) * (9 * cout * cout + 3 * cout)
    return total + w[0] * n_out + n_out


def count_dca_parameters(model: DCANet) -> dict[str, int]:
    """Trainable parameters per part (encoder, each decoder, aggregation) and in total."""
    counts = {"encoder": sum(p.numel() for p in model.encoder.parameters())}
    for g, dec in model.decoders.items():
        counts[f"decoder_{g}"] = sum(p.numel() for p in dec.parameters())
    agg = [model.agg_up, model.dfam, model.head]
    counts["aggregation"] = sum(p.numel() for m in agg for p in m.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
