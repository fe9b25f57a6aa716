"""Paired multi-seed study of the multi-class families (issue 16): DCA vs multi-class Semi-MoE
vs supervised-only, and DCA's two ablations (equal-thirds split, averaging instead of DFAM).

Every arm of one seed trains on the same labeled images (10 % per class: at least one
labeled image of every class, ``choose_labeled``), the rest of the training split unlabeled,
everything else equal; each final checkpoint is evaluated at threshold 0.5 on the held-out
split. Runs go through the command line (``train`` then ``evaluate --json``) in ``--lanes``
parallel processes of one torch thread each, and a finished run is never redone, so the study
can be stopped and started again. ``--report`` only collects what is there.

    python benchmarks/multiclass_data.py ebhi /tmp/mc
    python benchmarks/multiclass_study.py ebhi7 --data /tmp/mc --runs /tmp/mcruns
    python benchmarks/multiclass_study.py ebhi7 --data /tmp/mc --runs /tmp/mcruns --report \\
        --json docs/benchmarks/multiclass_ebhi7.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: arm -> extra train options (the common ones are in ``_train``).
ARMS: dict[str, list[str]] = {
    "supervised": ["--family", "semimoe", "--supervised-only"],
    "semimoe": ["--family", "semimoe"],
    "dca": ["--family", "dca"],
    "dca-thirds": ["--family", "dca", "--dca-split", "thirds"],
    "dca-average": ["--family", "dca", "--dca-fusion", "average"],
}
#: the training and the held-out split of each task's data folder.
TASKS = {"ebhi7": ("train", "val"), "glas3": ("train", "testA")}


def _train(task: str, arm: str, seed: int, args) -> Path:
    run = args.runs / task / f"{arm}-s{seed}"
    metrics = run / "metrics.json"
    if metrics.exists():
        return run
    train, held = TASKS[task]
    data = args.data / task
    done = run / "done.json"
    if not done.exists():
        cmd = [sys.executable, "-m", "napari_semimoe.cli", "train", "--data", str(data / train),
               *ARMS[arm], "--labeled-fraction", str(args.fraction), "--seed", str(seed),
               "--iterations", str(args.iterations), "--input-size", str(args.input_size),
               "--width", str(args.width), "--threads", "1", "--out", str(run)]  # fmt: skip
        if (run / "checkpoint.safetensors").exists():  # stopped earlier: go on from there
            cmd = [sys.executable, "-m", "napari_semimoe.cli", "train", "--resume", str(run),
                   "--threads", "1"]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        last = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        if res.returncode or last.get("result") != "done":
            raise RuntimeError(f"{run}: {res.stderr.strip().splitlines()[-1:]}")
        done.write_text(json.dumps(last))
    tmp = run / "metrics.json.tmp"
    subprocess.run(
        [sys.executable, "-m", "napari_semimoe.cli", "evaluate", str(run), "--data",
         str(data / held), "--threads", "1", "--json", str(tmp)],
        check=True, capture_output=True,
    )  # fmt: skip
    tmp.rename(metrics)
    return run


def _wall(run: Path) -> float:
    """Training wall time (the last session's, as train reports it)."""
    done = run / "done.json"
    return (
        float(json.loads(done.read_text()).get("wall_time_s", math.nan))
        if done.exists()
        else math.nan
    )


def _interval(d: np.ndarray) -> dict:
    """Mean and 95 % t-interval of paired differences (and the differences)."""
    from scipy import stats

    m = float(d.mean())
    h = math.nan
    if d.size >= 2:
        h = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"mean": m, "lo": m - h, "hi": m + h, "per_seed": d.tolist()}


