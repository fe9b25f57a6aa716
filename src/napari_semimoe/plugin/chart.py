"""A small live line chart (QPainter): no plotting dependency, cheap to repaint."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Colours of the task curves, in the family's task order (Semi-MoE: seg, sdf, bnd).
TASK_COLORS = ("#e8a33d", "#4cb5f5", "#b05cd6", "#f5d547", "#5ad1c8", "#e86d9e")
#: Colours of the curves every run has.
COLORS = {"total": "#f0f0f0", "unsup": "#7bd389", "lambda": "#ff6b6b"}


class LossChart(QWidget):
    """Loss curves per task (supervised), total, unsupervised total and λ (right axis 0-1).

    The tasks are the run's model family's (:meth:`set_tasks`), read from its loss log
    (``sup_<task>``, ``unsup_<task>``); a task the family did not name that appears in the
    log gets a curve of its own, so no family is drawn wrong."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.tasks: dict[str, str] = {}  # task name -> its title (the tooltip)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.colors: dict[str, str] = {}
        self.set_tasks([])
        self.total_iterations = 1
        self.offset = 0  # iterations of the earlier runs shown (Continue appends)
        self.boundaries: list[float] = []  # where each continued run began

    def set_tasks(self, tasks) -> None:
        """The curves of a family's tasks: ``tasks`` is a sequence of Task-like objects
        (``name``, ``title``) or of names; the curves drawn so far of those tasks (and the
        total, unsup and λ) are kept."""
        self.tasks = {}
        for t in tasks:
            name = getattr(t, "name", t)
            self.tasks[name] = getattr(t, "title", "") or getattr(t, "output", "") or name
        old = self.series
        self.series = {k: old.get(k, []) for k in ["total", *self.tasks, "unsup", "lambda"]}
        names = [k for k in self.series if k not in COLORS]
        self.colors = {  # legend and drawing order: total, the tasks, unsup, λ
            k: COLORS[k] if k in COLORS else TASK_COLORS[names.index(k) % len(TASK_COLORS)]
            for k in self.series
        }
        self.setToolTip(
            "supervised loss per task: "
            + ", ".join(f"{k} = {v}" for k, v in self.tasks.items())
            + "; unsup: the unlabeled tiles' loss; λ: its weight"
            if self.tasks
            else ""
        )

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

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 34, 30, 8, 30
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.fillRect(0, 0, w, h, QColor("#262930"))
        p.setPen(QPen(QColor("#5a5f6a"), 1))
        p.drawRect(left, top, pw, ph)
        losses = [v for k, s in self.series.items() if k != "lambda" for _, v in s]
        ymax = max(losses) * 1.05 if losses else 1.0
        xmax = float(self.total_iterations)
        p.setPen(QColor("#b0b4bc"))
        p.drawText(2, top + 10, f"{ymax:.2g}")
        p.drawText(2, top + ph, "0")
        p.drawText(left + pw + 4, top + 10, "λ 1")
        p.drawText(left, h - 16, "0")
        p.drawText(left + pw - 40, h - 16, f"{int(xmax)} it")
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
        x = left
        for k, c in self.colors.items():
            p.setPen(QColor(c))
            label = "λ" if k == "lambda" else k
            p.drawText(x, h - 3, label)
            x += 8 + 7 * len(label)
        p.end()
