"""How much of an active-labeling result is the label set, and how much the training run?

Retrains the label sets that ``glas_active.py`` chose (one round, every seed and arm of its
JSON files) with other training seeds, everything else identical, and reports testA pooled
Dice. Same label set + different seed = the protocol's retraining noise; the arms' means
over seeds and retrainings = a less noisy comparison of the selection rules.

    python benchmarks/glas_active_retrain.py --train ../shared/data/glas/train \
        --test ../shared/data/glas/testA --results coverage_s*.json random_s*.json \
        --arms coverage random --round 3 --offsets 100 --json retrain.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from glas_active import evaluate, load, train
from napari_semimoe.core.checkpoint import atomic_write_json
from napari_semimoe.core.data import Geometry, channel_stats
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--results", type=Path, nargs="+", required=True)
    ap.add_argument("--arms", nargs="+", default=["coverage", "random"])
    ap.add_argument("--round", type=int, default=3)
    ap.add_argument("--offsets", type=int, nargs="+", default=[100], help="seed + offset")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.train / "images").is_dir() or not (args.test / "images").is_dir():
        print("no GlaS data; nothing to do", file=sys.stderr)
        return 0
    sets: dict[tuple[str, str], list[str]] = {}
    for f in args.results:
        for seed, arms in json.loads(f.read_text())["seeds"].items():
            for arm in args.arms:
                if arm in arms and len(arms[arm]) > args.round:
                    sets[(seed, arm)] = arms[arm][args.round]["labeled"]
    geometry = Geometry(input_size=args.input_size, tile=args.input_size)
    t0 = time.perf_counter()
    tr, te = load(args.train, geometry), load(args.test, geometry)
    stats = channel_stats(tr["work"])
    index = {n: i for i, n in enumerate(tr["names"])}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="glas_retrain_"))
    popts = PredictOptions(threads=args.threads, experts=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    for off in args.offsets:
        for (seed, arm), names in sorted(sets.items()):
            s = int(seed) + off
            labeled = [index[n] for n in names]
            run = train(tr, labeled, args, s, work / f"s{seed}_{arm}_r{args.round}_t{s}", stats)
            ev = evaluate(Predictor(load_model(run, "cpu"), popts), te)
            report["runs"].append(
                {"seed": int(seed), "arm": arm, "train_seed": s, "labeled": names, **ev}
            )
            print(
                f"seed {seed} {arm} round {args.round} train seed {s}: "
                f"Dice {100 * ev['dice_pooled']:.2f}  [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
            if args.json:
                atomic_write_json(args.json, report)
    for arm in args.arms:
        d = [100 * r["dice_pooled"] for r in report["runs"] if r["arm"] == arm]
        if d:
            print(f"{arm}: mean {np.mean(d):.2f} over {len(d)} retrainings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
