"""Does active labeling help? GlaS with the ground truth as the oracle annotator.

Protocol (issue 4): start from 4 labeled training images, then 3 rounds that each add 4
images chosen (a) by our uncertainty score (`core.uncertainty`, the same code the plugin's
suggestion list uses; ``active`` = uncertain and diverse, ``coverage`` = uncertain within
what the labeled images do not cover yet) or (b) at random. Between rounds the model is
retrained from scratch with the same iteration budget (Semi-MoE: the other training images
are its unlabeled pool). testA pooled Dice after every round, for each seed. The score's
calibration: Spearman correlation between each testA image's score (and each score
component) and its 1 - Dice.

    python benchmarks/glas_active.py --train ../shared/data/glas/train \
        --test ../shared/data/glas/testA --seeds 0 1 --json docs/benchmarks/active.json

Each image is one candidate tile (the whole image at the working input size), so "4 tiles"
means 4 images, as in the issue.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from napari_semimoe.core.checkpoint import atomic_write_json
from napari_semimoe.core.data import Geometry, TrainingSet, channel_stats, scan_folder
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.slide import read_image, read_mask
from napari_semimoe.core.train import TrainConfig, Trainer
from napari_semimoe.core.uncertainty import (
    TileScore,
    cluster_with_labeled,
    score_tiles,
    suggest,
    typical_by_score,
    uncovered_first,
)


def load(folder: Path, geometry: Geometry) -> dict:
    items = [it for it in scan_folder(folder) if it.mask_path is not None]
    out = {"names": [], "work": [], "work_mask": [], "native": [], "mask": []}
    for it in items:
        im = read_image(it.image_path)
        m = read_mask(it.mask_path, shape=im.shape[:2]) > 0
        out["names"].append(it.name)
        out["work"].append(geometry.image_to_working(im))
        out["work_mask"].append(geometry.mask_to_working(m.astype(np.uint8)))
        out["native"].append(im)
        out["mask"].append(m)
    return out


def train(train_set: dict, labeled: list[int], args, seed: int, run: Path, stats) -> Path:
    unl = [i for i in range(len(train_set["names"])) if i not in set(labeled)]
    data = TrainingSet(
        [train_set["work"][i] for i in labeled],
        [train_set["work_mask"][i] for i in labeled],
        [train_set["work"][i] for i in unl],
        [train_set["names"][i] for i in labeled],
        [train_set["names"][i] for i in unl],
    )
    cfg = TrainConfig(
        width=args.width,
        iterations=args.iterations,
        seed=seed,
        threads=args.threads,
        device="cpu",
        geometry=Geometry(input_size=args.input_size, tile=args.input_size).to_dict(),
        checkpoint_every=args.iterations,
    )
    if getattr(args, "_reuse", False) and (run / "checkpoint.safetensors").exists():
        return run
    if run.exists():
        shutil.rmtree(run)
    Trainer(cfg, data, run, stats=stats).run()
    return run


def image_candidate(pred: Predictor, work: np.ndarray) -> TileScore:
    """The plugin's tile score with the whole working image as the one tile."""
    out = pred.predict_image(work, native=False, instances=False)
    maps = {k: out[k] for k in ("prob", "sdf", "boundary", "expert_prob")}
    (c,) = score_tiles(
        maps,
        work.shape[0],
        gates=out["gates"],
        gate_tiles=out["tiles"],
        embeddings=out.get("embeddings"),
        min_tissue=0.0,
    )
    return c


def image_score(pred: Predictor, work: np.ndarray) -> tuple[float, dict[str, float]]:
    c = image_candidate(pred, work)
    return c.score, c.components


def coverage_density(pool: list[TileScore], labeled: list, top: int, seed: int) -> list[int]:
    """Experimental variant of ``coverage``: groups are ranked by their pool size per label
    already in them (size / (1 + labels)), so a large group may take a second label before a
    small uncovered one; the pick in a group is the same (most uncertain of its typical half).
    Returns indices into ``pool``."""
    n = len(pool)
    x, labels, centres = cluster_with_labeled(pool, labeled, top, seed)
    k = len(centres)
    sizes = np.bincount(labels[:n], minlength=k).astype(float)
    held = np.bincount(labels[n:], minlength=k).astype(float)
    taken: list[int] = []
    for _ in range(top):
        j = int(np.argmax(np.where(sizes > 0, sizes / (1 + held), -1)))
        members = np.array([i for i in np.flatnonzero(labels[:n] == j) if i not in taken], int)
        if not len(members):
            sizes[j] = 0
            continue
        taken.append(typical_by_score(pool, members, x, centres[j])[0])
        held[j] += 1
        sizes[j] -= 1
    return taken


def coverage_typical(pool: list[TileScore], labeled: list, top: int, seed: int) -> list[int]:
    """Experimental variant of ``coverage`` without the uncertainty: the same groups in the
    same order, each gives its most typical image (nearest the centre; TypiClust's own
    pick). Returns indices into ``pool``."""
    n = len(pool)
    x, labels, centres = cluster_with_labeled(pool, labeled, top, seed)
    taken: list[int] = []
    for j in uncovered_first(labels, n, len(centres))[:top]:
        members = np.flatnonzero(labels[:n] == j)
        taken.append(int(members[np.argmin(np.linalg.norm(x[members] - centres[j], axis=1))]))
    return taken


