"""The settings of a training run (:class:`TrainConfig`), on their own so that the run folder
can check a run's settings without importing the trainer (which imports the run folder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import Geometry
from .errors import InputError
from .families import DEFAULT_FAMILY, get_family


@dataclass
class TrainConfig:
    """Every setting of a run. Schedules are in iterations (interactive runs have no epochs)."""

    width: int = 16
    #: The model family (:func:`.families.families`); ``semimoe`` is the product's model.
    family: str = DEFAULT_FAMILY
    iterations: int = 1000
    labeled_batch: int = 2
    unlabeled_batch: int = 2
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 5e-5
    s_lr: float = 0.05
    warmup: int | None = None  # default: 10% of iterations (upstream: 20 of 200 epochs)
    decay_every: int | None = None  # default: 25% of iterations (upstream: every 50 epochs)
    decay_factor: float = 0.5
    gamma: float = 0.4
    lambda_max: float = 0.5
    supervised_only: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    fast: bool = True  # channels-last bf16 passes; False = upstream-style reference path
    #: Fast path: "pooled" = labeled + unlabeled tiles in one pass (batch norm over all of
    #: them; the better GlaS results), "per-half" = upstream's two passes, side by side on
    #: a multi-core CPU (~7 % faster there; see docs/benchmarks.md).
    batch_norm: str = "pooled"
    compile: str = "auto"  # auto (= off: measured no faster, docs/benchmarks.md) | on | off
    #: Bit-for-bit repeatable runs on a GPU too (deterministic kernels, slower there).
    deterministic: bool = False
    geometry: dict = field(default_factory=lambda: Geometry().to_dict())
    per_instance_boundary: bool = False
    #: Sparse painting in data folders: mask pixels of this value (e.g. 255 in 8-bit masks)
    #: are unknown, ignored by the supervised losses; None = every mask pixel is known.
    unknown_value: int | None = None
    #: The class table (``classes.json`` entries, background first); None = binary, as ever.
    classes: list | None = None
    #: DCA's head / medium / tail split ({"head": [ids], ...}); None = the log-gap split of
    #: the labeled masks, computed when the run starts and stored here.
    dca_split: dict | None = None
    #: DCA without a given split: "log-gap" (the poster's rule) or "thirds" (the ablation's
    #: equal thirds by labeled share).
    dca_split_rule: str = "log-gap"
    #: DCA's aggregation: "dfam" (per-pixel attention over the decoders) or "average" (the
    #: ablation).
    dca_fusion: str = "dfam"
    #: moe-k: the number K of homogeneous experts.
    experts: int = 4
    #: moe-k's gate: 0 = a dense softmax over the K experts (the project page); 1..K-1 =
    #: noisy top-k (exactly k non-zero weights, noise in training only).
    top_k: int = 0
    #: Weight β of the load-balancing term β (log K - H(mean gate)); None = the family's
    #: default (moe-k 0.01, semimoe off).
    balance: float | None = None
    #: moe-k: weight of the cross-expert consistency on unlabeled tiles (times λ(t)).
    consistency: float = 1.0
    #: dMoE blocks (one router per attribute value + "any"); ``attribute_values`` are the
    #: values seen in training, in router order.
    attribute_routing: bool = False
    attribute_values: list = field(default_factory=list)
    #: Each training image's attribute (``{name: value}``, from ``--attributes`` or the
    #: plugin's per-image field; an image not in it is unknown): stored so that a resume,
    #: evaluation and the summary know them.
    attributes: dict = field(default_factory=dict)
    route_experts: int = 8
    route_top_k: int = 2
    #: Share of training images routed through "any" (so it learns for unknown values).
    any_fraction: float = 0.1
    #: Stain normalisation (preprocessing): a reference image's Macenko basis
    #: (:class:`~.stain.StainBasis` as a dict); every training image, and every image or
    #: slide predicted, is re-stained to it. None = off.
    stain_reference: dict | None = None
    #: Stain augmentation: HED-space jitter strength (0 = off; 0.05 = Tellez et al.'s
    #: "light" setting), see :mod:`.stain`.
    stain_jitter: float = 0.0
    #: Semi-MoE's pseudo-labels from a mean teacher: an exponential moving average of the
    #: network with this decay (e.g. 0.99), in eval mode, instead of the student's own
    #: gated outputs of the same pass (:mod:`.teacher`). 0 = off: the paper's method.
    ema_teacher: float = 0.0
    #: Confidence masking of Semi-MoE's pseudo-labels: unlabeled pixels whose gated
    #: segmentation (boundary) probability is below this are left out of the unsupervised
    #: seg and SDF (boundary) losses. 0 = off: every pixel counts, as in the paper.
    pseudo_confidence: float = 0.0
    checkpoint_every: int = 100
    snapshot_every: int = 0  # keep weights every N iterations (learning curves), 0 = never

    @property
    def warmup_iters(self) -> int:
        return self.warmup if self.warmup is not None else round(0.1 * self.iterations)

    @property
    def decay_iters(self) -> int:
        return self.decay_every if self.decay_every else max(1, round(0.25 * self.iterations))

    def lr_factor(self, it: int) -> float:
        """Linear warm-up from 0, then x decay_factor every decay_iters (``it`` is 0-based)."""
        w = self.warmup_iters
        if w and it < w:
            return (it + 1) / w
        return self.decay_factor ** ((it - w) // self.decay_iters) if it >= w else 1.0

    def lambda_at(self, it: int) -> float:
        """Unsupervised weight: linear ramp from ~0 to lambda_max over the run."""
        if self.supervised_only:
            return 0.0
        return self.lambda_max * (it + 1) / max(1, self.iterations)

    def validate(self) -> None:
        if self.iterations < 1:
            raise InputError("iterations must be >= 1")
        try:
            get_family(self.family).check_width(self.width)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.snapshot_every < 0:
            raise InputError(f"snapshot_every must be >= 0 (0 = never), got {self.snapshot_every}")
        if self.lr <= 0 or self.s_lr <= 0:
            raise InputError("learning rates must be > 0")
        if self.labeled_batch < 1 or self.unlabeled_batch < 0:
            raise InputError("labeled batch must be >= 1 and unlabeled batch >= 0")
        if self.gamma < 0 or self.lambda_max < 0:
            raise InputError("gamma and lambda_max must be >= 0")
        if self.compile not in ("auto", "on", "off"):
            raise InputError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.classes is not None:
            from .classes import parse_classes

            parse_classes(self.classes, "the run's class table")
        if self.experts < 2 or not 0 <= self.top_k <= self.experts:
            raise InputError(
                f"experts must be >= 2 and top_k in 0..experts, got {self.experts}, {self.top_k}"
            )
        if (self.balance is not None and self.balance < 0) or self.consistency < 0:
            raise InputError("balance and consistency weights must be >= 0")
        if not 1 <= self.route_top_k <= self.route_experts:
            raise InputError(
                f"route_top_k must be in 1..route_experts ({self.route_experts}), "
                f"got {self.route_top_k}"
            )
        if not 0 <= self.any_fraction <= 1 or not 0 <= self.stain_jitter <= 1:
            raise InputError("any_fraction and stain_jitter must be in [0, 1]")
        if self.batch_norm not in ("pooled", "per-half"):
            raise InputError(f"batch_norm must be pooled or per-half, got {self.batch_norm!r}")
        if (
            self.attribute_routing
            and self.family == "semimoe"
            and (not self.fast or self.batch_norm != "pooled")
        ):
            # Their separate labeled / unlabeled passes would need the routes split too.
            raise InputError(
                "attribute routing trains Semi-MoE in one pooled pass: it cannot be combined "
                "with --reference or --batch-norm per-half"
            )
        if self.stain_reference is not None:
            from .stain import StainBasis

            StainBasis.from_dict(self.stain_reference)
        if not 0 <= self.ema_teacher < 1 or not 0 <= self.pseudo_confidence < 1:
            raise InputError(
                "ema_teacher and pseudo_confidence must be in [0, 1), got "
                f"{self.ema_teacher}, {self.pseudo_confidence}"
            )
        if (self.ema_teacher or self.pseudo_confidence) and self.family != "semimoe":
            raise InputError(
                "--ema-teacher and --pseudo-confidence change Semi-MoE's pseudo-labels: "
                f"family {self.family} has its own"
            )
        if self.ema_teacher and self.attribute_routing:
            # The teacher would need the unlabeled half's own routes.
            raise InputError("--ema-teacher cannot be combined with --attribute-routing")
        if self.dca_fusion not in ("dfam", "average"):
            raise InputError(f"dca_fusion must be dfam or average, got {self.dca_fusion!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
