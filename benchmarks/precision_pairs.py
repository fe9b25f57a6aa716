"""Paired bf16-vs-fp32 trainings on GlaS: does the fast path's precision cost Dice?

One training moves testA Dice by 2-3 points, so a single bf16/fp32 pair cannot show a
0.5-point difference. This runs many pairs (same labeled set, seed and schedule; only
``--precision`` differs), several at a time, and reports the paired differences with a
95 % confidence interval.

    python benchmarks/precision_pairs.py --train ../shared/data/glas/train \
        --test ../shared/data/glas/testA --seeds 0-16 --iterations 2000 --input-size 128 \
        --device cuda --jobs 12 --out runs/prec --json docs/benchmarks/precision_pairs_cuda.json

``--arms bf16,fp32,fp32-literal`` adds a control: ``fp32-literal`` is the fp32 training
with the network computed in upstream's literal form (upsample then convolve, concatenate
then convolve, fused maps built) instead of the fast path's equivalent forms. Same
function, same precision, only the order of floating-point sums differs, so its paired
difference to ``fp32`` is the noise floor: how far two fp32 trainings drift apart from
rounding alone.

Test images may be stored at the working scale with native masks (a smaller copy to ship
to another machine): the maps are then resampled to the mask's size exactly as
``Predictor.predict_image`` does for a native image, so the metrics are the native ones.
Each arm is evaluated with its own precision (bf16 training -> bf16 inference, fp32 -> fp32);
bf16 models are also evaluated with fp32 inference to separate the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def evaluate(run: Path, test: Path, device: str, precision: str, hausdorff: bool) -> dict:
    """GlaS metrics of one checkpoint at the masks' (native) resolution, threshold 0.5."""
    from napari_semimoe.core.data import scan_folder
    from napari_semimoe.core.inference import PredictOptions, Predictor, load_model, resample
    from napari_semimoe.core.metrics import evaluate_pairs
    from napari_semimoe.core.slide import read_image, read_mask

    pred = Predictor(load_model(run, device), PredictOptions(precision=precision))

    def pairs():
        for it in scan_folder(test):
            image = read_image(it.image_path)
            gt = read_mask(it.mask_path)
            m = pred.predict_image(image, native=False, instances=False)
            work = m["prob"].shape
            maps = {k: resample(m[k], gt.shape) for k in ("prob", "sdf", "boundary")}
            maps["mask"] = (maps["prob"] >= pred.opt.threshold).astype(np.uint8)
            scale = gt.shape[0] * gt.shape[1] / float(work[0] * work[1])
            yield pred.instances(maps, scale=scale), gt

    return evaluate_pairs(pairs(), hausdorff=hausdorff)


#: Each arm's training precision; "fp32-literal" also computes the network literally.
ARMS = {"bf16": "bf16", "fp32": "fp32", "fp32-literal": "fp32"}


def _literal_models() -> None:
    """Every SemiMoE built from now on in this (worker) process computes its layers in
    upstream's literal form; the trainer's fast path is otherwise unchanged."""
    from napari_semimoe.core import model

    init = model.SemiMoE.__init__

    def literal_init(self, *a, **k):
        init(self, *a, **k)
        self.literal = True

    model.SemiMoE.__init__ = literal_init


def worker(args: argparse.Namespace) -> int:
    """Train one arm, then evaluate its final checkpoint and snapshots; writes result.json."""
    from napari_semimoe import cli

    arm, args.precision = args.precision, ARMS[args.precision]
    if arm == "fp32-literal":
        _literal_models()
    run = Path(args.out) / f"{arm}_s{args.seed}"
    common = ["--iterations", str(args.iterations), "--device", args.device]
    common += ["--threads", str(args.threads), "--compile", args.compile]
    common += ["--snapshot-every", str(args.snapshot_every)]
    if (run / "checkpoint.safetensors").exists():
        # A run an earlier (killed) invocation left behind: continue it, or only evaluate
        # it when it has reached its total.
        if cli._iterations_done(run) < args.iterations:
            rc = cli.main(["train", "--resume", str(run), *common])
        else:
            rc = 0
    else:
        rc = cli.main(
            [
                "train",
                "--data",
                str(args.train),
                "--labeled",
                str(args.labeled),
                "--input-size",
                str(args.input_size),
                "--seed",
                str(args.seed),
                "--precision",
                args.precision,
                *common,
                "--out",
                str(run),
            ]
        )
    if rc:
        return rc
    # The run's history holds its training time summed over every start.
    train_s = json.loads((run / "history.json").read_text())[-1]["time"]
    t_eval = time.perf_counter()
    res = {
        "seed": args.seed,
        "precision": arm,
        "train_s": round(train_s, 1),
        "final": evaluate(run, args.test, args.device, args.precision, hausdorff=True),
    }
    if args.precision == "bf16":
        res["final_fp32_inference"] = evaluate(run, args.test, args.device, "fp32", False)
    res["curve"] = {}
    for snap in sorted((run / "snapshots").glob("iter_*.safetensors")):
        it = int(snap.stem.split("_")[1])
        if it < args.iterations:
            m = evaluate(snap, args.test, args.device, args.precision, hausdorff=False)
            res["curve"][it] = m["dice_pooled"]
    res["curve"][args.iterations] = res["final"]["dice_pooled"]
    res["eval_s"] = round(time.perf_counter() - t_eval, 1)
    (run / "result.json").write_text(json.dumps(res, indent=1))
    return 0


