"""What did each selection rule pick? The oracle's view of an active-labeling run.

For every round of ``glas_active.py``'s arms, the model that made the choice (the previous
round's) segments every training image; the ground truth then says how hard the picks
were for it: their mean error (1 - Dice at the working scale), their rank among the pool
images (0 = easiest, 1 = hardest), the rank of their uncertainty score, and their gland
fraction. Needs the arms' work folders (models) and JSON files.

    python benchmarks/glas_active_picks.py --train ../shared/data/glas/train \
        --results coverage_s0.json random_s0.json --workdir w0 --arms coverage random
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from glas_active import dice, image_candidate, load
from napari_semimoe.core.checkpoint import atomic_write_json
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model


def per_image(run: Path, tr: dict, threads: int | None) -> dict[str, dict[str, float]]:
    pred = Predictor(load_model(run, "cpu"), PredictOptions(threads=threads, experts=True))
    rows = {}
    for name, work, gt in zip(tr["names"], tr["work"], tr["work_mask"]):
        mask = pred.predict_image(work, native=False, instances=False)["mask"].astype(bool)
        rows[name] = {
            "error": 1 - dice(mask, gt > 0),
            "score": image_candidate(pred, work).score,
            "gland": float((gt > 0).mean()),
        }
    return rows


def _rank(pool: np.ndarray, picks: list[float]) -> float:
    """Mean fraction of the pool below each pick (0 = lowest, 1 = highest)."""
    return float(np.mean([(pool < v).mean() for v in picks]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--results", type=Path, nargs="+", required=True)
    ap.add_argument("--workdir", type=Path, nargs="+", required=True, help="one per seed")
    ap.add_argument("--arms", nargs="+", default=["coverage", "random"])
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.train / "images").is_dir():
        print("no GlaS data; nothing to do", file=sys.stderr)
        return 0
    tr = load(args.train, Geometry(input_size=args.input_size, tile=args.input_size))
    arms: dict[tuple[str, str], list[dict]] = {}
    for f in args.results:
        for seed, res in json.loads(f.read_text())["seeds"].items():
            for arm in args.arms:
                if arm in res:
                    arms[(seed, arm)] = res[arm]
    cache: dict[Path, dict] = {}
    out = []
    for (seed, arm), rounds in sorted(arms.items()):
        work = next((w for w in args.workdir if (w / f"s{seed}_r0").is_dir()), None)
        if work is None:
            print(f"seed {seed}: no work folder with s{seed}_r0", file=sys.stderr)
            continue
        for r in range(1, len(rounds)):
            run = work / (f"s{seed}_r0" if r == 1 else f"s{seed}_{arm}_r{r - 1}")
            if run not in cache:
                cache[run] = per_image(run, tr, args.threads)
            rows = cache[run]
            labeled = set(rounds[r - 1]["labeled"])
            pool = [n for n in tr["names"] if n not in labeled]
            err = np.array([rows[n]["error"] for n in pool])
            score = np.array([rows[n]["score"] for n in pool])
            added = rounds[r]["added"]
            rec = {
                "seed": int(seed),
                "arm": arm,
                "round": r,
                "pool_error": float(err.mean()),
                "picks_error": float(np.mean([rows[n]["error"] for n in added])),
                "picks_error_rank": _rank(err, [rows[n]["error"] for n in added]),
                "picks_score_rank": _rank(score, [rows[n]["score"] for n in added]),
                "picks_gland": float(np.mean([rows[n]["gland"] for n in added])),
                "dice_after": rounds[r]["dice_pooled"],
            }
            out.append(rec)
            print(
                " ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                )
            )
    for arm in args.arms:
        for r in (1, 2, 3):
            q = [o["picks_error_rank"] for o in out if o["arm"] == arm and o["round"] == r]
            if q:
                print(f"{arm} round {r}: picks' error rank {np.mean(q):.2f} (mean of {len(q)})")
    if args.json:
        atomic_write_json(
            args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": out}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
