"""What a model family is: its tasks (the one task vocabulary) and the hooks the trainer,
the predictor, the checkpoint loader and the viewer ask it for.

A task is named once (``Task.name``: the key of its logits, targets, losses, loss-log
entries and checkpoint tensors) and says what it writes (``Task.output``: the map's file and
layer name) and how that map looks. Nothing outside a family names seg / sdf / bnd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class MapStyle:
    """How an output map is shown in napari (image layers) and what its colours mean.

    ``colormap`` is a napari name or one of the see-through ramps of
    :mod:`napari_semimoe.plugin.layer_styles` (``"semimoe-prob"``, ``"semimoe-sdf"``, ...).
    ``low`` / ``mid`` / ``high``: the words at the ends (and middle) of the map's legend;
    ``help``: one line saying what the map shows, for someone who never trained a model.
    Translucent by default: additive blending tints the whole slide."""

    colormap: str = "viridis"
    contrast_limits: tuple[float, float] = (0.0, 1.0)
    blending: str = "translucent"
    opacity: float | None = None
    low: str = ""
    mid: str = ""
    high: str = ""
    help: str = ""

    def to_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"colormap": self.colormap, "contrast_limits": self.contrast_limits}
        if self.opacity is not None:
            kw["opacity"] = self.opacity
        kw["blending"] = self.blending
        return kw


@dataclass(frozen=True)
class Task:
    """One output of a model: its head, its training target and loss, and its map.

    ``target(mask, config)`` builds the per-tile target from an (augmented) mask; ``collate``
    turns the stacked numpy targets into what ``loss`` expects (dtype, channel axis);
    ``activate`` turns (N, C, H, W) logits into the (N, H, W) float map written as
    ``output``; ``fill`` is that map's value where no tile was predicted.
    """

    name: str
    channels: int
    target: Callable[[np.ndarray, Any], np.ndarray]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    activate: Callable[[torch.Tensor], torch.Tensor]
    output: str
    collate: Callable[[np.ndarray], np.ndarray] = lambda a: a.astype(np.int64)
    fill: float = 0.0
    style: MapStyle = field(default_factory=MapStyle)
    #: Words for the map in layer names (default: ``output``), and for the task's own
    #: expert's map where the family has one per task.
    title: str = ""
    expert_title: str = ""


def _sum(values) -> torch.Tensor:
    values = list(values)
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def union_foreground(logits: torch.Tensor) -> torch.Tensor:
    """Probability of any foreground class of (N, C + 1, H, W) logits: 1 - p(background)."""
    return 1.0 - torch.softmax(logits.float(), 1)[:, 0]


def class_probabilities(logits: torch.Tensor, prefix: str = "prob_") -> dict[str, torch.Tensor]:
    """Each foreground class's probability map, ``prob_1`` .. ``prob_C``."""
    p = torch.softmax(logits.float(), 1)
    return {f"{prefix}{k}": p[:, k] for k in range(1, p.shape[1])}


def class_map(maps: dict[str, np.ndarray], n_foreground: int, prefix: str = "prob_") -> np.ndarray:
    """The class map (uint8 ids 0..C): argmax of background (1 - union) and each class's
    probability, from the merged maps (so it follows the blended tiles)."""
    stack = [1.0 - np.asarray(maps["prob"], np.float32)]
    stack += [np.asarray(maps[f"{prefix}{k}"], np.float32) for k in range(1, n_foreground + 1)]
    return np.argmax(np.stack(stack), axis=0).astype(np.uint8)


def softmax_foreground(logits: torch.Tensor) -> torch.Tensor:
    """Probability of class 1 of 2-class logits, (N, 2, H, W) -> (N, H, W)."""
    return torch.softmax(logits.float(), 1)[:, 1]


def tanh_map(logits: torch.Tensor) -> torch.Tensor:
    """tanh of a 1-channel regression head, (N, 1, H, W) -> (N, H, W)."""
    return torch.tanh(logits.float())[:, 0]


