"""Sparse painting on GlaS: half of each labeled image's glands painted, the rest of the
image taken as background (today) or as unknown (ignored by the supervised losses).

Per seed S the labeled set is the one ``train --labeled 8 --seed S`` picks from GlaS train
(``choose_labeled``); in each labeled image a random half of the glands (by instance,
``round(n / 2)`` of n, at least one, drawn with seed 1000 + S) stays painted. Two data
folders per seed, both with every train image (only the 8 labeled ones have a mask, so the
other 77 are the unlabeled pool and ``--labeled 8 --seed S`` takes exactly these 8):

- ``background``: the painted glands, everything else 0 (what the dock does today);
- ``unknown``: the painted glands, the true background within ``--ring`` native px (30) of
  a painted gland as painted background (a user outlining a gland paints a band of
  background around it; 30 px ~ a third of a gland's diameter at GlaS's scale), everything
  else 255 = unknown, trained with ``--unknown-value 255``.

Both arms train with the same command otherwise (Semi-MoE, 128² input, 1 thread each, two
runs side by side under nice), are evaluated on testA at native resolution (``evaluate``,
threshold 0.5, final checkpoint), and the paired differences (unknown - background) of
pooled Dice and object F1 get a mean and a 95 % t-interval over the seeds. Results go to
``OUT/results.json`` after every evaluation, so a partly finished run can be read.

    nohup nice -n 5 python benchmarks/glas_sparse.py --train ../shared/data/glas/train \
        --test ../shared/data/glas/testA --seeds 0 1 2 --iterations 800 \
        --out /tmp/glas-sparse > /tmp/glas-sparse/driver.log 2>&1 &
    python benchmarks/glas_sparse.py --report /tmp/glas-sparse/results.json [more.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_semimoe.core.atomic import atomic_write_json
from napari_semimoe.core.data import choose_labeled, scan_folder
from napari_semimoe.core.slide import read_mask

#: Two-sided 95 % t quantiles by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
UNKNOWN_VALUE = 255
ARMS = ("background", "unknown")


def sparse_masks(gt: np.ndarray, rng: np.random.Generator, ring: int) -> dict[str, np.ndarray]:
    """The two arms' masks of one instance mask: half of its glands kept (relabelled 1..k)."""
    ids = [int(i) for i in np.unique(gt) if i > 0]
    k = max(1, round(len(ids) / 2))
    keep = sorted(rng.choice(ids, size=k, replace=False).tolist())
    painted = np.zeros(gt.shape, np.uint8)
    for n, i in enumerate(keep, 1):
        painted[gt == i] = n
    near = ndi.distance_transform_edt(painted == 0) <= ring
    unknown = np.full(gt.shape, UNKNOWN_VALUE, np.uint8)
    unknown[near & (gt == 0)] = 0
    unknown[painted > 0] = painted[painted > 0]
    return {"background": painted, "unknown": unknown}


def build_folders(train: Path, seed: int, ring: int, out: Path) -> dict:
    """Data folders of both arms for ``seed``; returns what was painted."""
    from PIL import Image

    items = scan_folder(train)
    labeled, _ = choose_labeled(items, n=8, seed=seed)
    rng = np.random.default_rng(1000 + seed)
    info = {"labeled": [it.name for it in labeled], "glands": {}, "pixels": {}}
    dirs = {arm: out / "data" / f"s{seed}_{arm}" for arm in ARMS}
    for d in dirs.values():
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "masks").mkdir(parents=True, exist_ok=True)
        for it in items:
            link = d / "images" / it.image_path.name
            if not link.exists():
                os.symlink(it.image_path.resolve(), link)
    counts = {"painted_gland": 0, "painted_background": 0, "unknown": 0, "total": 0}
    for it in labeled:
        gt = read_mask(it.mask_path)
        masks = sparse_masks(gt, rng, ring)
        n_all = len([i for i in np.unique(gt) if i > 0])
        info["glands"][it.name] = [int(masks["background"].max()), n_all]
        u = masks["unknown"]
        counts["painted_gland"] += int(((u > 0) & (u != UNKNOWN_VALUE)).sum())
        counts["painted_background"] += int((u == 0).sum())
        counts["unknown"] += int((u == UNKNOWN_VALUE).sum())
        counts["total"] += u.size
        for arm in ARMS:
            Image.fromarray(masks[arm]).save(dirs[arm] / "masks" / f"{it.name}.png")
    info["pixels"] = counts
    return {"info": info, "dirs": {a: str(d) for a, d in dirs.items()}}


