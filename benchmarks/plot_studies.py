"""Plots of the paired studies' JSON reports, for docs/benchmarks.md (needs matplotlib:
``pip install -e ".[bench]"``).

    python benchmarks/plot_studies.py multiclass docs/benchmarks/multiclass_glas3.json \\
        docs/images/study-glas3.png
    python benchmarks/plot_studies.py fewlabel docs/benchmarks/fewlabel_10_1000.json \\
        docs/images/study-fewlabel.png

``multiclass``: each arm's Dice per class and its union foreground, one dot per seed and a
bar at the mean (multiclass_study.py's report). ``fewlabel``: each arm's pooled Dice per
seed on each test set, seeds joined by a line, so a paired difference is the slope between
two arms (fewlabel_pairs.py's report with ``--json``, which keeps per-seed values in its
paired section).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def multiclass(report: dict, out: Path) -> None:
    plt = _plt()
    arms = list(report["arms"])
    first = report["arms"][arms[0]]
    classes = [k[5:-1] for k in first["per_seed"][next(iter(first["per_seed"]))] if
               k.startswith("dice[")]  # fmt: skip
    keys = [f"dice[{c}]" for c in classes] + ["dice_mean_classes", "dice_pooled"]
    labels = classes + ["mean over classes", "union foreground"]
    fig, ax = plt.subplots(figsize=(3.4 + 1.3 * len(keys), 3.6), dpi=120)
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        seeds = report["arms"][arm]["per_seed"]
        xs = np.arange(len(keys)) + (i - (len(arms) - 1) / 2) * width
        vals = np.array([[100 * seeds[s][k] for k in keys] for s in seeds])
        ax.bar(xs, vals.mean(0), width * 0.9, label=f"{arm} ({len(seeds)} seeds)", alpha=0.75)
        for row in vals:
            ax.plot(xs, row, "k.", ms=4)
    ax.set_xticks(np.arange(len(keys)), labels, rotation=15, ha="right")
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 100)
    s = report.get("settings", {})
    ax.set_title(
        f"{report['task']}: {s.get('iterations')} iterations, "
        f"{100 * s.get('fraction', 0):.0f} % labeled; dots: seeds",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


def fewlabel(report: dict, out: Path) -> None:
    plt = _plt()
    sets = list(report["arms"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6), dpi=120, squeeze=False)
    for ax, tag in zip(axes[0], sets):
        arms = list(report["arms"][tag])
        per_seed: dict[str, list[float]] = {}
        for pair, d in report["paired"].get(tag, {}).items():
            a, b = pair.split(" - ")
            # per-seed values are differences; the arms' own values come from metrics files,
            # so the plot shows the means and each seed's difference to the first arm.
            if b == arms[0]:
                per_seed[a] = d["dice_pooled"]["per_seed"]
        base = report["arms"][tag][arms[0]]["dice_pooled"]["mean"]
        ax.axhline(0, color="grey", lw=0.8)
        for i, arm in enumerate(arms[1:], 1):
            d = per_seed.get(arm, [])
            ax.plot([i] * len(d), d, "o", alpha=0.7)
            if d:
                ax.plot([i - 0.2, i + 0.2], [np.mean(d)] * 2, "k-", lw=2)
        ax.set_xticks(range(1, len(arms)), arms[1:], rotation=15, ha="right")
        ax.set_xlim(0.5, len(arms) - 0.5)
        ax.set_ylabel(f"pooled Dice minus {arms[0]}'s (points)")
        ax.set_title(f"{tag}: {arms[0]} at {base:.1f}; dots: seeds, bar: mean", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["multiclass", "fewlabel"])
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    {"multiclass": multiclass, "fewlabel": fewlabel}[args.kind](report, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
