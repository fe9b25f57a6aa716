"""Issue 17's attribute-routing study: does a router per attribute value (dMoE) help the
under-represented group, against the same model without the block and with plain MoE?

Two cohorts, each with a few labels from every group and the rest of its tissue unlabeled
(semi-supervised, Semi-MoE family, everything but the routing equal within a seed):

- ``centre``: GlaS ``train/`` (85) + EBHI ``train/`` at GlaS's scale (8 mosaics of 35
  biopsies, from ``fewlabel_pairs.py prepare-ebhi``), attribute = centre (glas / ebhi).
  Labeled: 8 GlaS images + 1 EBHI mosaic, drawn by the seed. Test: GlaS testA (60) + EBHI
  ``val/`` mosaics (13): EBHI is the under-represented group (1 of 9 labeled images).
- ``category``: EBHI ``train/`` alone (265 images, 224², masks > 127), attribute = diagnostic
  category. Labeled: 2 per category (12), drawn by the seed. Test: EBHI ``val/`` (447; the
  release's proportions: Normal 11, Serrated adenoma 15 are the under-represented groups).

Arms:

- ``plain``: Semi-MoE without the dMoE block;
- ``moe``: ``--attribute-routing`` without ``--attributes``: the block with one learnt router
  for every image (dMoE's "plain MoE" baseline);
- ``dmoe``: ``--attribute-routing --attributes``: one router per value, plus "any".

Every run is evaluated with ``--attributes`` (per-image Dice / IoU per attribute value and
ES-Dice / ES-IoU, dMoE's Eq. 19-20; the dmoe arm routes each test image by its value). The
report gives per arm the mean (SD over seeds) and per pair of arms the per-seed differences
with t-based 95 % intervals, for ES-Dice, every group's Dice and the worst group's.

    python benchmarks/fewlabel_pairs.py prepare-ebhi /tmp/ebhi_gs2
    python benchmarks/attribute_study.py run --cohort centre --ebhi /tmp/ebhi_gs2 \\
        --runs /tmp/attr --seeds 0-2 --iterations 300 --json docs/benchmarks/attr_centre.json
    python benchmarks/attribute_study.py run --cohort category --runs /tmp/attr --seeds 0-2
    python benchmarks/attribute_study.py plot docs/benchmarks/attr_centre.json out.png

A finished training or evaluation is never redone: stop and restart at will.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fewlabel_pairs import DATA, _cli, _seeds
from precision_pairs import _interval

ARMS: dict[str, list[str]] = {
    "plain": [],
    "moe": ["--attribute-routing"],
    "dmoe": ["--attribute-routing", "--attributes"],  # + the cohort's attributes.csv
}


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        os.symlink(src.resolve(), dest)


def _binarised(src: Path, dest: Path) -> None:
    """EBHI's soft 8-bit mask as a 0/255 mask (gland = > 127, the dataset's README)."""
    from PIL import Image

    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    m = np.asarray(Image.open(src).convert("L")) > 127
    Image.fromarray((m * 255).astype(np.uint8)).save(dest)


def _write_attributes(path: Path, table: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "attribute"])
        for name, value in sorted(table.items()):
            w.writerow([name, value])


def prepare(args) -> Path:
    """The cohort's pool (every training image with its mask), test folder and
    attributes.csv under ``RUNS/COHORT``; idempotent."""
    root = args.runs / args.cohort
    table: dict[str, str] = {}
    if args.cohort == "centre":
        if args.ebhi is None:
            raise SystemExit("--cohort centre needs --ebhi (a fewlabel_pairs prepare-ebhi folder)")
        glas = DATA / "glas"
        for split, dest in (("train", "pool"), ("testA", "test")):
            for p in sorted((glas / split / "images").iterdir()):
                _link(p, root / dest / "images" / p.name)
                _link(glas / split / "masks" / p.name, root / dest / "masks" / p.name)
                table[p.stem] = "glas"
        for split, dest in (("train", "pool"), ("val", "test")):
            for p in sorted((args.ebhi / split / "images").iterdir()):
                _link(p, root / dest / "images" / p.name)
                _link(args.ebhi / split / "masks" / p.name, root / dest / "masks" / p.name)
                table[p.stem] = "ebhi"
    else:
        ebhi = DATA / "ebhi"
        for split, dest in (("train", "pool"), ("val", "test")):
            for p in sorted((ebhi / split / "images").iterdir()):
                _link(p, root / dest / "images" / p.name)
                _binarised(ebhi / split / "masks" / p.name, root / dest / "masks" / p.name)
                table[p.stem] = p.name.split("__")[0]
    _write_attributes(root / "attributes.csv", table)
    return root


def _labeled(args, root: Path, seed: int) -> list[str]:
    """The seed's labeled images: a fixed count per group, drawn from the pool."""
    table = _read_table(root / "attributes.csv")
    pool = sorted(p.stem for p in (root / "pool" / "images").iterdir())
    per = {"glas": 8, "ebhi": 1} if args.cohort == "centre" else None
    groups: dict[str, list[str]] = {}
    for n in pool:
        groups.setdefault(table[n], []).append(n)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for g, names in sorted(groups.items()):
        k = per[g] if per else args.per_category
        out += sorted(rng.choice(names, size=k, replace=False).tolist())
    return out


