"""A small live line chart (QPainter): no plotting dependency, cheap to repaint."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from .layer_styles import TASK_COLORS

#: Colours of the curves every run has (the tasks' come from TASK_COLORS, in task order).
COLORS = {"total": "#f0f0f0", "unsup": "#7bd389", "lambda": "#ff6b6b"}
#: The legend's words of the curves every run has.
NAMES = {
    "total": "total loss",
    "unsup": "learning from unlabeled tissue",
    "lambda": "weight of unlabeled tissue (right axis)",
}
X_TITLE = "training step"
Y_TITLE = "loss (lower = better)"


class LossChart(QWidget):
    """Loss curves per task (supervised), total, unsupervised total and λ (right axis 0-1).

    The tasks are the run's model family's (:meth:`set_tasks`), read from its loss log
    (``sup_<task>``, ``unsup_<task>``); a task the family did not name that appears in the
    log gets a curve of its own, so no family is drawn wrong."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(230)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.tasks: dict[str, str] = {}  # task name -> its title (the tooltip)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.colors: dict[str, str] = {}
        self.set_tasks([])
        self.total_iterations = 1
        self.offset = 0  # iterations of the earlier runs shown (Continue appends)
        self.boundaries: list[float] = []  # where each continued run began
        self._supervised_only = False  # no λ curve: no right axis

    def set_tasks(self, tasks) -> None:
        """The curves of a family's tasks: ``tasks`` is a sequence of Task-like objects
        (``name``, ``title``) or of names; the curves drawn so far of those tasks (and the
        total, unsup and λ) are kept."""
        known, self.tasks = self.tasks, {}
        for t in tasks:  # the legend's words: the expert's (segmentation, distance map, ...)
            if isinstance(t, str):  # a name (a str's .title is a method, not words)
                self.tasks[t] = known.get(t, t)
                continue
            name = getattr(t, "name", t)
            self.tasks[name] = (
                getattr(t, "expert_title", "")
                or getattr(t, "title", "")
                or getattr(t, "output", "")
                or name
            )
        old = self.series
        self.series = {k: old.get(k, []) for k in ["total", *self.tasks, "unsup", "lambda"]}
        names = [k for k in self.series if k not in COLORS]
        self.colors = {  # legend and drawing order: total, the tasks, unsup, λ
            k: COLORS[k] if k in COLORS else TASK_COLORS[names.index(k) % len(TASK_COLORS)]
            for k in self.series
        }
        self.setToolTip(
            "How wrong the model still is on your painting (lower = better), per task: "
            + ", ".join(f"{v} ({k})" for k, v in self.tasks.items())
            + "; total loss: their sum plus the unlabeled term; learning from unlabeled "
            "tissue: the loss on the tissue you did not paint (unsup); dashed: its weight "
            "λ, 0 to 1 on the right axis"
        )

    def label(self, key: str) -> str:
        """The legend's words of a curve."""
        return NAMES.get(key) or self.tasks.get(key, key)

    def clear(self) -> None:
        for v in self.series.values():
            v.clear()
        self.offset = 0
        self.boundaries.clear()
        self.update()

    def new_run(self) -> None:
        """A continued run: keep the curves so far and draw the new run after them."""
        last = max((pts[-1][0] for pts in self.series.values() if pts), default=0.0)
        self.offset = int(last)
        if last:
            self.boundaries.append(last)
        self.update()

    def add(self, event: dict, show_lambda: bool = True) -> None:
        it = float(event["iteration"]) + self.offset
        self._supervised_only = not show_lambda
        lo = event.get("losses", {})
        self.total_iterations = self.offset + max(1, int(event.get("total", 1)))
        new = [k[4:] for k in lo if k.startswith("sup_") and k[4:] not in self.series]
        if new:  # a task the family did not name: a curve of its own
            self.set_tasks([*self.tasks, *new])
        unsup = [v for k, v in lo.items() if k.startswith("unsup_")]
        vals = {
            "total": lo.get("total"),
            **{k: lo.get(f"sup_{k}") for k in self.series if k not in COLORS},
            "unsup": sum(unsup) if unsup else None,
            "lambda": event.get("lam") if show_lambda else None,
        }
        for k, v in vals.items():
            if v is not None and math.isfinite(v):
                self.series[k].append((it, float(v)))
        self.update()

    def legend_rows(self, width: int, metrics) -> list[list[tuple[str, str]]]:
        """The legend's (key, words) laid out in rows that fit ``width`` px."""
        rows: list[list[tuple[str, str]]] = [[]]
        x = 0
        for k in self.colors:
            if self._supervised_only and k in ("unsup", "lambda"):
                continue  # no unlabeled tissue in this run: nothing to name
            text = self.label(k)
            need = 22 + metrics.horizontalAdvance(text) + 12
            if rows[-1] and x + need > width:
                rows.append([])
                x = 0
            rows[-1].append((k, text))
            x += need
        return rows

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = p.fontMetrics()
        lh = fm.lineSpacing()
        w, h = self.width(), self.height()
        rows = self.legend_rows(w - 8, fm)
        left, right = 14 + lh + fm.horizontalAdvance("0.00"), 14 + lh + fm.horizontalAdvance("1")
        top, bottom = 8, 8 + 2 * lh + len(rows) * lh
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.fillRect(0, 0, w, h, QColor("#262930"))
        p.setPen(QPen(QColor("#5a5f6a"), 1))
        p.drawRect(left, top, pw, ph)
        losses = [v for k, s in self.series.items() if k != "lambda" for _, v in s]
        ymax = max(losses) * 1.05 if losses else 1.0
        xmax = float(self.total_iterations)
        p.setPen(QColor("#b0b4bc"))
        right_align = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        p.drawText(QRectF(0, top - lh / 2, left - 3, lh), right_align, f"{ymax:.2g}")
        p.drawText(QRectF(0, top + ph - lh / 2, left - 3, lh), right_align, "0")
        p.drawText(QPointF(left + pw + 3, top + fm.ascent()), "1")
        p.drawText(QPointF(left + pw + 3, top + ph), "0")
        p.drawText(QPointF(left, top + ph + lh), "0")
        end = f"{int(xmax)}"
        p.drawText(QPointF(left + pw - fm.horizontalAdvance(end), top + ph + lh), end)
        centre = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop
        p.drawText(QRectF(left, top + ph + 2, pw, lh), centre, X_TITLE)
        p.save()  # the axis titles, turned along the axes
        p.translate(2, top + ph / 2)
        p.rotate(-90)
        p.drawText(QRectF(-ph / 2, 0, ph, lh), centre, Y_TITLE)
        p.restore()
        if not self._supervised_only:
            p.save()
            p.translate(w - 2, top + ph / 2)
            p.rotate(90)
            p.drawText(QRectF(-ph / 2, 0, ph, lh), centre, "unlabeled weight")
            p.restore()
        p.setPen(QPen(QColor("#5a5f6a"), 1, Qt.PenStyle.DotLine))
        for b in self.boundaries:  # where Continue started a new run
            x = left + pw * b / xmax
            p.drawLine(QPointF(x, top), QPointF(x, top + ph))
        for k, pts in self.series.items():
            if len(pts) < 2:
                continue
            scale = 1.0 if k == "lambda" else ymax
            pen = QPen(QColor(self.colors[k]), 1.6)
            if k == "lambda":
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            step = max(1, len(pts) // pw)  # at most one point per pixel column
            pts = pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])
            poly = [
                QPointF(left + pw * x / xmax, top + ph * (1 - min(1.0, y / scale))) for x, y in pts
            ]
            p.drawPolyline(poly)
        y = top + ph + 2 * lh + 2
        for row in rows:  # the legend: a line sample in the curve's colour, then its words
            x = 6
            for k, text in row:
                pen = QPen(QColor(self.colors[k]), 2.5)
                if k == "lambda":
                    pen.setStyle(Qt.PenStyle.DashLine)
                p.setPen(pen)
                p.drawLine(QPointF(x, y + lh / 2), QPointF(x + 16, y + lh / 2))
                p.setPen(QColor("#d6d9de"))
                p.drawText(QPointF(x + 20, y + fm.ascent()), text)
                x += 22 + fm.horizontalAdvance(text) + 12
            y += lh
        p.end()
