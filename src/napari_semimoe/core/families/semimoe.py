"""The ``semimoe`` family: three heterogeneous U-Net experts (segmentation, SDF, boundary),
the multi-gate pseudo-labelling module and the adaptive multi-objective loss (the network
itself is :class:`~napari_semimoe.core.model.SemiMoE`; see ``docs/method.md``).

Its tasks are named ``seg``, ``sdf`` and ``bnd`` (logits, targets, losses, log entries and
checkpoint tensors) and write the maps ``prob``, ``sdf`` and ``boundary`` (and the experts'
``expert_*`` maps on request): file names of old runs' outputs are unchanged.
The training passes (pooled, per-half side by side, reference) live here because they rely
on the model's split into experts + gates. Over 500 lines because it is one family whole:
its tasks, binary and multi-class targets and losses, the optional balance term, those
passes and inference, which the trainer and predictor reach only through the registry.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import autocast
from ..instances import label_instances
from ..losses import (
    TASK_FACTORS,
    adaptive_loss,
    boundary_dice_loss,
    pseudo_labels,
    sdf_loss,
    seg_dice_loss,
)
from ..model import TASKS, SemiMoE, count_parameters, run_experts
from ..routing import balance_term, routing_options
from ..targets import boundary_band, class_target, seg_target, signed_distance
from .base import (
    Family,
    Inference,
    Losses,
    MapStyle,
    Task,
    class_probabilities,
    softmax_foreground,
    tanh_map,
    union_foreground,
)


def _seg_target(mask: np.ndarray, config: Any) -> np.ndarray:
    return seg_target(mask)


def _sdf_target(mask: np.ndarray, config: Any) -> np.ndarray:
    return signed_distance(mask)


def _bnd_target(mask: np.ndarray, config: Any) -> np.ndarray:
    return boundary_band(mask, per_instance=bool(getattr(config, "per_instance_boundary", False)))


def _class_seg_target(mask: np.ndarray, config: Any) -> np.ndarray:
    return class_target(mask)


def _class_bnd_target(mask: np.ndarray, config: Any) -> np.ndarray:
    """The band outside the union foreground and between touching regions of different
    classes (class ids taken as the regions whose contacts are boundary)."""
    return boundary_band(mask, per_instance=True)


def class_style(name: str, colour: str) -> MapStyle:
    """How one class's probability map looks: clear to the class's colour."""
    return MapStyle(
        "semimoe-prob",
        (0.0, 1.0),
        "translucent",
        low=f"not {name}",
        high=name,
        help=f"How sure the model is that each pixel is {name} (class probability, {colour}).",
    )


def multiclass_seg_task(table: Any, loss: Callable = seg_dice_loss) -> Task:
    """The segmentation task over C + 1 classes; its map is the union-foreground
    probability (``prob``: what the mask and the objects are made of, as in binary)."""
    return dataclasses.replace(
        SEMIMOE_TASKS[0],
        channels=table.n_foreground + 1,
        target=_class_seg_target,
        loss=loss,
        activate=union_foreground,
    )


def class_maps_of(table: Any) -> dict[str, MapStyle]:
    """``prob_<k>`` of each foreground class and its style."""
    return {
        f"prob_{k}": class_style(table.names[k], table.colours[k])
        for k in range(1, table.n_foreground + 1)
    }


#: How the maps look and what they mean (plugin/layer_styles.py draws the "semimoe-*" ramps:
#: clear where the map says "nothing"; the SDF: blue outside, white edge, red inside).
PROB_STYLE = MapStyle(
    "semimoe-prob",
    (0.0, 1.0),
    "translucent",
    low="not gland",
    mid="undecided",
    high="gland",
    help="How sure the model is that each pixel is gland (gland probability): clear = "
    "surely not, pale blue = undecided, deep blue = surely gland.",
)
SDF_STYLE = MapStyle(
    "semimoe-sdf",
    (-1.0, 1.0),
    "translucent",
    0.8,
    low="outside glands",
    mid="gland edge",
    high="deep inside",
    help="Distance to the nearest gland edge (signed distance field, SDF): red inside a "
    "gland, white on its edge, blue outside; the model uses it to split touching glands.",
)
BOUNDARY_STYLE = MapStyle(
    "semimoe-boundary",
    (0.0, 1.0),
    "translucent",
    low="no edge",
    mid="",
    high="gland edge",
    help="Where the model sees the outer edge of a gland (boundary probability): green = "
    "surely an edge; it keeps touching glands apart.",
)

SEMIMOE_TASKS: tuple[Task, ...] = (
    Task(
        "seg",
        2,
        _seg_target,
        seg_dice_loss,
        softmax_foreground,
        "prob",
        style=PROB_STYLE,
        title="gland probability",
        expert_title="segmentation",
    ),
    Task(
        "sdf",
        1,
        _sdf_target,
        sdf_loss,
        tanh_map,
        "sdf",
        collate=lambda a: a[:, None],
        fill=-1.0,
        style=SDF_STYLE,
        title="distance to gland edge",
        expert_title="distance map",
    ),
    Task(
        "bnd",
        2,
        _bnd_target,
        boundary_dice_loss,
        softmax_foreground,
        "boundary",
        style=BOUNDARY_STYLE,
        title="gland edges",
        expert_title="boundary",
    ),
)
assert tuple(t.name for t in SEMIMOE_TASKS) == TASKS
assert set(TASK_FACTORS) == set(TASKS)

EXPERT_PREFIX = "expert_"


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The terms' sum in their order (no leading 0: the same graph as writing it out)."""
    values = list(terms.values())
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


