"""Issue 20's paired protocol: does the unlabeled tissue pay, per labeled set, on GlaS?

Every arm of one seed trains on the same labeled images (``--labeled 8``: 10 %, 17: 20 %;
the seed draws them, the rest of ``train/`` is unlabeled), everything else equal; each final
checkpoint is evaluated on testA at native resolution, threshold 0.5 (nothing selected on
testA): pooled and per-image Dice, object F1 / Dice / Hausdorff. The report gives each arm's
mean and seed-to-seed SD, and per pair of arms the per-seed differences, their mean and
t-based 95 % interval. ``--ebhi DIR`` also evaluates every run on EBHI ``val/`` (another
centre), prepared by ``prepare-ebhi`` at GlaS's physical scale (below); arms with ``~ebhi``
also train on EBHI ``train/`` as unlabeled images (issue 17's cross-centre arm).

Runs go through the command line in ``--lanes`` processes of ``--threads`` torch threads;
a finished run or evaluation is never redone, so the study can be stopped and restarted.

    python benchmarks/fewlabel_pairs.py run --runs /tmp/fl --seeds 0-4 --labeled 8 \\
        --arms supervised semimoe semimoe~ema semimoe~conf semimoe+tta --iterations 2000
    python benchmarks/fewlabel_pairs.py run --runs /tmp/xc --seeds 0-2 --ebhi /tmp/ebhi_gs \\
        --arms supervised semimoe semimoe~ebhi moek moek-plain moek~stain  # issue 17
    python benchmarks/fewlabel_pairs.py prepare-ebhi /tmp/ebhi_glas_scale
    python benchmarks/fewlabel_pairs.py report --runs /tmp/fl --seeds 0-4 --labeled 8 \\
        --arms supervised semimoe semimoe~ema --json docs/benchmarks/fewlabel_10.json

``--protocol paper`` is upstream's setting for a GPU (b = 64, 256², 200 epochs of 2 + 2
tiles: ceil(unlabeled / 2) iterations each, snapshots every 10 epochs) and reports both
ways: ours (threshold 0.5, final checkpoint) and the paper's (the best pooled Dice over
snapshots x thresholds 0.1-0.9, chosen on testA), so the gap between protocols is a number.

EBHI at GlaS's scale: EBHI is captured at 400x, glands ~2x GlaS's. ``prepare-ebhi``
halves each 224² image and mask (mask > 127) and tiles 35 of them (7 x 5, 4 px of white
glass between them so that glands never touch across tiles) into one GlaS-sized image
(~800 x 570), so a model that resizes whole images sees EBHI glands at the size it learnt.
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

from precision_pairs import _interval

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: An arm is BASE[~MOD...][+EVAL]: a base model, training modifiers, and an optional
#: prediction-only lever (the base run's checkpoint evaluated differently); e.g.
#: "semimoe~ema", "moek~stain~ebhi", "semimoe+tta". Everything else is common.
BASES: dict[str, list[str]] = {
    "supervised": ["--supervised-only"],
    "semimoe": [],
    # issue 17: K = 4 homogeneous experts with the balance term and cross-expert consistency
    # (the family's defaults), and without both
    "moek": ["--family", "moe-k", "--experts", "4"],
    "moek-plain": ["--family", "moe-k", "--experts", "4", "--balance", "0", "--consistency", "0"],
}
TRAIN_MODS: dict[str, list[str]] = {
    "ema": ["--ema-teacher", "0.99"],
    "conf": ["--pseudo-confidence", "0.9"],
    # HED "strong" (Tellez): ~13 grey levels of colour change, about a lab-to-lab difference
    "stain": ["--stain-jitter", "0.2"],
    "ebhi": [],  # + EBHI train/ unlabeled (at GlaS's scale): --unlabeled, set in _train
}
EVAL_MODS: dict[str, list[str]] = {
    "tta": ["--tta", "flips"],
    "post": ["--fill-holes", "--min-object", "16"],
}


def arm_options(arm: str, ebhi: Path | None = None) -> tuple[list[str], list[str]]:
    """(train options, evaluate options) of an arm name (see :data:`BASES`)."""
    trained, _, lever = arm.partition("+")
    base, *mods = trained.split("~")
    if (
        base not in BASES
        or any(m not in TRAIN_MODS for m in mods)
        or (lever and lever not in EVAL_MODS)
    ):
        raise SystemExit(
            f"unknown arm {arm!r}: BASE[~MOD...][+EVAL] with BASE in "
            f"{list(BASES)}, MOD in {list(TRAIN_MODS)}, EVAL in {list(EVAL_MODS)}"
        )
    train = list(BASES[base])
    for m in mods:
        train += TRAIN_MODS[m]
        if m == "ebhi":
            if ebhi is None:
                raise SystemExit("~ebhi arms need --ebhi (a prepare-ebhi folder)")
            train += ["--unlabeled", str(ebhi / "train" / "images")]
    return train, EVAL_MODS.get(lever, [])


#: metrics reported (fractions; Hausdorff in px)
KEYS = ("dice_pooled", "dice_per_image_mean", "object_f1", "object_dice", "object_hausdorff")


def _seeds(spec: list[str]) -> list[int]:
    out: list[int] = []
    for part in spec:
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def _cli(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "napari_semimoe.cli", *args],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode:
        raise RuntimeError(f"{' '.join(args[:2])}: {res.stderr.strip().splitlines()[-1:]}")


def _run_dir(args, arm: str, seed: int) -> Path:
    trained = arm.split("+")[0]  # "semimoe+tta" evaluates the semimoe run
    return args.runs / f"l{args.labeled}" / f"{trained}-s{seed}"


def _schedule(args) -> list[str]:
    if args.protocol == "paper":
        n = len(list((args.train / "images").iterdir()))
        epochs_its = math.ceil((n - args.labeled) / 2)
        return ["--width", "64", "--input-size", "256", "--iterations",
                str(200 * epochs_its), "--snapshot-every", str(10 * epochs_its)]  # fmt: skip
    return ["--width", str(args.width), "--input-size", str(args.input_size),
            "--iterations", str(args.iterations)]  # fmt: skip


def _train(args, arm: str, seed: int) -> Path:
    run = _run_dir(args, arm, seed)
    if (run / "done").exists():
        return run
    train_opts, _ = arm_options(arm.split("+")[0], args.ebhi)
    common = ["--threads", str(args.threads), "--device", args.device]
    if (run / "checkpoint.safetensors").exists():
        _cli("train", "--resume", str(run), *common)
    else:
        _cli("train", "--data", str(args.train), "--labeled", str(args.labeled), "--seed",
             str(seed), *_schedule(args), *train_opts, *common, "--out", str(run))  # fmt: skip
    (run / "done").write_text("")
    return run


def _evaluate(args, arm: str, seed: int, test: Path, tag: str) -> dict:
    run = _run_dir(args, arm, seed)
    out = run / f"metrics-{tag}-{arm}.json"
    if not out.exists():
        _, eval_opts = arm_options(arm, args.ebhi)
        tmp = out.with_suffix(".tmp")
        _cli("evaluate", str(run), "--data", str(test), "--threads", str(args.threads),
             "--device", args.device, *eval_opts, "--json", str(tmp))  # fmt: skip
        tmp.rename(out)
    return json.loads(out.read_text())


def _paper_best(args, seed: int, arm: str) -> dict:
    """The paper's way: the best pooled Dice over snapshots x thresholds, chosen on testA."""
    from napari_semimoe.core.data import scan_folder
    from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
    from napari_semimoe.core.slide import read_image, read_mask

    run = _run_dir(args, arm, seed)
    best = {"dice_pooled": -1.0}
    snaps = sorted((run / "snapshots").glob("*.safetensors")) + [run]
    items = list(scan_folder(args.test))
    thresholds = np.round(np.arange(0.1, 0.95, 0.1), 2)
    for snap in snaps:
        p = Predictor(load_model(snap, args.device), PredictOptions(threads=args.threads))
        inter = np.zeros(len(thresholds))
        total = np.zeros(len(thresholds))
        for it in items:
            prob = p.predict_image(read_image(it.image_path), instances=False)["prob"]
            gt = read_mask(it.mask_path) > 0
            for i, t in enumerate(thresholds):
                m = prob >= t
                inter[i] += np.logical_and(m, gt).sum()
                total[i] += m.sum() + gt.sum()
        dice = 2 * inter / np.maximum(total, 1)
        i = int(dice.argmax())
        if dice[i] > best["dice_pooled"]:
            best = {"dice_pooled": float(dice[i]), "threshold": float(thresholds[i]),
                    "checkpoint": snap.name}  # fmt: skip
    return best


