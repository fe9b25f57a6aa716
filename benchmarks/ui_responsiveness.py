"""UI responsiveness while Semi-MoE trains (and while it predicts), under Xvfb.

A 10 ms repeating QTimer measures how late the event loop runs it; meanwhile the camera
pans and zooms and the brush paints into the annotations every 50 ms, as a user would.
Reports the longest stall and the 99th percentile of tick gaps per phase, and for the
ticks over 100 ms what ran inside them (garbage collection, the widget's training poll,
the live preview's layer update, the simulated user's own actions) so a stall can be
blamed on its cause. The live preview (a prediction of the view at each checkpoint,
``--checkpoint-every``) is on as in the dock; ``--no-preview`` turns it off to compare.
When training ends the dock predicts the view: that is a phase of its own.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/ui_responsiveness.py \
        --json docs/benchmarks/ui.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--idle-seconds",
        type=float,
        default=60.0,
        help="baseline length: long enough that rare stalls show up in it too",
    )
    ap.add_argument(
        "--no-interact",
        action="store_true",
        help="timer only: isolates stalls caused by the background work",
    )
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=5,
        help="checkpoints (so live previews) every N iterations (the dock's default is 25)",
    )
    ap.add_argument("--no-preview", action="store_true", help="live preview off")
    ap.add_argument("--width", type=int, help="model width (default: the dock's)")
    args = ap.parse_args()

    from napari_semimoe.plugin.panels import train

    train.DOCK_OVERRIDES["checkpoint_every"] = args.checkpoint_every

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from gui_session import open_session
    from napari_semimoe.plugin.widget import camera

    viewer, widget, _pump = open_session("semimoe-ui-")
    widget.train_panel.iter_spin.setValue(args.iterations)
    if args.width:
        widget.train_panel.width_spin.setValue(args.width)
    app = QApplication.instance()

    gaps: list[float] = []
    when: list[tuple[float, str]] = []  # (seconds into the phase, what the widget showed)
    last = [time.perf_counter()]
    t_phase = [time.perf_counter()]

    busy: list[tuple[float, float, str]] = []  # (start, end, what) of main-thread work

    def timed(fn, what: str):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                busy.append((t0, time.perf_counter(), what))

        return wrapped

    gc_start = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            busy.append((gc_start[0], time.perf_counter(), f"gc gen{info['generation']}"))

    gc.callbacks.append(on_gc)
    widget.train_panel._poll.timeout.disconnect()
    widget.train_panel._poll.timeout.connect(
        timed(widget.train_panel._poll_training, "training poll")
    )
    widget.preview.enabled = not args.no_preview
    widget.preview._show = timed(widget.preview._show, "live preview layer update")

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        when.append((now - t_phase[0], widget.train_panel.eta_label.text()[:40]))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    rng = np.random.default_rng(0)
    labels = viewer.layers["annotations"]

    def interact() -> None:  # pan, zoom and paint like a user
        c = np.asarray(camera(viewer).center, float)
        # a random walk that stays over the slide (the dock predicts the view at the end)
        c[-2:] = np.clip(c[-2:] + rng.normal(0, 20, 2), 0, np.asarray(labels.data.shape[:2]))
        camera(viewer).center = tuple(c)
        camera(viewer).zoom = float(np.clip(camera(viewer).zoom * rng.uniform(0.95, 1.05), 0.2, 4))
        y, x = rng.integers(0, labels.data.shape[0] - 20, 2)
        labels.paint((y, x), 3, refresh=True)

    user = QTimer()
    user.setInterval(50)
    user.timeout.connect(timed(interact, "simulated user"))

    def measure(phase: str, done) -> dict:
        gaps.clear()
        when.clear()
        busy.clear()
        last[0] = t_phase[0] = time.perf_counter()
        timer.start()
        if not args.no_interact:
            user.start()
        t0 = time.perf_counter()
        while not done():
            app.processEvents()
            time.sleep(0.001)
        timer.stop()
        user.stop()
        g = np.asarray(gaps) * 1000
        ends = np.asarray([w[0] for w in when]) + t_phase[0]
        # What ran inside the ticks over 100 ms: ms per stall, averaged over those stalls.
        blame: dict[str, float] = {}
        slow = np.flatnonzero(g > 100)
        for i in slow:
            s1 = ends[i]
            s0 = s1 - g[i] / 1000
            for b0, b1, what in busy:
                ov = min(b1, s1) - max(b0, s0)
                if ov > 0:
                    blame[what] = blame.get(what, 0.0) + ov * 1000
        out = {
            "phase": phase,
            "seconds": round(time.perf_counter() - t0, 1),
            "ticks": len(g),
            "max_stall_ms": round(float(g.max()), 1),
            "p99_ms": round(float(np.percentile(g, 99)), 1),
            "median_ms": round(float(np.median(g)), 1),
            "stalls_over_100ms": int((g > 100).sum()),
            # the longest stalls: when (s into the phase) and the training status then
            "worst": [
                {"ms": round(float(g[i]), 1), "at_s": round(when[i][0], 2), "status": when[i][1]}
                for i in np.argsort(g)[::-1][:3]
            ],
            "in_stalls_over_100ms_mean_ms": {
                k: round(v / max(1, len(slow)), 1) for k, v in sorted(blame.items())
            },
        }
        print(json.dumps(out), flush=True)
        return out

    # Baseline: interaction with nothing running.
    t_end = time.perf_counter() + args.idle_seconds
    idle = "idle (timer only)" if args.no_interact else "idle (pan/zoom/paint only)"
    results = [measure(idle, lambda: time.perf_counter() > t_end)]
    widget.train_panel.start_training()
    results.append(
        measure(
            f"training {args.iterations} iterations in the child process",
            lambda: (
                widget.train_panel.job is not None
                and widget.train_panel.job.finished
                and not widget.train_panel._poll.isActive()
            ),
        )
    )
    print(json.dumps({"live_previews_shown": widget.preview.shown}), flush=True)
    results[-1]["live_previews"] = {
        "on": not args.no_preview,
        "shown": widget.preview.shown,
        "skipped_while_busy": widget.preview.skipped,
    }
    review = widget.review_panel
    results.append(
        measure(
            "the view predicted when training ends (automatic)",
            lambda: (
                not review.cancel_btn.isEnabled()
                and not review.showing_prediction
                and (
                    "prediction shown" in widget.status.text()
                    or review.pred_view_btn.isEnabled()  # none started (the view is off)
                )
            ),
        )
    )
    widget.review_panel.predict("image")
    results.append(
        measure(
            "predicting the whole sample slide (thread worker)",
            lambda: (
                not widget.review_panel.cancel_btn.isEnabled()
                and not widget.review_panel.showing_prediction
                and "prediction shown" in widget.status.text()
            ),
        )
    )
    report = {
        "results": results,
        "checkpoint_every": args.checkpoint_every,
        "interval_ms": 10,
        "interaction_every_ms": None if args.no_interact else 50,
    }
    if args.json:
        from napari_semimoe.core.checkpoint import atomic_write_json

        atomic_write_json(args.json, report)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
