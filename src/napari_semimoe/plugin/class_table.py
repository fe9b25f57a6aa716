"""The class table of page 1 (1 · Project and tiles): the names and colours of what a
pathologist paints (benign gland, malignant gland, ...), stored in the project
(classes.json). Background is id 0, fixed.

No table is a binary project (each painted gland its own id), exactly as before classes.
The first class added turns the glands painted so far into class 1; a removed class's
pixels become unpainted and the classes above it move one id down (the annotations before
are kept in each image's history). Editing is locked while a training runs: its masks
were cut with the table it has.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.classes import DEFAULT_COLOURS, ClassTable
from ..core.errors import InputError
from ..core.project import drop_class, glands_to_class
from .layers import NapariLayers
from .session import Session

BINARY_WORDS = (
    "No classes: each painted gland is one gland (binary). Add a class to name what you "
    "paint (e.g. benign gland, malignant gland): the glands painted so far become the first."
)
ERROR_STYLE = "color: #ff6b6b"


class ClassesBox(QGroupBox):
    """The project's class table: rows of name + colour; Add, Remove, rename in place."""

    def __init__(
        self, session: Session, layers: NapariLayers, save_now: Callable[[], None]
    ) -> None:
        super().__init__("Classes (what you paint)")
        self.session, self.layers, self.save_now = session, layers, save_now
        v = QVBoxLayout(self)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Class", "Colour"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(
            1, QHeaderView.ResizeMode.ResizeToContents
        )
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setToolTip(
            "double-click a name to rename the class; click a colour to change it"
        )
        self.table.itemChanged.connect(self._item_changed)
        v.addWidget(self.table)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add class")
        self.add_btn.setToolTip("a new class to paint (the first one also takes your glands)")
        self.add_btn.clicked.connect(lambda: self.add_class())
        self.remove_btn = QPushButton("Remove class")
        self.remove_btn.setToolTip(
            "remove the selected class: its painted pixels become unpainted (the annotations "
            "before are kept in the history of 3 · Review)"
        )
        self.remove_btn.clicked.connect(self._remove_selected)
        row.addWidget(self.add_btn)
        row.addWidget(self.remove_btn)
        v.addLayout(row)
        self.line = QLabel("")
        self.line.setWordWrap(True)
        v.addWidget(self.line)
        session.project_changed.connect(lambda _p: self.refresh())
        self.refresh()

    # ------------------------------------------------------------------ view

    def refresh(self, error: str = "") -> None:
        """Rows from the project's table (background first, fixed); ``error``: one line."""
        table = self.session.classes
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        if table is not None:
            self.table.setRowCount(len(table.names))
            for k, (name, colour) in enumerate(zip(table.names, table.colours)):
                item = QTableWidgetItem(name)
                if k == 0:
                    item.setFlags(item.flags() & ~_editable())
                    item.setToolTip("id 0, fixed: what is not any class")
                self.table.setItem(k, 0, item)
                if k:
                    btn = QPushButton(colour)
                    btn.setStyleSheet(f"background-color: {colour}; color: {_ink(colour)}")
                    btn.clicked.connect(lambda _=False, k=k: self._choose_colour(k))
                    self.table.setCellWidget(k, 1, btn)
                else:
                    self.table.setItem(k, 1, QTableWidgetItem("—"))
        self.table.blockSignals(False)
        self.table.setVisible(table is not None)
        rows = self.table.rowCount()  # as tall as its rows: no empty box on the page
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(header + sum(self.table.rowHeight(r) for r in range(rows)) + 4)
        self.remove_btn.setEnabled(table is not None and table.n_foreground > 1)
        self.add_btn.setEnabled(self.session.project is not None)
        if error:
            self.line.setStyleSheet(ERROR_STYLE)
            self.line.setText(error)
        else:
            self.line.setStyleSheet("")
            self.line.setText(BINARY_WORDS if table is None else _summary(table))

    # ------------------------------------------------------------------ edits

    def add_class(self, name: str | None = None, colour: str | None = None) -> bool:
        """One more class (default name 'class k', a default colour); in a binary project
        the first, which takes the glands painted so far."""
        table = self.session.classes
        names = ["background"] if table is None else list(table.names)
        colours = ["#000000"] if table is None else list(table.colours)
        k = len(names)
        names.append(name or _free_name(names, k))
        colours.append(colour or DEFAULT_COLOURS[(k - 1) % len(DEFAULT_COLOURS)])
        first = table is None
        return self._apply(
            lambda: ClassTable.from_names(names, colours),
            glands_to_class if first else None,
            f"class {k} '{names[-1]}' added"
            + ("; the glands painted so far are this class now" if first else ""),
        )

    def remove_class(self, k: int) -> bool:
        """Remove class ``k`` (1..C): its pixels unpainted, the ids above it one down."""
        table = self.session.classes
        if table is None or not 1 <= k <= table.n_foreground:
            return self._fail(f"no class {k} to remove")
        if table.n_foreground == 1:
            return self._fail("a class table keeps at least one class")
        names = [n for i, n in enumerate(table.names) if i != k]
        colours = [c for i, c in enumerate(table.colours) if i != k]
        return self._apply(
            lambda: ClassTable.from_names(names, colours),
            lambda a: drop_class(a, k),
            f"class '{table.names[k]}' removed: its painted pixels are unpainted now",
        )

    def rename_class(self, k: int, name: str) -> bool:
        table = self.session.classes
        if table is None or not 1 <= k <= table.n_foreground:
            return self._fail(f"no class {k} to rename")
        names = list(table.names)
        old, names[k] = names[k], name
        return self._apply(
            lambda: ClassTable.from_names(names, table.colours), None, f"'{old}' is now '{name}'"
        )

    def set_colour(self, k: int, colour: str) -> bool:
        table = self.session.classes
        if table is None or not 1 <= k <= table.n_foreground:
            return self._fail(f"no class {k} to colour")
        colours = list(table.colours)
        colours[k] = colour
        return self._apply(
            lambda: ClassTable.from_names(table.names, colours),
            None,
            f"'{table.names[k]}' is drawn in {colour} now",
        )

    def _apply(self, make: Callable[[], ClassTable], relabel, what: str) -> bool:
        """Check the new table, store it, relabel the annotations (saved and shown)."""
        s = self.session
        if s.project is None:
            return self._fail("choose a project folder first")
        if s.training:
            return self._fail("classes cannot change while training runs: stop it first")
        try:
            table = make()
        except InputError as exc:
            return self._fail(str(exc))
        self.save_now()  # the last strokes are in the files the relabel rewrites
        try:
            s.project.set_classes(table, relabel)
        except (InputError, OSError) as exc:
            return self._fail(f"classes not saved: {exc}")
        if relabel is not None and s.entry is not None and self.layers.labels() is not None:
            saved = s.project.load_annotations(s.entry)
            if saved is not None:
                self.layers.replace_labels(np.asarray(saved))
            s.clear_undo()  # undo steps hold the ids before
        self.layers.labels()  # the annotations in the new colours and names
        self.refresh()
        s.classes_changed.emit(table)
        s.say(what)
        return True

    def _fail(self, msg: str) -> bool:
        self.refresh(error=msg)
        self.session.say(msg)
        return False

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0 and item.row() > 0:
            self.rename_class(item.row(), item.text().strip())

    def _remove_selected(self) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if not rows or 0 in rows:
            self._fail("select the class to remove (background cannot be removed)")
            return
        self.remove_class(rows.pop())

    def _choose_colour(self, k: int) -> None:
        table = self.session.classes
        if table is None:
            return
        c = QColorDialog.getColor(QColor(table.colours[k]), self, f"Colour of {table.names[k]}")
        if c.isValid():
            self.set_colour(k, c.name())


def _editable():
    from qtpy.QtCore import Qt

    return Qt.ItemFlag.ItemIsEditable


def _free_name(names: list[str], k: int) -> str:
    name, i = f"class {k}", k
    while name in names:
        i += 1
        name = f"class {i}"
    return name


def _ink(colour: str) -> str:
    """Black or white text, whichever reads on ``colour``."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _summary(table: ClassTable) -> str:
    n = table.n_foreground
    more = " (DCA needs 2 or more)" if n < 2 else "; the Train page offers DCA"
    return f"{n} class{'es' if n != 1 else ''} to paint{more}. Pick one next to the brush."
