"""Screenshots of the dock's Cohort page from a real run under Xvfb: three synthetic slides
and a corrupt one on a LocalCluster, mid-run, finished, and one result opened.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_cohort.py [OUT]
(OUT: default docs/images)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIDE = 1536  # native px of each slide; the model's working scale 2 -> 768 px


def _inputs(root: Path) -> tuple[Path, Path]:
    """A tiny model (width 4, 20 iterations) and a folder of slides."""
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.sample import synthetic_he

    patch, mask = synthetic_he(1024)
    cfg = TrainConfig(
        iterations=20, width=4, threads=1, geometry=Geometry(scale=2, tile=128).to_dict()
    )
    half, m = patch[::2, ::2], mask[::2, ::2]
    Trainer(cfg, TrainingSet([half], [m], [half]), root / "run").run()
    slides = root / "slides"
    slides.mkdir()
    reps = -(-SIDE // patch.shape[0])
    for i, name in enumerate(("case-A12", "case-B07", "case-C33")):
        img = np.tile(np.roll(patch, 211 * i, axis=(0, 1)), (reps, reps, 1))[:SIDE, :SIDE]
        write_pyramid_tiles(
            slides / f"{name}.tif",
            (SIDE, SIDE),
            lambda y, x, h, w, a=img: a[y : y + h, x : x + w],
            levels=3,
            tile=256,
            mpp=0.5,
        )
    (slides / "case-D02.tif").write_bytes((slides / "case-A12.tif").read_bytes()[:5000])
    return root / "run", slides


def main() -> int:
    from gui_session import open_session

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    run, slides = _inputs(Path(tempfile.mkdtemp(prefix="semimoe-cohort-shots-")))
    viewer, widget, pump = open_session("semimoe-cohort-shots-")
    panel = widget.cohort_panel
    widget.toolbox.setCurrentWidget(panel)
    panel.model_edit.setText(str(run))
    panel.add_sources([slides])
    panel.workers_spin.setValue(2)
    panel.threads_spin.setValue(1)
    pump(1)
    viewer.screenshot(str(out / "cohort-1-ready.png"), canvas_only=False)
    panel.start()
    while panel.running and not (panel._progress and panel._progress.tiles_done):
        pump(0.2)
    pump(1.5)
    viewer.screenshot(str(out / "cohort-2-running.png"), canvas_only=False)
    while panel.running or not panel.start_btn.isEnabled():
        pump(0.3)
    pump(0.5)
    viewer.screenshot(str(out / "cohort-3-finished.png"), canvas_only=False)
    for layer in list(viewer.layers):
        layer.visible = False
    panel.open_slide("case-B07")
    viewer.reset_view()
    pump(2)
    viewer.screenshot(str(out / "cohort-4-opened.png"), canvas_only=False)
    panel.shutdown()
    viewer.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
