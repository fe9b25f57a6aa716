"""'What you see': the dock's legend of every visible layer that carries one
(``metadata[layer_styles.LEGEND]``): its name, its colours (a colour bar drawn over H&E pink
with what the ends mean in words, or colour swatches) and one line saying what it shows.
It follows the viewer: layers added, removed, shown, hidden, recoloured or selected."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QLinearGradient, QPainter, QPen
from qtpy.QtWidgets import QGroupBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from .layer_styles import LEGEND

#: What the colour bar is drawn over: the slide's typical pink, so see-through ends show.
TISSUE = (0.85, 0.63, 0.77)
NOTHING_SHOWN = "Nothing with a legend is shown: tick a layer's eye in the layer list."


def _qcolor(c) -> QColor:
    from napari.utils.colormaps.standardize_color import transform_color

    r, g, b, a = (float(v) for v in transform_color(c)[0])
    return QColor.fromRgbF(r, g, b, a)


class ColorBar(QWidget):
    """A colormap's bar over tissue pink, its words under it (low, mid, high)."""

    def __init__(self, rgba: np.ndarray, words: tuple[str, str, str], limits) -> None:
        super().__init__()
        self.rgba, self.words, self.limits = rgba, words, limits
        self.setMinimumHeight(38)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        w = self.width()
        bar = QRectF(2, 2, w - 4, 14)
        grad = QLinearGradient(bar.left(), 0, bar.right(), 0)
        tissue = np.asarray(TISSUE)
        for i, (r, g, b, a) in enumerate(self.rgba):  # composited over the tissue pink
            c = np.asarray([r, g, b]) * a + tissue * (1 - a)
            grad.setColorAt(i / max(1, len(self.rgba) - 1), QColor.fromRgbF(*c, 1.0))
        p.fillRect(bar, grad)
        p.setPen(QPen(QColor("#8a8f99"), 1))
        p.drawRect(bar)
        p.setPen(QColor("#d6d9de"))
        lo, mid, hi = self.words
        lo_v, hi_v = self.limits
        rect = QRectF(2, 18, w - 4, 18)
        p.drawText(rect, Qt.AlignmentFlag.AlignLeft, f"{lo_v:g} {lo}")
        if mid:
            p.drawText(rect, Qt.AlignmentFlag.AlignHCenter, mid)
        p.drawText(rect, Qt.AlignmentFlag.AlignRight, f"{hi} {hi_v:g}")
        p.end()


class Swatches(QWidget):
    """Colour patches (filled, or outlined for the model's glands) with their words."""

    def __init__(self, items: list[tuple[Any, str]], outline: bool = False) -> None:
        super().__init__()
        self.items, self.outline = items, outline
        self.setMinimumHeight(20)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        x = 2
        for color, text in self.items:
            box = QRectF(x, 3, 14, 14)
            if self.outline:
                p.fillRect(box, QColor.fromRgbF(*TISSUE, 1.0))
                p.setPen(QPen(_qcolor(color), 3))
                p.drawRect(box.adjusted(2, 2, -2, -2))
            else:
                p.fillRect(box, _qcolor(color))
            x += 18
            if text:
                p.setPen(QColor("#d6d9de"))
                p.drawText(QRectF(x, 1, self.width() - x, 18), Qt.AlignmentFlag.AlignVCenter, text)
                x += p.fontMetrics().horizontalAdvance(text) + 10
        p.end()


class LegendWidget(QGroupBox):
    """The legend of the visible layers, top layer first; the selected one is marked."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__("What you see (legend)", parent)
        self.viewer = viewer
        self.rows: dict[str, str] = {}  # layer name -> its help line (what is shown now)
        self._box = QVBoxLayout(self)
        self._box.setContentsMargins(6, 4, 6, 4)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.refresh)
        ev = viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.moved, ev.reordered):
            e.connect(self._layers_changed)
        viewer.layers.selection.events.active.connect(lambda _e: self._timer.start())
        self._layers_changed()

    def _layers_changed(self, _event=None) -> None:
        for layer in self.viewer.layers:  # connecting twice is a no-op for psygnal/napari
            layer.events.visible.connect(self._later)
            if hasattr(layer.events, "colormap"):
                layer.events.colormap.connect(self._later)
        self._timer.start()

    def _later(self, _event=None) -> None:
        self._timer.start()

    def refresh(self) -> None:
        """Rebuild the rows from the layers (a handful: cheap)."""
        while self._box.count():
            w = self._box.takeAt(0).widget()
            if w is not None:  # off the page now: a deferred delete waits for the event loop
                w.hide()
                w.setParent(None)
                w.deleteLater()
        self.rows = {}
        active = self.viewer.layers.selection.active
        for layer in reversed(list(self.viewer.layers)):
            leg = layer.metadata.get(LEGEND)
            if not leg or not layer.visible:
                continue
            self.rows[layer.name] = leg.get("help", "")
            title = QLabel(("▶ " if layer is active else "") + layer.name)
            title.setStyleSheet("font-weight: bold")
            self._add(title)
            drawing = self._drawing(layer, leg)
            if drawing is not None:
                self._add(drawing)
            help_line = QLabel(leg.get("help", ""))
            help_line.setWordWrap(True)
            help_line.setStyleSheet("color: #b0b4bc")
            self._add(help_line)
        if not self.rows:
            empty = QLabel(NOTHING_SHOWN)
            empty.setWordWrap(True)
            self._add(empty)

    def _add(self, w: QWidget) -> None:
        self._box.addWidget(w)
        w.show()  # a child added to a shown widget is hidden until shown

    @staticmethod
    def _drawing(layer, leg: dict) -> QWidget | None:
        kind = leg.get("kind")
        if kind == "map":
            rgba = np.asarray(layer.colormap.map(np.linspace(0, 1, 32)), float)
            rgba[:, 3] *= float(layer.opacity)
            words = (leg.get("low", ""), leg.get("mid", ""), leg.get("high", ""))
            return ColorBar(rgba, words, tuple(layer.contrast_limits))
        if kind in ("swatches", "outline"):
            return Swatches(list(leg.get("items", [])), outline=kind == "outline")
        return None