def run_arm(args, seed: int, arm: str, data: str) -> dict:
    """Train one arm of one seed, then evaluate its final checkpoint on the test folder."""
    py = [sys.executable, "-m", "napari_semimoe.cli"]
    run = args.out / "runs" / f"s{seed}_{arm}"
    log = args.out / f"s{seed}_{arm}.log"
    cmd = py + ["train", "--data", data, "--labeled", "8", "--seed", str(seed)]
    cmd += ["--input-size", str(args.input_size), "--iterations", str(args.iterations)]
    cmd += ["--width", str(args.width), "--threads", "1", "--out", str(run)]
    if arm == "unknown":
        cmd += ["--unknown-value", str(UNKNOWN_VALUE)]
    if (run / "checkpoint.safetensors").exists():
        cmd = py + ["train", "--resume", str(run), "--iterations", str(args.iterations)]
        cmd += ["--threads", "1"]
    ev_json = args.out / f"s{seed}_{arm}_eval.json"
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, stdout=fh, stderr=fh, check=True)
        t1 = time.time()
        ecmd = py + ["evaluate", str(run), "--data", str(args.test), "--threads", "1"]
        ecmd += ["--json", str(ev_json)]
        fh.write(" ".join(ecmd) + "\n")
        fh.flush()
        subprocess.run(ecmd, stdout=fh, stderr=fh, check=True)
    ev = json.loads(ev_json.read_text())
    return {
        "seed": seed,
        "arm": arm,
        "train_s": round(t1 - t0),
        "eval_s": round(time.time() - t1),
        "command": " ".join(cmd),
        "dice_pooled": ev["dice_pooled"],
        "object_f1": ev["object_f1"],
        "metrics": ev,
    }


def summary(runs: list[dict]) -> dict:
    """Paired differences (unknown - background) per seed, their mean and 95 % t-interval."""
    by = {(r["seed"], r["arm"]): r for r in runs}
    seeds = sorted({s for s, a in by if (s, "background") in by and (s, "unknown") in by})
    out: dict = {"seeds": seeds}
    for key in ("dice_pooled", "object_f1"):
        d = [100 * (by[(s, "unknown")][key] - by[(s, "background")][key]) for s in seeds]
        entry: dict = {"differences": d}
        if d:
            entry["mean"] = float(np.mean(d))
        if len(d) >= 2:
            half = T975[len(d) - 1] * float(np.std(d, ddof=1)) / math.sqrt(len(d))
            entry["ci95"] = [entry["mean"] - half, entry["mean"] + half]
        out[key] = entry
    return out


def merge(reports: list[dict]) -> dict:
    """One report from several results.json files (e.g. a seed rerun in another folder): a
    finished run wins over a failed one of the same seed and arm."""
    done: dict[tuple[int, str], dict] = {}
    for rep in reports:
        for r in rep["runs"]:
            key = (r["seed"], r["arm"])
            if key not in done or "error" in done[key]:
                done[key] = r
    return {"runs": [done[k] for k in sorted(done)]}


def table(report: dict) -> str:
    """Markdown table of a results.json: per seed both arms and the paired difference."""
    runs = [r for r in report["runs"] if "error" not in r]
    by = {(r["seed"], r["arm"]): r for r in runs}
    rows = [
        "| seed | Dice background | Dice unknown | Δ Dice | F1 background | F1 unknown | Δ F1 |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(r, key):
        return "—" if r is None else f"{100 * r[key]:.2f}"

    def diff(b, u, key):
        return "—" if b is None or u is None else f"{100 * (u[key] - b[key]):+.2f}"

    for seed in sorted({r["seed"] for r in runs}):
        b, u = by.get((seed, "background")), by.get((seed, "unknown"))
        rows.append(
            f"| {seed} | {cell(b, 'dice_pooled')} | {cell(u, 'dice_pooled')} | "
            f"{diff(b, u, 'dice_pooled')} | {cell(b, 'object_f1')} | {cell(u, 'object_f1')} | "
            f"{diff(b, u, 'object_f1')} |"
        )
    sm = summary(runs)
    for key, name in (("dice_pooled", "Dice"), ("object_f1", "object F1")):
        e = sm[key]
        if "mean" in e:
            ci = e.get("ci95")
            ci_s = f", 95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else " (one seed: no interval)"
            rows.append(
                f"\nmean Δ {name} (unknown − background) over seeds {sm['seeds']}: "
                f"{e['mean']:+.2f}{ci_s}"
            )
    errors = [r for r in report["runs"] if "error" in r]
    rows += [f"\nfailed: seed {r['seed']} {r['arm']}: {r['error']}" for r in errors]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, help="GlaS train folder (images/, masks/)")
    ap.add_argument("--test", type=Path, help="GlaS testA folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--ring", type=int, default=30, help="painted background around a gland")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/glas-sparse"))
    ap.add_argument(
        "--report", type=Path, nargs="+", help="only print the table of these results.json files"
    )
    args = ap.parse_args()
    if args.report:
        print(table(merge([json.loads(f.read_text()) for f in args.report])))
        return 0
    if args.train is None or args.test is None:
        ap.error("--train and --test are needed (or --report FILES)")
    if not (args.train / "images").is_dir() or not (args.test / "images").is_dir():
        print("no GlaS data; nothing to do", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "sets": {}, "runs": []}
    jobs = []
    for seed in args.seeds:
        built = build_folders(args.train, seed, args.ring, args.out)
        report["sets"][str(seed)] = built["info"]
        jobs += [(seed, arm, built["dirs"][arm]) for arm in ARMS]
    results = args.out / "results.json"
    atomic_write_json(results, report)

    def one(job):
        seed, arm, data = job
        try:
            r = run_arm(args, seed, arm, data)
        except subprocess.CalledProcessError as exc:
            r = {"seed": seed, "arm": arm, "error": str(exc)}
        report["runs"].append(r)
        report["summary"] = summary([x for x in report["runs"] if "error" not in x])
        atomic_write_json(results, report)
        print(json.dumps({k: v for k, v in r.items() if k != "metrics"}), flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, jobs))
    print(json.dumps(report.get("summary"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
