"""The Train page's words and fields: the simple level's choices (how long, speed or
quality), one tooltip per field (plain words first, the technical term after), and the
small field builders. Kept apart from the page's behaviour (panels/train.py)."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

#: The simple level's choices: (words, training steps) and (words, model width).
DURATIONS = (
    ("quick look (200 steps)", 200),
    ("standard (500 steps)", 500),
    ("thorough (2000 steps)", 2000),
)
QUALITIES = (
    ("fast: small model", 8),
    ("balanced", 16),
    ("best quality: large model (slow on a CPU)", 32),
)
CUSTOM = "custom (advanced)"

#: Every field's tooltip: what it does in plain words, then the technical term.
TIPS = {
    "family": "What the model learns to find, and which model learns it. Semi-MoE segments "
    "glands in H&E slides with three experts (segmentation, distance to the gland edge, "
    "gland boundary) and learns also from the tissue you did not paint. With 2 or more "
    "classes (1 · Project), DCA gives the common, middle and rare classes each an expert "
    "of their own, so the rare ones are not drowned out. (model family)",
    "duration": "How long the model trains: more steps learn more but take longer. The line "
    "below says how long, measured on this computer once a training ran. (iterations)",
    "quality": "A larger model can be more accurate but is slower to train and to predict, "
    "mostly on a computer without a GPU. (model width b: channels of the first layer)",
    "advanced": "Show every training parameter (the simple choices above set some of them).",
    "width": "How big the model is: more channels = more capacity, slower. 16 is fast on a "
    "CPU, 64 is the paper's. (model width b, a multiple of 4)",
    "iterations": "How many learning steps the training makes; each step looks at a few "
    "tiles. (iterations)",
    "lr": "How big each learning step is: too large and training jumps around, too small and "
    "it learns slowly. The default suits Semi-MoE. (SGD learning rate)",
    "gamma": "How strongly the training balances segmentation, distance map and boundary "
    "against each other: 0 = fixed equal weights. (γ of the adaptive multi-objective loss)",
    "lambda_max": "How much the tissue you did not paint counts at the end of training "
    "(it ramps up from 0): 0 = learn only from your painting. (λ max, unsupervised weight)",
    "device": "Where the training runs: auto = the GPU when there is one, else the CPU. "
    "(torch device)",
    "threads": "CPU cores the training may use ('all' = every core). Fewer keeps the "
    "computer responsive for other work. (torch threads)",
    "precision": "Number format of the computation: bf16 is faster on recent hardware, fp32 "
    "is exact; auto chooses. (floating-point precision)",
    "seed": "Start value of the randomness: the same seed and settings give the same model. "
    "(random seed)",
    "semi": "Also learn from the tissue outside your training tiles, from the model's own "
    "confident predictions there; off = learn only from what you painted. (semi-supervised "
    "pseudo-labels; off = supervised only)",
    "routing": "Slides from several labs, scanners or stain batches: the model learns a "
    "router for each value of 'Comes from' (1 · Project) that picks which shared experts "
    "handle its tissue, plus an 'any' router for slides of unknown or new origin. Off = one "
    "model for all slides. (dMoE attribute routing)",
    "start": "Cut the training tiles and start training a new model in the background; "
    "napari stays usable (paint, pan, zoom) while it trains.",
    "pause": "Pause after the current step (the model is saved); press again to resume.",
    "stop": "Stop training; the model so far is saved and can predict.",
    "continue": "Go on training the last model with the current tiles (after corrections), "
    "into a new run; available after a first Start. (fine-tune from the last checkpoint)",
}


def family_title(name: str) -> str:
    """A model family in the form's words (Semi-MoE: what it segments, then its name)."""
    from ..core.families import get_family

    fam = get_family(name)
    label = fam.label or fam.name
    return f"glands ({label})" if name == "semimoe" else label  # fits the dock's combo


def form_row(form: QFormLayout, text: str, widget: QWidget, tip: str) -> None:
    """A form row whose label and field both carry the tooltip; a combo box's long words
    must not widen the page past the dock (it then scrolls sideways)."""
    label = QLabel(text)
    label.setToolTip(tip)
    widget.setToolTip(tip)
    if isinstance(widget, QComboBox):
        widget.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        widget.setMinimumContentsLength(8)
    form.addRow(label, widget)


def spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    sp = QSpinBox()
    sp.setRange(lo, hi)
    sp.setSingleStep(step)
    sp.setValue(value)
    return sp


def dspin(lo: float, hi: float, value: float, decimals: int) -> QDoubleSpinBox:
    sp = QDoubleSpinBox()
    sp.setRange(lo, hi)
    sp.setDecimals(decimals)
    sp.setSingleStep(10 ** -(decimals - 1))
    sp.setValue(value)
    return sp


def check(text: str, tip: str, on: bool = False) -> QCheckBox:
    c = QCheckBox(text)
    c.setChecked(on)
    c.setToolTip(tip)
    return c


def combo(items: list[str], value: str) -> QComboBox:
    c = QComboBox()
    c.addItems(items)
    c.setCurrentText(value)
    return c
