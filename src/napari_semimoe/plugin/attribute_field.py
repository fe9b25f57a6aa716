"""Page 1's "Comes from" field: where the current image comes from (site, scanner or stain
batch), free text with the project's values offered, stored in the project at once. Blank
is unknown (the model's "any" router answers for it). Attribute routing (Train page) learns
one router per value; prediction routes the image through its value's router."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from ..core.errors import InputError
from .common import notify
from .session import Session

TIP = (
    "Where this slide comes from: its site, scanner or stain batch (free text; the "
    "project's values are offered). With 'route by where a slide comes from' on the Train "
    "page the model learns a router for each value; blank = unknown, which the model's "
    "'any' router handles. (attribute, for dMoE attribute routing)"
)


class AttributeField(QComboBox):
    """An editable combo: the current image's attribute; Enter, leaving the field or
    picking a value stores it (a bad one is one line and the field shows the stored one)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.lineEdit().setPlaceholderText("unknown (site, scanner, stain batch)")
        self.setToolTip(TIP)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.lineEdit().editingFinished.connect(self.commit)
        self.activated.connect(lambda _i: self.commit())
        session.image_changed.connect(lambda _e: self.show_current())
        session.project_changed.connect(lambda _p: self.show_current())
        session.attribute_changed.connect(lambda _v: self.show_current())  # set elsewhere
        self.show_current()

    def show_current(self) -> None:
        """The current image's value, and the project's values to pick from."""
        s = self.session
        values = [] if s.project is None else s.project.attribute_values()
        self.blockSignals(True)
        self.clear()
        self.addItems(values)
        self.setEditText(s.attribute or "")
        self.blockSignals(False)
        self.setEnabled(s.entry is not None)

    def commit(self) -> None:
        """Store what the field says as the current image's attribute."""
        s = self.session
        if s.entry is None:
            return
        text = self.currentText()
        if text.strip() == (s.attribute or ""):
            return
        try:
            kept = s.set_attribute(text)
        except InputError as exc:
            notify(str(exc), "warning")
            s.say(str(exc))
            self.show_current()
            return
        self.show_current()
        s.say(f"{s.entry.name} comes from {kept!r}" if kept else f"{s.entry.name}: origin unknown")
