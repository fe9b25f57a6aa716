"""Progress and cancel for work running in a thread: the worker writes plain numbers and a
flag (no Qt calls off the main thread); a main-thread timer copies them to the bar."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar, QPushButton, QWidget


class ProgressJob:
    def __init__(self, bar: QProgressBar, cancel_btn: QPushButton, parent: QWidget) -> None:
        self.bar, self.cancel_btn = bar, cancel_btn
        self.state = {"done": 0, "total": 0}
        self.cancelled = False
        self.timer = QTimer(parent)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self.show)

    def show(self) -> None:
        if self.state["total"]:
            self.bar.setRange(0, self.state["total"])
            self.bar.setValue(self.state["done"])

    def progress(self, done: int, total: int) -> None:
        """Worker thread: report ``done`` of ``total`` steps."""
        self.state.update(done=done, total=total)

    def cancel(self) -> None:
        self.cancelled = True

    def start(self) -> None:
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.cancel_btn.setEnabled(True)
        self.timer.start()

    def finish(self) -> None:
        self.timer.stop()
        self.show()
        self.cancel_btn.setEnabled(False)