def report(task: str, args) -> dict:
    rows: dict[str, dict[int, dict]] = {}
    for arm in args.arms:
        for seed in args.seeds:
            f = args.runs / task / f"{arm}-s{seed}" / "metrics.json"
            if f.exists():
                m = json.loads(f.read_text())
                m["train_wall_s"] = _wall(f.parent)
                rows.setdefault(arm, {})[seed] = m
    if not rows:
        print("no finished run yet")
        return {}
    classes = next(iter(next(iter(rows.values())).values()))["classes"][1:]
    keys = [f"dice[{c}]" for c in classes] + ["dice_mean_classes", "dice_pooled"]
    out: dict = {"task": task, "settings": vars_of(args), "arms": {}, "paired": {}}
    print(f"\n{task}: mean over seeds (Dice %, threshold 0.5, final checkpoint)")
    head = ["arm", "seeds", *[c[:12] for c in classes], "mean fg", "rare", "union", "min"]
    print(" | ".join(head))
    for arm, by_seed in rows.items():
        ms = list(by_seed.values())
        summary = {k: float(np.mean([m[k] for m in ms])) for k in keys}
        sd = [m["dice_mean_classes"] for m in ms]
        summary["std_mean_classes"] = float(np.std(sd, ddof=1)) if len(ms) > 1 else math.nan
        summary["train_wall_s"] = float(np.mean([m["train_wall_s"] for m in ms]))
        summary["seeds"] = sorted(by_seed)
        summary["per_seed"] = {s: {k: m.get(k) for k in keys} | {"split": m.get("split")}
                               for s, m in by_seed.items()}  # fmt: skip
        out["arms"][arm] = summary
        cells = [f"{100 * summary[f'dice[{c}]']:.1f}" for c in classes]
        rare_mean = np.mean([summary[f"dice[{c}]"] for c in args.rare]) if args.rare else np.nan
        summary["dice_rare_mean"] = float(rare_mean)
        print(" | ".join([arm, str(len(ms)), *cells, f"{100 * summary['dice_mean_classes']:.1f}",
                          f"{100 * rare_mean:.1f}", f"{100 * summary['dice_pooled']:.1f}",
                          f"{summary['train_wall_s'] / 60:.0f}"]))  # fmt: skip
    rare = args.rare or []  # one fixed list for all arms: the rarest in the held-out masks
    pairs = [("dca", "semimoe"), ("dca", "supervised"), ("semimoe", "supervised"),
             ("dca", "dca-thirds"), ("dca", "dca-average")]  # fmt: skip
    print("\npaired differences (points), mean [95 % interval] over seeds")
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        seeds = sorted(set(rows[a]) & set(rows[b]))
        if not seeds:
            continue
        res = {}
        for k in ["dice_mean_classes", "dice_pooled", *[f"dice[{c}]" for c in rare]]:
            d = np.array([100 * (rows[a][s][k] - rows[b][s][k]) for s in seeds])
            res[k] = _interval(d)
        if rare:
            d = np.array([100 * np.mean([rows[a][s][f"dice[{c}]"] - rows[b][s][f"dice[{c}]"]
                                         for c in rare]) for s in seeds])  # fmt: skip
            res["rare_mean"] = _interval(d)
        out["paired"][f"{a} - {b}"] = res | {"seeds": seeds}
        txt = ", ".join(
            f"{k} {v['mean']:+.1f} [{v['lo']:+.1f}, {v['hi']:+.1f}]" for k, v in res.items()
        )
        print(f"{a} - {b} (seeds {seeds}): {txt}")
    return out


def vars_of(args) -> dict:
    return {"fraction": args.fraction, "iterations": args.iterations,
            "input_size": args.input_size, "width": args.width, "seeds": args.seeds,
            "rare": args.rare}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--data", type=Path, default=Path("/tmp/mc"))
    ap.add_argument("--runs", type=Path, default=Path("/tmp/mcruns"))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--rare", nargs="*", help="the rare classes whose mean is reported")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.report:
        jobs = [(a, s) for s in args.seeds for a in args.arms]  # seed-major: pairs finish first
        with ThreadPoolExecutor(args.lanes) as pool:
            for run in pool.map(lambda j: _train(args.task, j[0], j[1], args), jobs):
                print("done", run, flush=True)
    out = report(args.task, args)
    if args.json and out:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
