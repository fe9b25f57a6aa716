"""Parts of the dock's Cohort page: the per-slide table (name, status in words with the
reason of a failure, tiles done / total, time, Open), filled from the cohort's progress
reports and its summary on the GUI thread; the watcher that hears the dock or the window
close; a line edit with its button; opening a result."""

from __future__ import annotations

import time

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
)

from .jobs import fmt_time

COLUMNS = ("Slide", "Status", "Tiles", "Time", "")
#: What each stage of a slide means, in words.
STAGE_WORDS = {
    "plan": "reading the slide",
    "maps": "predicting",
    "labels": "finding glands",
    "relabel": "joining glands",
    "pyramid": "building overviews",
    "export": "writing the mask",
}


class SlideTable(QTableWidget):
    """Rows by slide name; ``on_open(name)`` is called by a row's Open button."""

    def __init__(self, on_open) -> None:
        super().__init__(0, len(COLUMNS))
        self.on_open = on_open
        self.rows: dict[str, int] = {}
        self._seen: dict[str, list[float | None]] = {}  # name -> [started, ended]
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setToolTip("one line per slide; Open shows a finished slide's results in the viewer")
        h = self.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for c in (2, 3, 4):
            h.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.setColumnWidth(0, 12 * self.fontMetrics().averageCharWidth() + 16)
        self.cellDoubleClicked.connect(self._double_clicked)

    def reset(self, names: list[str]) -> None:
        """One queued row per slide."""
        self.setRowCount(0)
        self.rows = {}
        self._seen = {n: [None, None] for n in names}
        for i, n in enumerate(names):
            self.insertRow(i)
            self.rows[n] = i
            for c, text in enumerate((n, "queued", "", "")):
                self.setItem(i, c, QTableWidgetItem(text))
            self.item(i, 0).setToolTip(n)
            b = QPushButton("Open")
            b.setToolTip("show this slide's results in the viewer (read as you look)")
            b.setEnabled(False)
            b.clicked.connect(lambda _=False, name=n: self.on_open(name))
            self.setCellWidget(i, 4, b)

    def text(self, name: str, column: int) -> str:
        return self.item(self.rows[name], column).text()

    def open_button(self, name: str) -> QPushButton:
        return self.cellWidget(self.rows[name], 4)

    def set_row(self, name: str, status: str, tiles: str, seconds: float | None, tip=None):
        r = self.rows.get(name)
        if r is None:
            return
        self.item(r, 1).setText(status)
        self.item(r, 1).setToolTip(tip or status)
        self.item(r, 2).setText(tiles)
        self.item(r, 3).setText("" if seconds is None else fmt_time(seconds))
        self.cellWidget(r, 4).setEnabled(status == "done")

    def show_progress(self, p) -> None:
        """Rows from a CohortProgress: queued until a slide's first tiles are read (its
        stage before), then running with its stage in words, then done / failed / stopped.
        The time runs from the first sight of the slide running."""
        now = time.monotonic()
        tiles = getattr(p, "tiles", None)
        errors = getattr(p, "errors", None) or {}
        for name, state in p.slides.items():
            seen = self._seen.setdefault(name, [None, None])
            done, total = (tiles or {}).get(name, (0, 0))
            if state in STAGE_WORDS:
                if state == "plan" or (tiles is not None and state == "maps" and not done):
                    self.set_row(name, "queued", _tiles(done, total), None)
                    continue
                seen[0] = seen[0] or now
                words = f"running · {STAGE_WORDS[state]}"
                self.set_row(name, words, _tiles(done, total), now - seen[0])
                continue
            if seen[1] is None:
                seen[1] = now
            took = None if seen[0] is None else seen[1] - seen[0]
            if state == "failed":
                why = errors.get(name, "")
                self.set_row(name, f"failed: {why}" if why else "failed", "", took, why)
            else:
                self.set_row(name, state, _tiles(done, total), took)

    def show_summary(self, summary) -> None:
        """Final rows from the CohortSummary (the failure reasons, the tiles read)."""
        for r in summary.slides:
            seen = self._seen.get(r.name, [None, None])
            took = r.seconds if seen[0] is None or seen[1] is None else seen[1] - seen[0]
            if r.status == "failed":
                self.set_row(r.name, f"failed: {r.error or ''}", "", took, r.error)
            else:
                self.set_row(r.name, r.status, str(r.tiles) if r.tiles else "", took)

    def _double_clicked(self, row: int, _column: int) -> None:
        name = next((n for n, r in self.rows.items() if r == row), None)
        if name is not None and self.open_button(name).isEnabled():
            self.on_open(name)


def with_button(edit: QLineEdit, fn) -> QHBoxLayout:
    """A line edit with a small "…" (choose) button beside it, sharing its tooltip; the
    edit takes the width the dock has (a long path must not widen the page)."""
    row = QHBoxLayout()
    edit.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    row.addWidget(edit, 1)
    b = QPushButton("…")
    b.setFixedWidth(4 * b.fontMetrics().averageCharWidth() + 12)
    b.setToolTip("choose: " + edit.toolTip())
    b.clicked.connect(fn)
    row.addWidget(b)
    return row


class CloseFilter(QObject):
    """Stops the cohort when the dock is taken out of napari (its content loses its
    parent: napari sends no close event to a dock's widget, napari#8071) or the window
    closes."""

    def __init__(self, on_close, parent: QObject) -> None:
        super().__init__(parent)
        self.on_close = on_close

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt API)
        t = event.type()
        if t == QEvent.Type.Close:
            self.on_close(window=True)
        elif t == QEvent.Type.ParentChange and obj.parent() is None:
            self.on_close(window=False)
        return False


def open_result(viewer, path: str) -> list:
    """Add a cohort output (``NAME.ome.zarr``) to the viewer through the plugin's reader:
    zarr / dask arrays, so napari reads only the chunks it draws; a layer of the same name
    is replaced. [] when the reader does not take the path (not a finished output)."""
    from napari.layers import Layer

    from .reader import get_reader

    reader = get_reader(path)
    if reader is None:
        return []
    added = []
    for d in reader(path):
        name = d[1].get("name") if len(d) > 1 else None
        if name in viewer.layers:
            viewer.layers.remove(name)
        added.append(viewer.add_layer(Layer.create(*d)))
    return added


def _tiles(done: int, total: int) -> str:
    if total:
        return f"{done} / {total}"
    return str(done) if done else ""
