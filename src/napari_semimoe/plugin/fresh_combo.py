"""A combo box whose list is refilled each time it opens (its items follow the painting,
the history on disk, ...), shared by the Review and Active pages."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QComboBox


class FreshCombo(QComboBox):
    """A combo box that refills itself (``refill()``) each time its list opens."""

    def __init__(self, refill: Callable[[], None]) -> None:
        super().__init__()
        self.refill = refill

    def showPopup(self) -> None:  # noqa: N802 (Qt API)
        self.refill()
        super().showPopup()