def _read_table(path: Path) -> dict[str, str]:
    with path.open() as f:
        return {r["name"]: r["attribute"] for r in csv.DictReader(f)}


def _seed_folder(args, root: Path, seed: int) -> Path:
    """``images/`` = the whole pool, ``masks/`` = the labeled ones only: the command line
    then trains on exactly those labels and uses every other image unlabeled."""
    folder = root / f"data-s{seed}"
    labeled = set(_labeled(args, root, seed))
    for p in sorted((root / "pool" / "images").iterdir()):
        _link(p, folder / "images" / p.name)
        if p.stem in labeled:
            _link(root / "pool" / "masks" / p.name, folder / "masks" / p.name)
    (folder / "labeled.txt").write_text("\n".join(sorted(labeled)) + "\n")
    return folder


def _run_dir(args, arm: str, seed: int) -> Path:
    return args.runs / args.cohort / f"{arm}-s{seed}"


def _job(args, root: Path, arm: str, seed: int) -> None:
    run = _run_dir(args, arm, seed)
    common = ["--threads", str(args.threads), "--device", args.device]
    if not (run / "done").exists():
        if (run / "checkpoint.safetensors").exists():
            _cli("train", "--resume", str(run), *common)
        else:
            opts = list(ARMS[arm])
            if opts and opts[-1] == "--attributes":
                opts.append(str(root / "attributes.csv"))
            data = _seed_folder(args, root, seed)
            _cli("train", "--data", str(data), "--seed", str(seed), "--width", str(args.width),
                 "--input-size", str(args.input_size), "--iterations", str(args.iterations),
                 *opts, *common, "--out", str(run))  # fmt: skip
        (run / "done").write_text("")
    out = run / "metrics.json"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        _cli("evaluate", str(run), "--data", str(root / "test"), "--attributes",
             str(root / "attributes.csv"), *common, "--json", str(tmp))  # fmt: skip
        tmp.rename(out)
    print("done", args.cohort, arm, seed, flush=True)


def _scores(m: dict) -> dict[str, float]:
    """The numbers compared, as fractions: pooled Dice, ES-Dice / ES-IoU, mean per-image
    Dice, each group's Dice and the worst group's."""
    eq = m["equity"]
    groups = eq["dice_per_attribute"]
    out = {"dice_pooled": m["dice_pooled"], "dice_per_image": eq["dice"],
           "es_dice": eq["es_dice"], "es_iou": eq["es_iou"],
           "worst_group": min(groups.values())}  # fmt: skip
    out |= {f"dice[{g}]": v for g, v in groups.items()}
    return out


