"""The Train page's DCA split, shown before training: each class's share of the painted
pixels in the training tiles, the log gaps between the ranked shares, and which classes
the log-gap rule makes head / medium / tail (each group gets its own expert decoder,
spec §2). The user may override it with ``head/medium/tail`` class ids (checked by
:func:`core.dca.parse_split_text`; a bad split is one line).

The dock counts the painted pixels at the annotations' resolution; the training child
makes the split from its cut masks at working scale, which gives the same groups unless
two shares are within a rounding of each other. An override is used exactly as typed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

from ..core.dca import GROUPS, Split, log_gap_split, parse_split_text
from ..core.errors import InputError
from .session import Session
from .train_form import family_title

ERROR_STYLE = "color: #ff6b6b"


class DcaSplitBox(QGroupBox):
    """The log-gap split of the painted classes, and the user's override."""

    def __init__(self, session: Session, labels_of: Callable) -> None:
        super().__init__("DCA split: which classes are head, medium, tail")
        self.session, self.labels_of = session, labels_of
        v = QVBoxLayout(self)
        self.shares_label = QLabel("")
        self.shares_label.setWordWrap(True)
        v.addWidget(self.shares_label)
        row = QHBoxLayout()
        self.override_edit = QLineEdit()
        self.override_edit.setPlaceholderText("automatic; or head/medium/tail ids, e.g. 1/2/3")
        self.override_edit.setToolTip(
            "leave empty for the log-gap split above (made again from the cut tiles when "
            "training starts); or type the class ids of head / medium / tail, e.g. '1,2/3/4' "
            "(medium may be empty: '1//2')"
        )
        self.override_edit.textChanged.connect(lambda _t: self.check())
        self.recount_btn = QPushButton("Recount")
        self.recount_btn.setToolTip("count the painted pixels of each class again")
        self.recount_btn.clicked.connect(self.refresh)
        row.addWidget(self.override_edit, 1)
        row.addWidget(self.recount_btn)
        v.addLayout(row)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        v.addWidget(self.error_label)
        #: the log-gap split of the last count (None: nothing painted yet)
        self.auto: Split | None = None

    def refresh(self) -> None:
        """Count each class's painted pixels in the training tiles; show the split."""
        table, project = self.session.classes, self.session.project
        self.auto = None
        if table is None or project is None or table.n_foreground < 2:
            self.shares_label.setText("DCA needs a project with 2 or more classes (1 · Project).")
            return
        counts = project.class_pixel_counts(self.labels_of)
        if not counts.sum():
            self.shares_label.setText(
                "No class is painted in the training tiles yet: the split is made from what "
                "you paint there."
            )
            return
        self.auto = log_gap_split(counts)
        self.shares_label.setText(describe_split(self.auto, table.names, counts))
        self.check()

    def check(self) -> bool:
        """The override's one-line error (nothing when empty or valid)."""
        try:
            self.split()
        except InputError as exc:
            self.error_label.setText(str(exc))
            return False
        self.error_label.setText("")
        return True

    def split(self) -> dict | None:
        """The user's split for ``TrainConfig.dca_split`` (None: the log-gap rule); a bad
        one raises InputError (one line)."""
        text = self.override_edit.text().strip()
        table = self.session.classes
        if not text or table is None:
            return None
        return parse_split_text(text, table.n_foreground).to_dict()


def fill_families(combo, table, want: str | None = None) -> None:
    """The families a project can train, in ``combo``: those that need classes (DCA: 2
    or more) only when the project's class table (``table``; None: binary) has them."""
    from ..core.families import families, get_family

    n = 1 if table is None else table.n_foreground
    want = want or combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for name in families():
        if get_family(name).min_classes <= n:
            combo.addItem(family_title(name), name)
    combo.setCurrentIndex(max(0, combo.findData(want)))
    combo.blockSignals(False)


def describe_split(split: Split, names: tuple[str, ...], counts: np.ndarray) -> str:
    """Each class by share (rank order) with its group, the gaps, in words."""
    group = {k: g for g in GROUPS for k in getattr(split, g)}
    lines = []
    for k in split.order:
        lines.append(
            f"{names[k]} (id {k}): {100 * split.shares[k - 1]:.1f} % of the painted pixels "
            f"({int(counts[k - 1])} px) → {group[k]}"
        )
    if split.gaps:
        gaps = ", ".join(f"{g:.2f}" for g in split.gaps)
        lines.append(f"log gaps between ranked shares: {gaps} (head ends at the largest)")
    lines.append(
        "Split: "
        + "; ".join(f"{g}: {', '.join(names[k] for k in ids)}" for g, ids in split.groups())
    )
    return "\n".join(lines)
