"""Evaluate GlaS training runs on testA: final metrics and a learning curve from snapshots.

Usage (after `napari-semimoe train ... --snapshot-every N --out RUN` for each run):

    python benchmarks/glas_eval.py --test ../shared/data/glas/testA \
        --run semimoe=runs/glas_semimoe --run supervised=runs/glas_suponly \
        --json docs/benchmarks/glas.json

Fixed threshold 0.5, native resolution, no model selection on the test set: the final
checkpoint of each run is the one reported. The learning curve only shows how training
progressed; it is not used to pick a model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.evaluate import evaluate_folder
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.metrics import format_table


def evaluate(path: Path, test: Path, precision: str, hausdorff: bool = True) -> dict:
    pred = Predictor(load_model(path, "cpu"), PredictOptions(precision=precision, threads=1))
    return evaluate_folder(pred, test, hausdorff=hausdorff)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", required=True, type=Path)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR")
    ap.add_argument("--precision", default="auto", help="inference precision")
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--curve-every", type=int, default=1, help="use every Nth iteration's snapshot")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.test / "images").is_dir():
        print(f"no GlaS test data at {args.test}; nothing to do", file=sys.stderr)
        return 0
    report = {}
    for spec in args.run:
        name, run = spec.split("=", 1)
        run = Path(run)
        _, doc = read_checkpoint(run)
        hist = json.loads((run / "history.json").read_text())
        t0 = time.perf_counter()
        final = evaluate(run, args.test, args.precision)
        print(f"\n== {name} ({run}) ==\n{format_table(final)}", flush=True)
        curve = []
        if not args.no_curve:
            for snap in sorted((run / "snapshots").glob("iter_*.safetensors")):
                it = int(snap.stem.split("_")[1])
                if it % args.curve_every:
                    continue
                m = evaluate(snap, args.test, args.precision, hausdorff=False)
                curve.append(
                    {
                        "iteration": it,
                        "dice_pooled": m["dice_pooled"],
                        "object_f1": m["object_f1"],
                        "object_dice": m["object_dice"],
                    }
                )
                print(f"  {name} iter {it}: Dice {100 * m['dice_pooled']:.2f}", flush=True)
        report[name] = {
            "run": str(run),
            "iterations": doc["meta"]["state"]["iteration"],
            "train_wall_time_s": hist[-1]["time"] if hist else None,
            "config": doc["meta"]["config"],
            "labeled": doc["meta"]["labeled_names"],
            "final": final,
            "curve": curve,
            "eval_time_s": round(time.perf_counter() - t0, 1),
        }
    if args.json:
        from napari_semimoe.core.checkpoint import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