def report(args) -> dict:
    res: dict = {}
    for arm in args.arms:
        for seed in args.seeds:
            f = _run_dir(args, arm, seed) / "metrics.json"
            if f.exists():
                res[arm, seed] = json.loads(f.read_text())
    if not res:
        raise SystemExit(f"no finished run under {args.runs / args.cohort}")
    first = next(iter(res.values()))["equity"]
    out: dict = {
        "cohort": args.cohort,
        "settings": {"iterations": args.iterations, "width": args.width,
                     "input_size": args.input_size, "seeds": args.seeds,
                     "per_category": args.per_category if args.cohort == "category" else None,
                     "test_images_per_attribute": first["images_per_attribute"]},
        "arms": {}, "paired": {},
    }  # fmt: skip
    keys = list(_scores(next(iter(res.values()))))
    print(f"\n{args.cohort}: mean (SD over seeds), %; test images per group "
          f"{first['images_per_attribute']}")  # fmt: skip
    print("arm | seeds | " + " | ".join(keys))
    for arm in args.arms:
        seeds = [s for s in args.seeds if (arm, s) in res]
        if not seeds:
            continue
        per_seed = {s: _scores(res[arm, s]) for s in seeds}
        row = {}
        for k in keys:
            v = 100 * np.array([per_seed[s][k] for s in seeds])
            row[k] = {"mean": round(float(v.mean()), 2),
                      "sd": round(float(v.std(ddof=1)), 2) if len(v) > 1 else None}  # fmt: skip
        out["arms"][arm] = {"summary": row, "per_seed": per_seed}
        print(f"{arm} | {len(seeds)} | " + " | ".join(
            f"{row[k]['mean']:.1f} ({row[k]['sd'] or 0:.1f})" for k in keys))  # fmt: skip
    print("paired differences (points), mean [95 % interval]")
    for i, b in enumerate(args.arms):
        for a in args.arms[i + 1 :]:
            seeds = [s for s in args.seeds if (a, s) in res and (b, s) in res]
            if len(seeds) < 2:
                continue
            d = {k: _interval([_scores(res[a, s])[k] - _scores(res[b, s])[k] for s in seeds])
                 for k in keys}  # fmt: skip
            out["paired"][f"{a} - {b}"] = d | {"seeds": seeds}
            print(f"{a} - {b} ({len(seeds)} seeds): " + ", ".join(
                f"{k} {d[k]['mean']:+.2f} {d[k].get('ci95', '')}"
                for k in ("es_dice", "worst_group", "dice_pooled")))  # fmt: skip
    return out


def plot(report_: dict, dest: Path) -> None:
    """Each arm's Dice per attribute value (and ES-Dice), one dot per seed, bar at the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(report_["arms"])
    counts = report_["settings"]["test_images_per_attribute"]
    groups = sorted(counts)
    keys = [f"dice[{g}]" for g in groups] + ["es_dice"]
    labels = [f"{g}\n({counts[g]} test)" for g in groups] + ["ES-Dice"]
    fig, ax = plt.subplots(figsize=(2.6 + 1.15 * len(keys), 3.6), dpi=120)
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        per_seed = report_["arms"][arm]["per_seed"]
        xs = np.arange(len(keys)) + (i - (len(arms) - 1) / 2) * width
        vals = np.array([[100 * per_seed[s].get(k, np.nan) for k in keys] for s in per_seed])
        ax.bar(xs, np.nanmean(vals, 0), width * 0.9, alpha=0.75,
               label=f"{arm} ({len(per_seed)} seeds)")  # fmt: skip
        for row in vals:
            ax.plot(xs, row, "k.", ms=4)
    ax.set_xticks(np.arange(len(keys)), labels, fontsize=8)
    ax.set_ylabel("per-image Dice (%)")
    ax.set_ylim(0, 100)
    s = report_["settings"]
    ax.set_title(f"attribute routing, cohort '{report_['cohort']}': {s['iterations']} "
                 "iterations; dots: seeds", fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(dest)
    print(f"wrote {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "report", "plot"])
    ap.add_argument("paths", nargs="*", type=Path, help="plot: REPORT.json OUT.png")
    ap.add_argument("--cohort", choices=["centre", "category"], default="centre")
    ap.add_argument("--ebhi", type=Path, help="centre: a fewlabel_pairs prepare-ebhi folder")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/attr"))
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--seeds", nargs="+", default=["0-2"])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--per-category", type=int, default=2, help="category: labels per value")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.command == "plot":
        if len(args.paths) != 2:
            ap.error("plot needs REPORT.json OUT.png")
        plot(json.loads(args.paths[0].read_text()), args.paths[1])
        return
    args.seeds = _seeds(args.seeds)
    if args.command == "run":
        root = prepare(args)
        jobs = [(a, s) for s in args.seeds for a in args.arms]  # seed-major: pairs first
        with ThreadPoolExecutor(args.lanes) as pool:
            list(pool.map(lambda job: _job(args, root, *job), jobs))
    out = report(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
