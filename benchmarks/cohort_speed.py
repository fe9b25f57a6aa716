"""Cohort engine speed: (a) one synthetic 20,000^2 pyramid, today's ``predict`` vs the
cohort path, in one run; (b) the engine's overhead: 8 slides on a LocalCluster of 2
single-thread workers vs the best single-process run on the same 2 cores.

(a) ``predict --tissue-only`` (native-size TIFFs) runs in a child process; the cohort path
(OME-Zarr at working scale) runs on a LocalCluster of ``--workers`` single-thread workers.
Reported: wall times and their ratio, the share of the workers' time spent in the network
(sum of the time in ``Predictor.predict_batch`` over workers x wall), peak RSS per worker.
(b) the same 8 small slides: the cohort's wall time vs one process predicting them one
after another (``Predictor.predict_region_reader``: network, reading and merging only, no
writing), with 1 and with 2 torch threads; the better of the two is the baseline.

    nice -n 5 python benchmarks/cohort_speed.py --json docs/benchmarks/cohort_speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _slide(path: Path, size: int, patch: np.ndarray) -> None:
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles

    n = patch.shape[0]

    def tile_fn(y: int, x: int, h: int, w: int) -> np.ndarray:
        # Tissue in a disc covering ~half the slide, glass elsewhere (as big_slide.py).
        yy, xx = np.mgrid[y : y + h, x : x + w]
        r = np.hypot(yy - size / 2, xx - size / 2) < 0.4 * size
        out = np.full((h, w, 3), 245, np.uint8)
        tex = patch[yy % n, xx % n]
        out[r] = tex[r]
        return out

    if not path.exists():
        levels = max(1, int(np.log2(size / 512)))
        write_pyramid_tiles(path, (size, size), tile_fn, levels=levels, tile=512, mpp=0.25)


def _worker_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cohort(run, slides, out, workers: int, block: int = 2048, threads: int = 1) -> dict:
    from distributed import Client, LocalCluster

    from napari_semimoe.core.cohort import CohortOptions, run_cohort

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.wait_for_workers(workers)
    t_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        s = run_cohort(
            run, slides, out, CohortOptions(threads_per_worker=threads, block=block), client=client
        )
        wall = time.perf_counter() - t0
        peaks = list(client.run(_worker_peak_mb).values())
    finally:
        client.close()
        cluster.close()
    bad = [r.error for r in s.slides if r.status != "done"]
    if bad:
        raise SystemExit(f"cohort failed: {bad}")
    net = sum(r.network_seconds for r in s.slides)
    return {
        "cluster_start_s": round(t_start, 1),
        "wall_s": round(wall, 1),
        "tiles": sum(r.tiles for r in s.slides),
        "network_s_all_workers": round(net, 1),
        "network_share": round(net / (wall * workers), 3),
        "threads_per_worker": threads,
        "peak_rss_per_worker_mb": [round(p, 1) for p in peaks],
    }


def _predict(run, slide, out: Path, src: Path | None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``predict --tissue-only`` in a child process, of
    this checkout or (``src``) of an older one."""
    import os

    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src) / "src")
    cmd = [sys.executable, "-m", "napari_semimoe.cli"]
    cmd += ["predict", str(run), str(slide), "--out", str(out), "--tissue-only"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"predict failed: {proc.stderr[-2000:]}")
    # RUSAGE_CHILDREN is the largest child so far: each predict runs before the cohort.
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _single(run, slides, threads: int) -> float:
    from napari_semimoe.core.inference import (
        PredictOptions,
        Predictor,
        load_model,
        working_reader,
        working_tissue,
    )
    from napari_semimoe.core.slide import open_slide

    p = Predictor(load_model(run), PredictOptions(threads=threads, tissue_only=True))
    t0 = time.perf_counter()
    for path in slides:
        with open_slide(path) as sl:
            shape = p.m.geometry.working_shape(sl.shape)
            tissue = working_tissue(sl, shape)
            p.predict_region_reader(working_reader(sl, shape), shape, tissue=tissue)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--scale", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--small", type=int, default=6000, help="side of the 8 slides of (b)")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--block", type=int, default=2048, help="the cohort's block side")
    ap.add_argument("--threads-per-worker", type=int, default=1, help="torch threads per worker")
    ap.add_argument(
        "--train-iterations",
        type=int,
        default=1,
        help="train the benchmark's model this long on the synthetic tissue (1: an untrained "
        "network, whose noisy mask has thousands of specks to label; 300: gland-like output)",
    )
    ap.add_argument(
        "--old-src",
        type=Path,
        help="also time `predict` of this older checkout (its src/ on PYTHONPATH): the "
        "version before the cohort engine, e.g. a worktree of 06b3f56^",
    )
    ap.add_argument("--cohort-only", action="store_true", help="(a) without today's predict")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.sample import synthetic_he

    work = args.workdir or Path(tempfile.mkdtemp(prefix="semimoe-cohort-"))
    work.mkdir(parents=True, exist_ok=True)
    patch, mask = synthetic_he(1536)
    run = work / ("run" if args.train_iterations == 1 else f"run-{args.train_iterations}")
    if not (run / "checkpoint.safetensors").exists():
        s = int(args.scale)
        img, m = patch[::s, ::s], mask[::s, ::s]
        cfg = TrainConfig(
            iterations=args.train_iterations,
            geometry=Geometry(scale=args.scale, tile=128).to_dict(),
            compile="off",
        )
        Trainer(cfg, TrainingSet([img], [m], [img]), run).run()
    report: dict = {
        "cores": torch.get_num_threads(),
        "workers": args.workers,
        "train_iterations": args.train_iterations,
    }

    if not args.skip_a:
        big = work / "big.tif"
        t0 = time.perf_counter()
        _slide(big, args.size, patch)
        report["write_slide_s"] = round(time.perf_counter() - t0, 1)
        a: dict = {"slide_px": [args.size, args.size], "working_scale": args.scale}
        if args.old_src:
            t_before, rss = _predict(run, big, work / "predict-before", args.old_src)
            a["predict_before_cohort_wall_s"] = round(t_before, 1)
            a["predict_before_cohort_peak_rss_mb"] = round(rss, 1)
        if not args.cohort_only:
            t_old, rss = _predict(run, big, work / "predict", None)
            a["predict_wall_s"] = round(t_old, 1)
            a["predict_peak_rss_mb"] = round(rss, 1)
        out_new = work / "cohort"
        shutil.rmtree(out_new, ignore_errors=True)
        new = _cohort(run, [big], out_new, args.workers, args.block, args.threads_per_worker)
        a["block"] = args.block
        a["cohort"] = new
        if "predict_wall_s" in a:
            a["speedup"] = round(a["predict_wall_s"] / new["wall_s"], 2)
        if "predict_before_cohort_wall_s" in a:
            before = a["predict_before_cohort_wall_s"]
            a["speedup_vs_before_cohort"] = round(before / new["wall_s"], 2)
        report["a"] = a
        print(json.dumps(report["a"]), flush=True)

    if args.skip_b:
        print(json.dumps(report, indent=1))
        if args.json:
            from napari_semimoe.core.atomic import atomic_write_json

            atomic_write_json(args.json, report)
        return 0
    small = []
    for i in range(8):
        p = work / f"small{i}.tif"
        _slide(p, args.small, np.roll(patch, 211 * i, axis=(0, 1)))
        small.append(p)
    single = {t: round(_single(run, small, t), 1) for t in (1, 2)}
    out_b = work / "cohort8"
    shutil.rmtree(out_b, ignore_errors=True)
    c8 = _cohort(run, small, out_b, 2)
    best = min(single.values())
    report["b"] = {
        "slides": 8,
        "slide_px": [args.small, args.small],
        "single_process_s": {f"{t}_threads": v for t, v in single.items()},
        "cohort_2x1_s": c8["wall_s"],
        "cohort": c8,
        "throughput_ratio": round(best / c8["wall_s"], 2),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        from napari_semimoe.core.atomic import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