class SemiMoEFamily(Family):
    name = "semimoe"
    label = "Semi-MoE"
    tasks = SEMIMOE_TASKS
    width_tensor = "model.experts.seg.enc.0.0.weight"
    gate_shape = (len(TASKS), len(TASKS))  # task x expert

    def build(self, config: Any) -> SemiMoE:
        seg = 2 if self.classes is None else self.classes.n_foreground + 1
        return SemiMoE(int(config.width), seg_channels=seg, **routing_options(config))

    def configure(self, config: Any) -> SemiMoEFamily:
        """Multi-class (spec §1): seg over C + 1 classes, SDF of the union foreground, the
        boundary band also between touching classes; binary tables give this family."""
        from ..classes import table_of

        table = table_of(config)
        if table is None:
            return self
        fam = copy.copy(self)
        fam.classes = table
        bnd = dataclasses.replace(SEMIMOE_TASKS[2], target=_class_bnd_target)
        fam.tasks = (multiclass_seg_task(table), SEMIMOE_TASKS[1], bnd)
        return fam

    def parameter_groups(self, model: nn.Module):
        return model.network_parameters(), [model.loss_s]

    def loss_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {t: model.loss_s[i] for i, t in enumerate(TASKS)}

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        return count_parameters(model)

    def describe(self, width: int) -> str:
        return f"Semi-MoE b={width}"

    # ------------------------------------------------------------------ training

    def setup(self, trainer: Any) -> None:
        experts = trainer.model.run_experts
        trainer.state["experts"] = (
            torch.compile(experts, dynamic=False) if trainer.want_compile() else experts
        )
        trainer.state["halves"] = None

    def pseudo_labels(self, logits):
        return pseudo_labels(logits)

    def supervised(self, expert, gated, y):
        return {
            t.name: t.loss(expert[t.name], y[t.name]) + t.loss(gated[t.name], y[t.name])
            for t in self.tasks
        }

    def unsupervised(self, expert, gated_u, confidence: float = 0.0):
        pl = pseudo_labels(gated_u, confidence)
        return {t.name: t.loss(expert[t.name], pl[t.name]) for t in self.tasks}

    def _labeller(self, trainer: Any, xu, gated_u):
        """The gated outputs the pseudo-labels come from: the student's own (the paper), or
        the mean teacher's on the same unlabeled tiles (``ema_teacher``)."""
        teacher = getattr(trainer, "teacher", None)
        if teacher is None:
            return gated_u
        if trainer.channels_last:
            xu = xu.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(trainer.device, trainer.amp):
            return {t: v.detach() for t, v in teacher(xu).gated.items()}

    def loss_terms(self, model, sup, uns, lam, config, extras=None):
        """Eq. 11 on the supervised losses, plus λ(t) x Eq. 11 on the unsupervised ones.

        ``extras["gates"]``: the gate weights per task (B, 3) of the pass's tiles (pooled:
        labeled then unlabeled; per-half: labeled), for terms such as load balancing; the
        reference pass asks once for its unsupervised and once for its supervised half."""
        terms = {}
        if sup:
            terms["supervised"] = adaptive_loss(sup, model.loss_s, config.gamma)
        if uns:
            terms["unsupervised"] = lam * adaptive_loss(uns, model.loss_s, config.gamma)
        beta = getattr(config, "balance", None) or 0.0  # off by default for Semi-MoE
        if beta > 0 and sup and extras and extras.get("gates"):
            terms["balance"] = beta * sum(balance_term(g) for g in extras["gates"].values())
        return terms

    def fast_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """Channels-last, autocast; per-half passes run side by side on a multi-core CPU."""
        cfg, m = trainer.config, trainer.model
        if xu is None or cfg.batch_norm == "pooled":
            return self.train_pass(trainer, xl, y, xu, lam)
        if trainer.channels_last:
            xl = xl.contiguous(memory_format=torch.channels_last)
            xu = xu.contiguous(memory_format=torch.channels_last)
        halves = self._halves(trainer)
        (feats_l, exp_l), (feats_u, exp_u) = halves.forward(xl, xu)
        with autocast(trainer.device, trainer.amp):
            gated_l, gates_l = m.mgp(feats_l)
            # Pseudo-labels are detached: the gates get no gradient from the unsupervised term.
            with torch.no_grad():
                gated_u, _ = m.mgp(feats_u)
        sup = self.supervised(exp_l, gated_l, y)
        gated_u = self._labeller(trainer, xu, gated_u)
        uns = self.unsupervised(exp_u, gated_u, cfg.pseudo_confidence)
        total = _total(self.loss_terms(m, sup, uns, lam, cfg, {"gates": gates_l}))
        halves.backward(total)
        return total.detach(), sup, uns

    def train_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """All tiles through each expert in one pass (batch norm over labeled + unlabeled)."""
        cfg, m = trainer.config, trainer.model
        nl = xl.shape[0]
        x = xl if xu is None else torch.cat([xl, xu])
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(trainer.device, trainer.amp):
            feats, expert = trainer.state["experts"](x)
            # The gates run once on all tiles (per-image, so the halves do not mix); slicing
            # the small gated logits instead of the b-channel features keeps the backward in
            # one memory layout. Pseudo-labels are detached: the gates get no gradient from
            # the unsupervised term.
            gated, gates = m.mgp(feats)
            gated_l = {t: v[:nl] for t, v in gated.items()}
            gated_u = {t: v[nl:].detach() for t, v in gated.items()}
        sup = self.supervised({t: v[:nl] for t, v in expert.items()}, gated_l, y)
        uns: dict[str, torch.Tensor] = {}
        if xu is not None:
            gated_u = self._labeller(trainer, xu, gated_u)
            uns = self.unsupervised(
                {t: v[nl:] for t, v in expert.items()}, gated_u, cfg.pseudo_confidence
            )
        total = _total(self.loss_terms(m, sup, uns, lam, cfg, {"gates": gates}))
        total.backward()
        return total.detach(), sup, uns

    def reference_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """Upstream order: unsupervised forward/backward, then supervised; fp32 unless asked."""
        cfg, m = trainer.config, trainer.model
        total = torch.zeros((), device=trainer.device)
        uns: dict[str, torch.Tensor] = {}
        if xu is not None:
            with autocast(trainer.device, trainer.amp):
                out = m(xu)
            uns = self.unsupervised(
                out.expert, self._labeller(trainer, xu, out.gated), cfg.pseudo_confidence
            )
            lu = _total(self.loss_terms(m, {}, uns, lam, cfg, {"gates": out.gates}))
            lu.backward()
            total = total + lu.detach()
        with autocast(trainer.device, trainer.amp):
            out = m(xl)
        sup = self.supervised(out.expert, out.gated, y)
        ls = _total(self.loss_terms(m, sup, {}, lam, cfg, {"gates": out.gates}))
        ls.backward()
        return total + ls.detach(), sup, uns

    def halves_side_by_side(self, trainer: Any) -> bool:
        runner = trainer.state.get("halves")
        return bool(runner and runner.parallel)

    def _halves(self, trainer: Any) -> _Halves:
        if trainer.state.get("halves") is None:
            threads = torch.get_num_threads()
            experts = trainer.state["experts"]
            parallel = (
                trainer.parallel_halves
                and trainer.device.type == "cpu"
                and experts == trainer.model.run_experts  # not compiled
                and threads >= 2
            )
            trainer.state["halves"] = _Halves(
                trainer.model, experts, trainer.device, trainer.amp, threads if parallel else 1
            )
        return trainer.state["halves"]

    # ------------------------------------------------------------------ prediction

    def output_maps(self, experts: bool = False) -> tuple[str, ...]:
        names = tuple(t.output for t in self.tasks)
        if experts:
            return tuple(EXPERT_PREFIX + n for n in names)
        return names + tuple(self._class_maps())

    def _class_maps(self) -> dict[str, MapStyle]:
        return {} if self.classes is None else class_maps_of(self.classes)

    def fills(self) -> dict[str, float]:
        base = super().fills()
        return (
            base
            | {EXPERT_PREFIX + k: v for k, v in base.items()}
            | {k: 0.0 for k in self._class_maps()}
        )

    def styles(self) -> dict[str, MapStyle]:
        base = super().styles()
        return base | {EXPERT_PREFIX + k: v for k, v in base.items()} | self._class_maps()

    def layer_names(self) -> dict[str, str]:
        """In words a pathologist reads (the technical terms are in the legend's help line)."""
        names = super().layer_names() | {
            "instances": "Semi-MoE predicted glands",
            "gates": "Semi-MoE expert weights",
        }
        names |= {EXPERT_PREFIX + t.output: f"Expert: {t.expert_title}" for t in self.tasks}
        if self.classes is not None:
            names |= {f"prob_{k}": f"Semi-MoE {self.classes.names[k]} probability"
                      for k in range(1, self.classes.n_foreground + 1)}  # fmt: skip
            names["classes"] = "Semi-MoE class map"
        return names

    def infer(self, model, x, experts: bool, embeddings: bool) -> Inference:
        out = model(x)
        maps = {t.output: t.activate(out.gated[t.name]) for t in self.tasks}
        if self.classes is not None:
            maps |= class_probabilities(out.gated["seg"])
        if experts:
            for t in self.tasks:
                maps[EXPERT_PREFIX + t.output] = t.activate(out.expert[t.name])
        gates = torch.stack([out.gates[t].float() for t in TASKS], dim=1)
        emb = None
        if embeddings:
            emb = torch.cat([f.float().mean((2, 3)) for f in out.features], dim=1)
        return Inference(maps, gates, emb)

    def instances(self, maps: dict[str, np.ndarray], min_size: int) -> np.ndarray:
        """Mask components split where the SDF has several peaks, away from boundary."""
        return label_instances(maps["mask"], maps["sdf"], maps["boundary"], min_size=min_size)