def _interval(values) -> dict:
    """Mean, SD and t-based 95 % interval of differences given as fractions, in points."""
    from scipy import stats

    d = np.asarray(values, float) * 100  # Dice points
    m = float(d.mean())
    if len(d) < 2:
        return {"mean": round(m, 2), "per_seed": d.round(2).tolist()}
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    h = float(stats.t.ppf(0.975, len(d) - 1) * se)
    return {
        "mean": round(m, 2),
        "sd": round(float(d.std(ddof=1)), 2),
        "mean_abs": round(float(np.abs(d).mean()), 2),
        "ci95": [round(m - h, 2), round(m + h, 2)],
        "per_seed": d.round(2).tolist(),
    }


def _paired(by: dict, a: str, b: str) -> dict:
    """Differences a - b over the seeds that have both arms."""
    seeds = sorted({s for s, p in by if (s, a) in by and (s, b) in by})
    out: dict = {"pairs": len(seeds), "seeds": seeds}
    if not seeds:
        return out

    def diff(get):
        return _interval([get(by[s, a]) - get(by[s, b]) for s in seeds])

    def curve_mean(r):  # mean Dice over the snapshots of the second half of training
        c = {int(k): v for k, v in r["curve"].items()}
        return float(np.mean([v for k, v in c.items() if k > max(c) / 2]))

    out["dice_pooled_final"] = diff(lambda r: r["final"]["dice_pooled"])
    out["dice_per_image_final"] = diff(lambda r: r["final"]["dice_per_image_mean"])
    out["object_f1_final"] = diff(lambda r: r["final"]["object_f1"])
    out["dice_pooled_second_half_mean"] = diff(curve_mean)
    return out


def summarise(results: list[dict]) -> dict:
    """Paired differences bf16 - fp32 (Dice points) with a t-based 95 % interval; with the
    control arm also fp32-literal - fp32 (rounding alone) and bf16 - fp32-literal."""
    by = {(r["seed"], r["precision"]): r for r in results}
    out = _paired(by, "bf16", "fp32")
    seeds = out["seeds"]
    if seeds:
        # The same bf16-trained models predicted in bf16 vs fp32: inference precision alone.
        out["bf16_models_bf16_minus_fp32_inference"] = _interval(
            [
                by[s, "bf16"]["final"]["dice_pooled"]
                - by[s, "bf16"]["final_fp32_inference"]["dice_pooled"]
                for s in seeds
            ]
        )
    arms = sorted({p for _, p in by})
    for p in arms:
        runs = [r for (_, q), r in by.items() if q == p]
        vals = np.array([r["final"]["dice_pooled"] for r in runs]) * 100
        out[f"{p}_runs"] = len(runs)
        out[f"{p}_dice_pooled_mean"] = round(float(vals.mean()), 2)
        out[f"{p}_train_s_median"] = float(np.median([r["train_s"] for r in runs]))
    if "fp32-literal" in arms:
        out["control_fp32_literal_minus_fp32"] = _paired(by, "fp32-literal", "fp32")
        out["bf16_minus_fp32_literal"] = _paired(by, "bf16", "fp32-literal")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--seeds", default="0-3", help="e.g. 0-7 or 0,2,5")
    ap.add_argument("--arms", default="bf16,fp32", help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--labeled", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--snapshot-every", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per training")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    ap.add_argument("--deadline-s", type=float, help="stop waiting (and kill) after this long")
    ap.add_argument("--out", type=Path, default=Path("runs/precision"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=2, metavar=("SEED", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.seed, args.precision = int(args.worker[0]), args.worker[1]
        return worker(args)
    if not (args.train / "images").is_dir() or not (args.test / "images").is_dir():
        print("no GlaS data at --train / --test; nothing to do", file=sys.stderr)
        return 0
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        ap.error(f"unknown arm(s) {', '.join(sorted(unknown))}: use {', '.join(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    # Seed-major, slowest arms first: each seed's set completes early, and the short
    # bf16 runs fill the gaps at the end.
    order = sorted(arms, key=lambda a: a == "bf16")
    jobs = [(s, p) for s in _seeds(args.seeds) for p in order]
    t_start = time.perf_counter()
    results: list[dict] = []
    lock = threading.Lock()  # runs finish on several threads; one JSON writer at a time

    def run(job):
        seed, prec = job
        res_file = args.out / f"{prec}_s{seed}" / "result.json"
        if not res_file.exists():
            if args.deadline_s and time.perf_counter() - t_start > args.deadline_s * 0.5:
                return None  # too late to start a training that would not finish
            cmd = [sys.executable, __file__, "--worker", str(seed), prec]
            for k in ("train", "test", "labeled", "iterations", "input_size", "snapshot_every"):
                cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
            cmd += ["--device", args.device, "--compile", args.compile]
            cmd += ["--threads", str(args.threads), "--out", str(args.out)]
            log = open(args.out / f"{prec}_s{seed}.log", "w")  # noqa: SIM115 (closed below)
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            left = None
            if args.deadline_s:
                left = args.deadline_s - (time.perf_counter() - t_start)
            try:
                p.wait(timeout=left)
            except subprocess.TimeoutExpired:
                p.kill()
                return None
            finally:
                log.close()
        if not res_file.exists():
            return None
        r = json.loads(res_file.read_text())
        with lock:
            results.append(r)
            print(
                f"seed {seed} {prec}: Dice {r['final']['dice_pooled'] * 100:.2f} "
                f"(train {r['train_s']:.0f} s)",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(report(), indent=1))
        return r

    def report():
        return {
            "protocol": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("worker", "json")
            },
            "summary": summarise(results),
            "runs": sorted(results, key=lambda r: (r["seed"], r["precision"])),
        }

    with ThreadPoolExecutor(args.jobs) as ex:
        list(ex.map(run, jobs))
    rep = report()
    print(json.dumps(rep["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