def trivial_dice(folder: Path) -> float:
    """Pooled Dice of calling every tissue pixel gland (glass: the mosaics' exact grey 240
    left out): the floor a model must beat (testA 65.8 %, EBHI mosaics 77.9 %)."""
    from napari_semimoe.core.slide import read_image, read_mask

    inter = total = 0
    for m in sorted((folder / "masks").iterdir()):
        gt = read_mask(m) > 0
        img = read_image(next((folder / "images").glob(m.stem + ".*")))
        tissue = ~(img == 240).all(-1)
        inter += int((gt & tissue).sum())
        total += int(gt.sum() + tissue.sum())
    return 2 * inter / max(total, 1)


def report(args) -> dict:
    sets = {"testA": args.test} | ({"ebhi": args.ebhi / "val"} if args.ebhi else {})
    out: dict = {"settings": {"labeled": args.labeled, "protocol": args.protocol,
                              "schedule": _schedule(args), "seeds": args.seeds}, "arms": {},
                 "paired": {}}  # fmt: skip
    res: dict = {}
    for arm in args.arms:
        for seed in args.seeds:
            for tag in sets:
                f = _run_dir(args, arm, seed) / f"metrics-{tag}-{arm}.json"
                if f.exists():
                    res[arm, seed, tag] = json.loads(f.read_text())
    out["trivial_dice_pooled"] = {tag: round(100 * trivial_dice(f), 2) for tag, f in sets.items()}
    for tag in sets:
        print(
            f"\n{tag}, {args.labeled} labeled: mean (SD over seeds), Dice etc. in %; every "
            f"tissue pixel called gland: pooled Dice {out['trivial_dice_pooled'][tag]:.1f}"
        )
        print("arm | seeds | " + " | ".join(KEYS))
        for arm in args.arms:
            ms = [res[arm, s, tag] for s in args.seeds if (arm, s, tag) in res]
            if not ms:
                continue
            row = {}
            for k in KEYS:
                v = np.array([m.get(k, np.nan) for m in ms], float) * (1 if "haus" in k else 100)
                row[k] = {
                    "mean": round(float(np.nanmean(v)), 2),
                    "sd": round(float(np.nanstd(v, ddof=1)), 2) if len(v) > 1 else None,
                }
            out["arms"].setdefault(tag, {})[arm] = row | {"seeds": len(ms)}
            print(f"{arm} | {len(ms)} | " + " | ".join(
                f"{row[k]['mean']:.1f} ({row[k]['sd'] or 0:.1f})" for k in KEYS))  # fmt: skip
        print("paired differences (points), mean [95 % interval]")
        for i, b in enumerate(args.arms):  # each later arm minus each earlier one
            for a in args.arms[i + 1 :]:
                seeds = [s for s in args.seeds if (a, s, tag) in res and (b, s, tag) in res]
                if len(seeds) < 2:
                    continue
                # precision_pairs' interval: differences as fractions in, Dice points out
                d = {k: _interval([res[a, s, tag][k] - res[b, s, tag][k] for s in seeds])
                     for k in KEYS[:4]}  # fmt: skip
                out["paired"].setdefault(tag, {})[f"{a} - {b}"] = d | {"seeds": seeds}
                v = d["dice_pooled"]
                print(
                    f"{a} - {b} ({len(seeds)} seeds): pooled Dice {v['mean']:+.2f} "
                    f"{v.get('ci95', '')}, object F1 {d['object_f1']['mean']:+.2f}"
                )
    if args.protocol == "paper":
        out["paper_way"] = {f"{a}-s{s}": _paper_best(args, s, a) for a in args.arms
                            for s in args.seeds if (a, s, "testA") in res}  # fmt: skip
        print(json.dumps(out["paper_way"], indent=1))
    return out