def _fix_thread_count(n: int) -> None:
    torch.set_num_threads(n)
    torch.get_num_threads()  # locks this thread's OpenMP team size in


class _Halves:
    """The experts' passes over the labeled and the unlabeled half of an iteration.

    As upstream, each half is its own pass, so batch norm normalises with that half's
    statistics, and the running statistics are updated by the unlabeled half, then by the
    labeled one. With ``threads >= 2`` (CPU) the halves run at the same time, the unlabeled
    one on a helper thread with its own copy of the batch-norm buffers (parameters shared),
    each with half of the threads: this network's convolutions scale poorly over intra-op
    threads (1.26x from 1 to 2 threads) while two independent passes scale ~1.7x (measured,
    ``docs/benchmarks.md``).
    The helper's buffer updates are then merged exactly as if it had run first. Forward
    returns detached leaves; ``backward`` runs the loss's (cheap) backward to them, then both
    halves' backward passes side by side. Each shared parameter gets one gradient from each
    half, and a sum of two is the same in either order, so runs stay reproducible.
    """

    def __init__(
        self,
        model: SemiMoE,
        experts: Callable[[torch.Tensor], Any],
        device: torch.device,
        amp: torch.dtype | None,
        threads: int,
    ) -> None:
        self.model, self.experts, self.device, self.amp = model, experts, device, amp
        self.threads = threads
        bns = [m for m in model.experts.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        momenta = {m.momentum for m in bns}
        self.parallel = threads >= 2 and len(momenta) == 1 and None not in momenta
        if not self.parallel:
            return
        self.momentum = float(momenta.pop())
        # Parameters map to themselves, so only modules and buffers are copied.
        self.shadow = copy.deepcopy(model.experts, memo={id(p): p for p in model.parameters()})
        sbns = [m for m in self.shadow.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.bufs = [b for m in bns for b in (m.running_mean, m.running_var)]
        self.shadow_bufs = [b for m in sbns for b in (m.running_mean, m.running_var)]
        self.counters = [m.num_batches_tracked for m in bns]
        self.own = max(1, threads // 2)
        # A plain function as initializer: a bound method would keep this object (and the
        # model) alive for as long as the thread lives.
        self.pool = ThreadPoolExecutor(
            1,
            thread_name_prefix="semimoe-half",
            initializer=_fix_thread_count,
            initargs=(threads - self.own,),
        )
        self.pool.submit(lambda: None).result()  # the helper's thread count is now fixed
        torch.set_num_threads(threads)
        self._pending: tuple[list[torch.Tensor], ...] | None = None
        self.start: list[torch.Tensor] = []  # the buffers before this iteration's updates

    def _side_by_side(self, main: Callable[[], Any], helper: Callable[[], Any]):
        fut = self.pool.submit(helper)
        torch.set_num_threads(self.own)
        try:
            a = main()
        finally:
            torch.set_num_threads(self.threads)
        return a, fut.result()

    def _run(self, experts: Callable[[torch.Tensor], Any], x: torch.Tensor):
        with autocast(self.device, self.amp):  # autocast is per thread
            return experts(x)

    def forward(self, xl: torch.Tensor, xu: torch.Tensor):
        """((feats_l, logits_l), (feats_u, logits_u)) of the experts."""
        if not self.parallel:
            out_u = self._run(self.experts, xu)  # upstream's order: unlabeled first
            return self._run(self.experts, xl), out_u
        torch._foreach_copy_(self.shadow_bufs, self.bufs)
        self.start = [b.clone() for b in self.bufs]
        self.shadow.train(self.model.training)
        out_l, out_u = self._side_by_side(
            lambda: self._run(self.experts, xl),
            lambda: self._run(lambda x: run_experts(self.shadow, x), xu),
        )
        leaves = []
        for feats, logits in (out_l, out_u):
            lf = [f.detach().requires_grad_() for f in feats]
            lp = {t: v.detach().requires_grad_() for t, v in logits.items()}
            leaves.append((lf, lp))
        self._pending = (
            [*out_l[0], *out_l[1].values()],
            [*out_u[0], *out_u[1].values()],
            [*leaves[0][0], *leaves[0][1].values()],
            [*leaves[1][0], *leaves[1][1].values()],
        )
        return leaves[0], leaves[1]

    def backward(self, total: torch.Tensor) -> None:
        total.backward()
        if not self.parallel:
            return
        outs_l, outs_u, leaves_l, leaves_u = self._pending
        self._pending = None

        def back(outs: list[torch.Tensor], leaves: list[torch.Tensor]) -> None:
            pairs = [(o, v.grad) for o, v in zip(outs, leaves) if v.grad is not None]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])

        self._side_by_side(lambda: back(outs_l, leaves_l), lambda: back(outs_u, leaves_u))
        # Merged after the backward, which reads the buffers' versions. Both updates in
        # sequence = the labeled-only update + (1 - momentum) x the unlabeled change.
        torch._foreach_sub_(self.shadow_bufs, self.start)
        torch._foreach_add_(self.bufs, self.shadow_bufs, alpha=1.0 - self.momentum)
        torch._foreach_add_(self.counters, 1)