#: Benchmark-only variants of the coverage rule: name -> pick(pool, labeled, top, seed).
VARIANTS = {"coverage-density": coverage_density, "coverage-typical": coverage_typical}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def evaluate(pred: Predictor, test: dict) -> dict:
    inter = total = 0
    per_image, scores, comps = [], [], []
    for work, native, gt in zip(test["work"], test["native"], test["mask"]):
        out = pred.predict_image(native, instances=False)
        m = out["mask"].astype(bool)
        inter += int((m & gt).sum())
        total += int(m.sum() + gt.sum())
        per_image.append(dice(m, gt))
        s, c = image_score(pred, work)
        scores.append(s)
        comps.append(c)
    err = 1 - np.asarray(per_image)
    rho = {"score": float(spearmanr(scores, err).statistic)}
    for k in comps[0]:
        rho[k] = float(spearmanr([c[k] for c in comps], err).statistic)
    return {
        "dice_pooled": 2 * inter / max(total, 1),
        "dice_per_image_mean": float(np.mean(per_image)),
        "spearman_score_vs_error": rho,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--start", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--strategies", nargs="+", default=["active", "random"])
    ap.add_argument(
        "--reuse-round0",
        action="store_true",
        help="keep an existing round-0 model in --workdir (same seed and data)",
    )
    ap.add_argument(
        "--branch",
        nargs=3,
        metavar=("JSON", "ARM", "ROUND"),
        help="start from ARM's label set and model after ROUND in an earlier result JSON "
        "(model from --workdir) instead of from round 0",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.train / "images").is_dir() or not (args.test / "images").is_dir():
        print("no GlaS data; nothing to do", file=sys.stderr)
        return 0
    geometry = Geometry(input_size=args.input_size, tile=args.input_size)
    t0 = time.perf_counter()
    tr, te = load(args.train, geometry), load(args.test, geometry)
    stats = channel_stats(tr["work"])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="glas_active_"))
    popts = PredictOptions(threads=args.threads, experts=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "seeds": {}}
    n = len(tr["names"])
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        start = sorted(rng.choice(n, args.start, replace=False).tolist())
        args._reuse = args.reuse_round0
        run0 = train(tr, start, args, seed, work / f"s{seed}_r0", stats)
        args._reuse = False
        pred0 = Predictor(load_model(run0, "cpu"), popts)
        ev0 = evaluate(pred0, te)
        print(
            f"seed {seed} round 0 ({len(start)} labeled): Dice {100 * ev0['dice_pooled']:.2f}"
            f"  rho {ev0['spearman_score_vs_error']['score']:+.2f}",
            flush=True,
        )
        res = {}
        first, base = 1, (list(start), pred0, ev0)
        if args.branch:
            src, arm, rb = args.branch[0], args.branch[1], int(args.branch[2])
            got = json.loads(Path(src).read_text())["seeds"][str(seed)][arm][rb]
            index = {name: i for i, name in enumerate(tr["names"])}
            pred_b = Predictor(load_model(work / f"s{seed}_{arm}_r{rb}", "cpu"), popts)
            got_ev = {k: v for k, v in got.items() if k not in ("labeled", "added")}
            first, base = rb + 1, ([index[name] for name in got["labeled"]], pred_b, got_ev)
        for strategy in args.strategies:
            labeled, pred = list(base[0]), base[1]
            rounds = [{"labeled": [tr["names"][i] for i in labeled], **base[2]}]
            srng = np.random.default_rng(2000 + seed)
            for r in range(first, args.rounds + 1):
                pool = [i for i in range(n) if i not in set(labeled)]
                if strategy in ("active", "coverage", *VARIANTS):
                    cands = []
                    for k, i in enumerate(pool):  # one candidate per image, far apart
                        c = image_candidate(pred, tr["work"][i])
                        c.y, c.x = 0, 10 * args.input_size * k
                        cands.append(c)
                    if strategy.startswith("coverage"):  # what the labeled images look like
                        seen = [image_candidate(pred, tr["work"][i]).embedding for i in labeled]
                    if strategy in VARIANTS:
                        idx = VARIANTS[strategy](cands, seen, args.per_round, 0)
                        chosen = [cands[j] for j in idx]
                    elif strategy == "coverage":
                        chosen = suggest(cands, args.per_round, strategy="coverage", labeled=seen)
                    else:
                        chosen = suggest(cands, args.per_round)
                    picks = [pool[c.x // (10 * args.input_size)] for c in chosen]
                else:
                    picks = srng.choice(pool, args.per_round, replace=False).tolist()
                labeled += picks
                run = train(tr, labeled, args, seed, work / f"s{seed}_{strategy}_r{r}", stats)
                pred = Predictor(load_model(run, "cpu"), popts)
                ev = evaluate(pred, te)
                rounds.append(
                    {
                        "labeled": [tr["names"][i] for i in labeled],
                        "added": [tr["names"][i] for i in picks],
                        **ev,
                    }
                )
                print(
                    f"seed {seed} {strategy} round {r} ({len(labeled)} labeled): "
                    f"Dice {100 * ev['dice_pooled']:.2f}  "
                    f"rho {ev['spearman_score_vs_error']['score']:+.2f}  "
                    f"[{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
            res[strategy] = rounds
        report["seeds"][str(seed)] = res
        if args.json:
            atomic_write_json(args.json, report)
    report["wall_time_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        atomic_write_json(args.json, report)
    print(
        json.dumps(
            {
                s: {k: [round(100 * r["dice_pooled"], 2) for r in v] for k, v in d.items()}
                for s, d in report["seeds"].items()
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