def prepare_ebhi(dest: Path, src: Path, cols: int = 7, rows: int = 5, gap: int = 4) -> None:
    """EBHI ``val/`` and ``train/`` at GlaS's physical scale, as GlaS-sized mosaics with
    binary masks (``DEST/val``, ``DEST/train``)."""
    for split in ("val", "train"):
        _mosaics(dest / split, src / split, split, cols, rows, gap)


def _mosaics(dest: Path, src: Path, split: str, cols: int, rows: int, gap: int) -> None:
    from PIL import Image

    names = sorted(p.name for p in (src / "images").iterdir())
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(exist_ok=True)
    side = 112
    per = cols * rows
    for k in range(0, len(names), per):
        chunk = names[k : k + per]
        h, w = rows * side + (rows + 1) * gap, cols * side + (cols + 1) * gap
        img = np.full((h, w, 3), 240, np.uint8)  # glass
        mask = np.zeros((h, w), np.uint8)
        for j, n in enumerate(chunk):
            r, c = divmod(j, cols)
            y, x = gap + r * (side + gap), gap + c * (side + gap)
            im = Image.open(src / "images" / n).convert("RGB").resize((side, side), Image.BILINEAR)
            mk = Image.open(src / "masks" / n).convert("L").resize((side, side), Image.BILINEAR)
            img[y : y + side, x : x + side] = np.asarray(im)
            mask[y : y + side, x : x + side] = np.asarray(mk) > 127
        Image.fromarray(img).save(dest / "images" / f"ebhi_{split}_{k // per:02d}.png")
        Image.fromarray(mask * 255).save(dest / "masks" / f"ebhi_{split}_{k // per:02d}.png")
    print(f"{len(names)} EBHI {split} images -> {-(-len(names) // per)} mosaics in {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "report", "prepare-ebhi"])
    ap.add_argument("dest", nargs="?", type=Path, help="prepare-ebhi: the output folder")
    ap.add_argument("--train", type=Path, default=DATA / "glas" / "train")
    ap.add_argument("--test", type=Path, default=DATA / "glas" / "testA")
    ap.add_argument("--ebhi", type=Path, help="a prepare-ebhi folder: also evaluate on it")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/fewlabel"))
    ap.add_argument(
        "--arms",
        nargs="+",
        default=["supervised", "semimoe"],
        help="BASE[~MOD...][+EVAL], see BASES",
    )
    ap.add_argument("--seeds", nargs="+", default=["0-4"])
    ap.add_argument("--labeled", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--protocol", choices=["cpu", "paper"], default="cpu")
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.command == "prepare-ebhi":
        if args.dest is None:
            ap.error("prepare-ebhi needs a destination folder")
        prepare_ebhi(args.dest, DATA / "ebhi")
        return
    args.seeds = _seeds(args.seeds)
    if args.command == "run":
        for arm in args.arms:
            arm_options(arm, args.ebhi)  # a bad name: one line before anything runs
        sets = {"testA": args.test} | ({"ebhi": args.ebhi / "val"} if args.ebhi else {})
        # One job per trained run (seed-major, so pairs finish first); an evaluation-only
        # arm ("semimoe+tta") is evaluated by its base run's job, after its training.
        trained = list(dict.fromkeys(a.split("+")[0] for a in args.arms))
        jobs = [(t, s) for s in args.seeds for t in trained]

        def one(job):
            base, seed = job
            _train(args, base, seed)
            for arm in [a for a in args.arms if a.split("+")[0] == base]:
                for tag, folder in sets.items():
                    _evaluate(args, arm, seed, folder, tag)
            print("done", base, seed, flush=True)

        with ThreadPoolExecutor(args.lanes) as pool:
            list(pool.map(one, jobs))
    out = report(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
