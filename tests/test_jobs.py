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


def _events_until(job, pred, timeout=60.0) -> list[dict]:
    seen: list[dict] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        seen += job.poll()
        if any(pred(e) for e in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no such event in {timeout} s: {[e['kind'] for e in seen]}")


def _tiny_config(**kw) -> dict:
    from dataclasses import asdict

    from napari_semimoe.core.data import Geometry
    from napari_semimoe.core.train import TrainConfig

    base = dict(
        width=4,
        iterations=100_000,
        geometry=Geometry(input_size=32).to_dict(),
        compile="off",
        checkpoint_every=100_000,
        precision="fp32",
        threads=1,
        device="cpu",
    )
    return asdict(TrainConfig(**{**base, **kw}))


def test_training_set_file_is_data_the_reload_event_is_the_signal(small_set, tmp_path):
    """Rewriting trainset.npz is not a signal (a half-done re-cut or a backup tool touching
    the file must not reach the trainer); ``reload()`` is, and the trainer then reloads."""
    import os

    from napari_semimoe.core.trainset import save_trainset
    from napari_semimoe.plugin.training_process import TrainingJob

    path = tmp_path / "trainset.npz"
    save_trainset(path, small_set)
    job = TrainingJob(_tiny_config(), path, tmp_path / "run")
    job.start()
    try:
        _events_until(job, lambda e: e["kind"] == "iteration")
        save_trainset(path, small_set)  # a new file ...
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # ... with a new stamp
        t0 = time.monotonic()
        seen: list[dict] = []
        while time.monotonic() - t0 < 1.5:
            seen += job.poll()
            time.sleep(0.05)
        assert [e for e in seen if e["kind"] == "iteration"], "training did not go on"
        assert not [e for e in seen if e["kind"] == "data"]
        job.reload()
        got = _events_until(job, lambda e: e["kind"] == "data")
        assert [e for e in got if e["kind"] == "data"][0]["message"] == "training tiles updated"
    finally:
        job.stop()
        job.join(30)
        job.kill()


def test_the_child_forwards_tracebacks_and_log_records(tmp_path):
    """A crash in the training process reaches the GUI as one line plus its traceback."""
    from napari_semimoe.plugin.training_process import TrainingJob

    job = TrainingJob(_tiny_config(), tmp_path / "missing.npz", tmp_path / "run")
    job.start()
    events = _events_until(job, lambda e: e["kind"] == "error")
    job.join(30)
    err = [e for e in events if e["kind"] == "error"][0]
    assert "missing.npz" in err["message"] and "\n" not in err["message"]
    assert "Traceback (most recent call last)" in err["traceback"]
    assert "load_trainset" in err["traceback"]


def test_log_records_travel_as_events():
    import logging
    import queue

    from napari_semimoe.plugin.training_process import _QueueLogHandler

    q: queue.Queue = queue.Queue()
    logger = logging.getLogger("napari_semimoe.test_child")
    h = _QueueLogHandler(q)
    logger.addHandler(h)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.error("step failed", exc_info=True)
    finally:
        logger.removeHandler(h)
    e = q.get_nowait()
    assert e["kind"] == "log" and e["level"] == logging.ERROR
    assert e["name"] == "napari_semimoe.test_child"
    assert e["message"].startswith("step failed\n") and "ValueError: boom" in e["message"]
