"""Progress and cancel for work running in a thread: the worker writes plain numbers and a
flag (no Qt calls off the main thread); a main-thread timer copies them to the bar."""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar, QPushButton, QWidget


class ProgressJob:
    def __init__(
        self, bar: QProgressBar, cancel_btn: QPushButton, parent: QWidget, unit: str = "tiles"
    ) -> None:
        self.bar, self.cancel_btn = bar, cancel_btn
        self.fmt = f"%v / %m {unit}"
        self.state = {"done": 0, "total": 0}
        self.cancelled = False
        self._t0 = time.monotonic()
        self.timer = QTimer(parent)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self.show)

    def show(self) -> None:
        done, total = self.state["done"], self.state["total"]
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            if 0 < done < total:
                left = (time.monotonic() - self._t0) * (total - done) / done
                self.bar.setFormat(f"{self.fmt} · ETA {fmt_time(left)}")
            else:
                self.bar.setFormat(self.fmt)

    def progress(self, done: int, total: int) -> None:
        """Worker thread: report ``done`` of ``total`` steps."""
        self.state.update(done=done, total=total)

    def cancel(self) -> None:
        self.cancelled = True

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.bar.setFormat(self.fmt)
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.cancel_btn.setEnabled(True)
        self.timer.start()

    def finish(self) -> None:
        self.timer.stop()
        self.show()
        if not self.state["total"]:  # nothing was reported: leave the busy animation
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            self.bar.setFormat("nothing to do")
        self.cancel_btn.setEnabled(False)


def fmt_time(seconds: float) -> str:
    """1m05s, 2h03m."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
