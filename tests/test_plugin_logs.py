"""The dock's log: one file per napari session in the project, full tracebacks there, one
readable line (naming the file) in the dock; the trainer's warnings shown in the dock."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.viewer


class FakeJob:
    """A finished training process that sent these events."""

    def __init__(self, events):
        self.events, self.finished, self.last = events, False, None

    def poll(self):
        out, self.events = self.events, []
        self.finished = True
        return out

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False


def test_a_training_crash_is_one_line_in_the_dock_and_a_traceback_in_the_log(ui):
    viewer, widget, proj = ui
    logs = sorted((proj / "logs").glob("napari-*.log"))
    assert len(logs) == 1 and widget.session.log_path == logs[0]
    tb = 'Traceback (most recent call last):\n  File "train.py", line 1\nRuntimeError: bad kernel'
    tp = widget.train_panel
    tp.job = FakeJob(
        [
            {"kind": "log", "level": 30, "name": "napari_semimoe.core.train", "message": "slow"},
            {"kind": "error", "message": "RuntimeError: bad kernel", "traceback": tb},
        ]
    )
    tp._poll_training()
    status = widget.status.text()
    assert status == f"training failed: RuntimeError: bad kernel (details: {logs[0]})"
    for h in __import__("logging").getLogger("napari_semimoe").handlers:
        h.flush()
    text = logs[0].read_text()
    assert tb in text  # the whole traceback, not dropped
    assert "napari_semimoe.core.train: slow" in text  # the child's own log record
    assert tp.start_btn.isEnabled()


def test_the_trainers_warning_is_shown_in_the_dock(ui):
    viewer, widget, proj = ui
    tp = widget.train_panel
    assert not tp.warning_label.isVisibleTo(tp)
    msg = "no unlabeled images: this run trains supervised only (λ stays 0)"
    tp.job = FakeJob(
        [
            {"kind": "warning", "iteration": 0, "total": 4, "message": msg},
            {"kind": "exit", "result": "done", "run_dir": str(proj / "runs" / "run-001")},
        ]
    )
    tp._poll_training()
    assert tp.warning_label.isVisibleTo(tp) and msg in tp.warning_label.text()
    assert "warning" in (widget.session.log_path.read_text().lower())
    assert tp.eta_label.text() == "training finished"


def test_two_docks_of_one_session_share_the_log_and_closing_releases_it(tmp_path):
    import logging

    from napari_semimoe.plugin.session_log import SessionLog

    root = logging.getLogger("napari_semimoe")
    before = len(root.handlers)
    a, b = SessionLog(), SessionLog()
    pa, pb = a.open_in(tmp_path), b.open_in(tmp_path)
    assert pa == pb and pa.parent == tmp_path / "logs" and pa.name.startswith("napari-")
    assert len(root.handlers) == before + 1  # one handler: no line written twice
    root.info("one line")
    a.close()
    root.info("still logged")
    b.close()
    assert len(root.handlers) == before
    root.info("not logged")
    text = pa.read_text()
    assert text.count("one line") == 1 and "still logged" in text and "not logged" not in text
