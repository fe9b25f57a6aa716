"""The ``dca`` family: DCA's asymmetric expert decoders for class-imbalanced multi-class
segmentation (:mod:`..dca`), trained semi-supervised by the common trainer.

Needs a class table with C >= 2. Its split (head / medium / tail) is the log-gap split of the
run's labeled masks unless the config gives one (``TrainConfig.dca_split``); either way it
is stored in the config, hence in every checkpoint, and the predictor rebuilds the same
decoders from it. Losses: L_sup = sum over decoders of L_seg(p_X, y_X) + L_seg(p_A, y),
L_un = L_seg(p_A, stitched pseudo-labels), L = L_sup + λ(t) L_un, L_seg = Dice + CE.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from ..classes import pixel_counts, table_of
from ..dca import (
    FUSIONS,
    GROUPS,
    SPLIT_RULES,
    DCANet,
    Split,
    count_dca_parameters,
    log_gap_split,
    split_labels,
    stitch_logits,
    thirds_split,
)
from ..device import autocast
from ..errors import InputError
from ..losses import dice_ce_loss
from ..routing import routing_options
from .base import Family, Inference, Losses, MapStyle, class_probabilities, union_foreground
from .semimoe import PROB_STYLE, SEMIMOE_TASKS, class_maps_of, multiclass_seg_task

log = logging.getLogger(__name__)

DECODER_PREFIX = "decoder_"
ATTENTION_PREFIX = "attention_"


def _decoder_style(group: str) -> MapStyle:
    return MapStyle(
        "semimoe-prob",
        (0.0, 1.0),
        "translucent",
        low="none of its classes",
        high=f"{group} classes",
        help=f"What the {group} expert decoder alone sees: the probability of any of its "
        "classes (its own classes only; the others are background to it).",
    )


def _attention_style(group: str) -> MapStyle:
    return MapStyle(
        "magma",
        (0.0, 1.0),
        "translucent",
        0.7,
        low="ignored",
        high="listened to",
        help=f"How much the final prediction listens to the {group} expert at each pixel "
        "(DFAM attention; the experts' weights sum to 1 per pixel).",
    )


class DCAFamily(Family):
    name = "dca"
    label = "DCA"
    #: One task, segmentation over C + 1 classes (its channels are set by :meth:`configure`).
    tasks = (dataclasses.replace(SEMIMOE_TASKS[0], loss=dice_ce_loss, activate=union_foreground),)
    width_tensor = "model.encoder.0.0.weight"
    gate_shape = (0,)
    min_classes = 2  # head and tail need two classes at least
    #: Semi-MoE's 0.5 leaves DCA's deep tail decoder untrained: on a synthetic 2-class task
    #: (150 iterations, b = 8) its tail class reached Dice 0.00 at 0.5 and 0.75 at 0.05
    #: (``docs/benchmarks.md``).
    default_lr = 0.05
    #: The run's split (a :class:`~..dca.Split`) once configured.
    split_of: Split | None = None

    # ------------------------------------------------------------------ building

    def prepare(self, config: Any, data: Any) -> None:
        """The log-gap (or equal-thirds) split of the labeled masks, unless the config gives
        one."""
        table = self._table(config)
        if config.dca_split is None:
            rule = {"log-gap": log_gap_split, "thirds": thirds_split}.get(config.dca_split_rule)
            if rule is None:
                raise InputError(
                    f"DCA split rule must be one of {', '.join(SPLIT_RULES)}, "
                    f"got {config.dca_split_rule!r}"
                )
            split = rule(pixel_counts(data.labeled_masks, table.n_foreground))
        else:
            split = Split.from_dict(config.dca_split, table.n_foreground)
        config.dca_split = split.to_dict()
        log.info("DCA split (%s): %s", split.source, split.describe())

    def _table(self, config: Any):
        table = table_of(config)
        if table is None:
            raise InputError(
                "the dca family needs at least 2 foreground classes (a classes.json in the "
                "data folder)"
            )
        return table

    def configure(self, config: Any) -> DCAFamily:
        table = self._table(config)
        if config.dca_split is None:
            raise InputError("this DCA run has no head / medium / tail split")
        fam = copy.copy(self)
        fam.classes = table
        fam.split_of = Split.from_dict(config.dca_split, table.n_foreground)
        fam.tasks = (multiclass_seg_task(table, dice_ce_loss),)
        return fam

    def example(self, config: Any) -> DCAFamily:
        """Three classes, one per decoder (the decoders' sizes do not depend on C)."""
        from ..classes import ClassTable

        cfg = copy.copy(config)
        cfg.classes = ClassTable.from_names(["background", "a", "b", "c"]).to_list()
        cfg.dca_split = Split((1,), (2,), (3,), source="user").to_dict()
        return self.configure(cfg)

    @property
    def split(self) -> dict[str, list[int]] | None:
        """Head / medium / tail class ids (evaluate's group means)."""
        if self.split_of is None:
            return None
        return {g: list(getattr(self.split_of, g)) for g in GROUPS}

    def build(self, config: Any) -> DCANet:
        if self.classes is None or self.split_of is None:
            raise InputError("the dca family builds a model only for a run's classes and split")
        fusion = getattr(config, "dca_fusion", "dfam")
        if fusion not in FUSIONS:
            raise InputError(f"DCA fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        n = self.classes.n_foreground
        return DCANet(int(config.width), self.split_of, n, fusion=fusion, **routing_options(config))

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        return count_dca_parameters(model)

    def describe(self, width: int) -> str:
        split = f", {self.split_of.describe()}" if self.split_of is not None else ""
        return f"DCA b={width}{split}"

    # ------------------------------------------------------------------ training

    def _groups(self) -> list[tuple[str, tuple[int, ...]]]:
        return self.split_of.groups()

    def pseudo_labels_of(self, decoders: dict[str, torch.Tensor]) -> torch.Tensor:
        """ŷ = argmax of the stitched logits (detached)."""
        groups = self._groups()
        with torch.no_grad():
            stitched = stitch_logits(
                [decoders[g].float() for g, _ in groups],
                [ids for _, ids in groups],
                self.classes.n_foreground,
            )
            return stitched.argmax(1)

    def train_pass(self, trainer: Any, xl, y, xu, lam: float) -> Losses:
        """All tiles in one pass (batch norm over labeled + unlabeled, as Semi-MoE's pooled
        default); the decoders learn their label split, the aggregated head everything."""
        m, c = trainer.model, self.classes.n_foreground
        nl = xl.shape[0]
        x = xl if xu is None else torch.cat([xl, xu])
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(trainer.device, trainer.amp):
            out = m(x)
        target = y["seg"]
        sup = {
            g: dice_ce_loss(out.decoders[g][:nl], split_labels(target, ids, c))
            for g, ids in self._groups()
        }
        sup["aggregated"] = dice_ce_loss(out.aggregated[:nl], target)
        uns: dict[str, torch.Tensor] = {}
        if xu is not None:
            pl = self.pseudo_labels_of({g: v[nl:] for g, v in out.decoders.items()})
            uns["aggregated"] = dice_ce_loss(out.aggregated[nl:], pl)
        terms = list(sup.values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        if uns:
            total = total + lam * uns["aggregated"]
        total.backward()
        return total.detach(), sup, uns

    # ------------------------------------------------------------------ prediction

    def _group_names(self) -> list[str]:
        """The run's decoders; unconfigured: all three (so a reader knows every name)."""
        return list(GROUPS) if self.split_of is None else [g for g, _ in self._groups()]

    def _extra_maps(self) -> dict[str, MapStyle]:
        out: dict[str, MapStyle] = {}
        for g in self._group_names():
            out[DECODER_PREFIX + g] = _decoder_style(g)
            out[ATTENTION_PREFIX + g] = _attention_style(g)
        return out

    def output_maps(self, experts: bool = False) -> tuple[str, ...]:
        if experts:
            return tuple(self._extra_maps())
        classes = () if self.classes is None else tuple(class_maps_of(self.classes))
        return ("prob", *classes)

    def fills(self) -> dict[str, float]:
        names = self.output_maps() + self.output_maps(True)
        return {n: 0.0 for n in names}

    def styles(self) -> dict[str, MapStyle]:
        classes = {} if self.classes is None else class_maps_of(self.classes)
        return {"prob": PROB_STYLE} | classes | self._extra_maps()

    def layer_names(self) -> dict[str, str]:
        names = {"prob": "DCA foreground probability", "instances": "DCA objects"}
        if self.classes is not None:
            names |= {
                f"prob_{k}": f"DCA {self.classes.names[k]} probability"
                for k in range(1, self.classes.n_foreground + 1)
            }
            names["classes"] = "DCA class map"
        for g in self._group_names():
            names[DECODER_PREFIX + g] = f"DCA {g} expert"
            names[ATTENTION_PREFIX + g] = f"DCA attention to the {g} expert"
        return names

    def infer(self, model, x, experts: bool, embeddings: bool) -> Inference:
        out = model(x)
        maps = {"prob": union_foreground(out.aggregated)} | class_probabilities(out.aggregated)
        if experts:
            for i, (g, _) in enumerate(self._groups()):
                maps[DECODER_PREFIX + g] = union_foreground(out.decoders[g])
                maps[ATTENTION_PREFIX + g] = out.attention[:, i].float()
        return Inference(maps, None, out.pooled if embeddings else None)
