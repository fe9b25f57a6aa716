"""Progress of background jobs: the bar shows done / total and an ETA from the rate so far."""

from __future__ import annotations

import time


def test_progress_job_shows_count_eta_and_cancel(qtbot):
    from qtpy.QtWidgets import QProgressBar, QPushButton, QWidget

    from napari_semimoe.plugin.jobs import ProgressJob

    parent = QWidget()
    qtbot.addWidget(parent)
    bar, btn = QProgressBar(parent), QPushButton(parent)
    job = ProgressJob(bar, btn, parent)
    job.start()
    assert btn.isEnabled() and bar.maximum() == 0  # busy until the first report
    job._t0 = time.monotonic() - 30  # 30 s for the first quarter -> 90 s left
    job.progress(25, 100)  # from the worker thread: plain numbers only
    job.show()
    assert bar.value() == 25 and bar.maximum() == 100
    assert "ETA 1m30s" in bar.format()
    job.cancel()
    assert job.cancelled
    job.progress(100, 100)
    job.finish()
    assert not btn.isEnabled() and "ETA" not in bar.format() and bar.value() == 100