@dataclass
class Inference:
    """What one forward pass gives the predictor: activated maps (N, H, W) by output name,
    per-tile gate weights (N, *gate_shape) and the pooled features that describe a tile."""

    maps: dict[str, torch.Tensor]
    gates: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


Losses = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


class Family:
    """A model family: a builder and its tasks, plus the hooks that differ between families.

    Subclass it, set ``name`` and ``tasks``, implement :meth:`build` (and override what your
    model does differently), then :func:`~napari_semimoe.core.families.register_family` an
    instance. The training hooks get the :class:`~napari_semimoe.core.train.Trainer` as
    ``trainer`` (typed Any: the trainer imports the families, never the other way round). The
    defaults fit a plain network whose ``forward`` returns one logits tensor
    per task (a dict, or a tensor when there is one task): one pass over all tiles, the sum
    of :meth:`loss_terms`, maps by each task's ``activate``.
    """

    name: str = ""
    #: The family in words, in front of its layers' names (default: ``name``).
    label: str = ""
    tasks: tuple[Task, ...] = ()
    #: Map thresholded into the mask (``mask``, ``instances`` are made from it).
    mask_from: str = "prob"
    #: Checkpoint tensor (``model.`` + a state-dict key) of the first 3x3 convolution on the
    #: RGB input, shape (width, 3, 3, 3): checked against the metadata before building.
    width_tensor: str = ""
    #: Shape of one tile's gate weights (per-tile gates files); (0,) when the model has none.
    gate_shape: tuple[int, ...] = (0,)
    #: The class table of a multi-class instance (:meth:`configure`); None = binary.
    classes: Any = None
    #: Foreground classes it needs at least (1: it trains binary tasks too); the dock offers
    #: a family only for projects it can train.
    min_classes: int = 1
    #: The SGD learning rate a run of this family starts from when none is given (the
    #: CLI's and the dock's default).
    default_lr: float = 0.5

    # ------------------------------------------------------------------ building

    def build(self, config: Any) -> nn.Module:
        """The network for ``config`` (a TrainConfig or anything with ``width``)."""
        raise NotImplementedError

    def prepare(self, config: Any, data: Any) -> None:
        """Settings a new run derives from its training set before the model is built
        (stored in ``config``, hence in every checkpoint); nothing by default."""

    def configure(self, config: Any) -> Family:
        """This family for ``config``'s class table: itself when binary, else a copy whose
        tasks and maps have C + 1 classes (families without multi-class refuse one)."""
        from ..classes import table_of

        table = table_of(config)
        if table is None:
            return self
        raise ValueError(
            f"the {self.name} family is binary only; this run has {table.n_foreground} classes"
        )

    def example(self, config: Any) -> Family:
        """The family as ``summary`` shows it (a family that needs classes picks some)."""
        return self

    def label_maps(self) -> dict[str, dict[int, str]]:
        """Integer maps a prediction adds (``classes``: class ids) with each id's name, so
        a viewer shows them as labelled layers; none for a binary family."""
        if self.classes is None:
            return {}
        return {"classes": dict(enumerate(self.classes.names))}

    def derived_maps(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Maps made from the merged float maps (the class map of a multi-class family)."""
        if self.classes is None:
            return {}
        return {"classes": class_map(maps, self.classes.n_foreground)}

    def check_width(self, width: int) -> None:
        """Raise ValueError for a width this family cannot build (the one width rule of
        :mod:`..validate` unless a family needs another)."""
        from ..validate import width_problem

        bad = width_problem(width)
        if bad:
            raise ValueError(f"model width {bad}")

    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(network parameters: SGD, loss-weight parameters: Adam, possibly empty)."""
        return list(model.parameters()), []

    def loss_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Learnt per-task loss weights to log (``s_<task>``), none by default."""
        return {}

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        return {"total": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def describe(self, width: int) -> str:
        return f"{self.name} b={width}"

    # ------------------------------------------------------------------ training

    def targets(self, mask: np.ndarray, config: Any) -> dict[str, np.ndarray]:
        """Every task's target for one augmented tile. Unknown mask pixels (sparse
        painting, :data:`~..targets.UNKNOWN`) are ignored in every target of the mask's
        shape (integer: -1, float: NaN), whatever the task's own target made of them; a
        task's loss must skip those values (Semi-MoE's losses do)."""
        from ..targets import ignore_unknown, unknown_pixels

        unknown = unknown_pixels(mask)
        out = {t.name: t.target(mask, config) for t in self.tasks}
        if unknown is None:
            return out
        return {
            k: ignore_unknown(v, unknown) if np.shape(v) == unknown.shape else v
            for k, v in out.items()
        }

    def outputs(self, raw: Any) -> dict[str, torch.Tensor]:
        """A forward pass's logits by task name."""
        if isinstance(raw, torch.Tensor):
            return {self.tasks[0].name: raw}
        return dict(raw)

    def supervised(self, logits: dict[str, torch.Tensor], y: dict[str, torch.Tensor]):
        return {t.name: t.loss(logits[t.name], y[t.name]) for t in self.tasks}

    def loss_terms(
        self,
        model: nn.Module,
        sup: dict[str, torch.Tensor],
        uns: dict[str, torch.Tensor],
        lam: float,
        config: Any,
        extras: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named scalar terms whose sum (in this order) is the training loss. Extra terms
        (load balancing, ...) go here; ``extras`` carries what the pass saw (gate weights)."""
        terms = {"supervised": _sum(sup.values())}
        if uns:
            terms["unsupervised"] = lam * _sum(uns.values())
        return terms

    def pseudo_labels(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached targets for the unlabeled tiles; none: the family is supervised only."""
        return {}

    def train_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """One forward + backward over labeled (and unlabeled) tiles; returns the total loss
        (detached) and the per-task supervised and unsupervised losses for the log."""
        m = trainer.model
        nl = xl.shape[0]
        x = xl if xu is None else torch.cat([xl, xu])
        logits = self.outputs(m(x))
        sup = self.supervised({k: v[:nl] for k, v in logits.items()}, y)
        uns: dict[str, torch.Tensor] = {}
        if xu is not None:
            pl = self.pseudo_labels({k: v[nl:].detach() for k, v in logits.items()})
            uns = {t.name: t.loss(logits[t.name][nl:], pl[t.name]) for t in self.tasks if pl}
        terms = list(self.loss_terms(m, sup, uns, lam, trainer.config, {"logits": logits}).values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        total.backward()
        return total.detach(), sup, uns

    def fast_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """The fast path's pass (channels-last, autocast); by default the plain one."""
        return self.train_pass(trainer, xl, y, xu, lam)

    def reference_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """The reference path's pass (fp32, upstream's order); by default the plain one."""
        return self.train_pass(trainer, xl, y, xu, lam)

    # ------------------------------------------------------------------ prediction

    def output_maps(self, experts: bool = False) -> tuple[str, ...]:
        """Float maps a prediction writes at working scale (``experts``: the optional ones)."""
        return () if experts else tuple(t.output for t in self.tasks)

    def fills(self) -> dict[str, float]:
        return {t.output: t.fill for t in self.tasks}

    def styles(self) -> dict[str, MapStyle]:
        return {t.output: t.style for t in self.tasks}

    def layer_names(self) -> dict[str, str]:
        """napari layer name of each output (maps, ``instances``, ``gates``)."""
        label = self.label or self.name
        names = {t.output: f"{label} {t.title or t.output}" for t in self.tasks}
        return names | {"instances": f"{label} objects", "gates": f"{label} gates"}

    def infer(self, model: nn.Module, x: torch.Tensor, experts: bool, embeddings: bool):
        """Maps of one batch of normalised tiles (no gradient)."""
        logits = self.outputs(model(x))
        return Inference({t.output: t.activate(logits[t.name]) for t in self.tasks})

    def instances(self, maps: dict[str, np.ndarray], min_size: int) -> np.ndarray:
        """Objects from the maps: connected components of the mask by default."""
        from ..instances import label_instances

        return label_instances(maps["mask"], min_size=min_size)
