"""Predict a large synthetic pyramidal slide with bounded memory (CLI path).

Writes an H&E-like pyramid of SIZE x SIZE tile by tile, trains a 1-iteration model with a
working scale (quality is irrelevant here: this measures I/O, streaming and memory), runs
`napari-semimoe predict --tissue-only` in a child process and reports wall time, peak RSS
and output sizes.

    python benchmarks/big_slide.py --size 50000 --scale 8 --json docs/benchmarks/big_slide.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--scale", type=float, default=8.0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.slide import open_slide
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.sample import synthetic_he

    work = args.workdir or Path(tempfile.mkdtemp(prefix="semimoe-big-"))
    work.mkdir(parents=True, exist_ok=True)
    patch, mask = synthetic_he(1536)
    S = args.size

    def tile_fn(y: int, x: int, h: int, w: int) -> np.ndarray:
        # Tissue in a disc covering ~half the slide, glass elsewhere; tissue repeats the patch.
        yy, xx = np.mgrid[y : y + h, x : x + w]
        r = np.hypot(yy - S / 2, xx - S / 2) < 0.4 * S
        out = np.full((h, w, 3), 245, np.uint8)
        tex = patch[yy % 1536, xx % 1536]
        out[r] = tex[r]
        return out

    slide_path = work / "big.tif"
    t0 = time.perf_counter()
    if not slide_path.exists():
        write_pyramid_tiles(slide_path, (S, S), tile_fn, levels=7, tile=512, mpp=0.25)
    t_write = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with open_slide(slide_path) as sl:
        levels = [lv.shape for lv in sl.levels]
        t_open = time.perf_counter() - t0
        region = sl.read_region(S // 2, S // 2, 1024, 1024)  # lazy: reads only these tiles
        t_region = time.perf_counter() - t0 - t_open
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stage1 = {
        "slide_px": [S, S],
        "slide_file_mb": round(slide_path.stat().st_size / 2**20, 1),
        "write_slide_s": round(t_write, 1),
        "open_slide_s": round(t_open, 4),
        "read_1024px_region_s": round(t_region, 3),
        "region_mean": float(region.mean()),
        "peak_rss_before_open_mb": round(rss0, 1),
        "peak_rss_after_open_mb": round(rss1, 1),
    }
    print(json.dumps(stage1), flush=True)

    run = work / "run"
    if not (run / "checkpoint.safetensors").exists():
        s = args.scale
        img = patch[:: int(s), :: int(s)]
        m = mask[:: int(s), :: int(s)]
        cfg = TrainConfig(
            iterations=1, geometry=Geometry(scale=s, tile=128).to_dict(), compile="off"
        )
        Trainer(cfg, TrainingSet([img], [m], [img]), run).run()

    out = work / "pred"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "napari-semimoe"),
            "predict",
            str(run),
            str(slide_path),
            "--out",
            str(out),
            "--tissue-only",
        ],
        capture_output=True,
        text=True,
    )
    t_pred = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    outputs = {p.name: p.stat().st_size for p in sorted(out.glob("*.tif"))}
    report = {
        **stage1,
        "gigapixels": round(S * S / 1e9, 2),
        "levels": [list(lv[:2]) for lv in levels],
        "working_scale": args.scale,
        "predict_wall_s": round(t_pred, 1),
        "predict_peak_rss_mb": round(peak_mb, 1),
        "outputs_mb": {k: round(v / 2**20, 1) for k, v in outputs.items()},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        from napari_semimoe.core.checkpoint import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
