"""Markdown tables for docs/benchmarks.md from the JSON results in docs/benchmarks/."""

from __future__ import annotations

import json
import math
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
RES = DOCS / "benchmarks"


def load(name: str) -> dict | None:
    p = RES / name
    return json.loads(p.read_text()) if p.exists() else None


def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def px(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def glas_table(runs: dict) -> str:
    head = (
        "| run | iterations | train wall time | Dice pooled | Jaccard pooled | Dice per image "
        "(mean ± std) | object F1 | object Dice | object Hausdorff (px) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name, r in runs.items():
        f = r["final"]
        wall = r.get("train_wall_time_s")
        rows.append(
            f"| {name} | {r['iterations']} | {wall / 60:.0f} min | {pct(f['dice_pooled'])} | "
            f"{pct(f['jaccard_pooled'])} | {pct(f['dice_per_image_mean'])} ± "
            f"{pct(f['dice_per_image_std'])} | {pct(f['object_f1'])} | "
            f"{pct(f['object_dice'])} | {px(f['object_hausdorff'])} |"
        )
    return head + "\n".join(rows) + "\n"


def curve_table(runs: dict) -> str:
    its = sorted({c["iteration"] for r in runs.values() for c in r["curve"]})
    if not its:
        return ""
    names = [n for n, r in runs.items() if r["curve"]]
    out = "| iteration | " + " | ".join(f"{n} Dice pooled" for n in names) + " |\n"
    out += "|---" * (len(names) + 1) + "|\n"
    for it in its:
        cells = []
        for n in names:
            c = [x for x in runs[n]["curve"] if x["iteration"] == it]
            cells.append(pct(c[0]["dice_pooled"]) if c else "")
        out += f"| {it} | " + " | ".join(cells) + " |\n"
    return out


def active_tables(seeds: dict) -> str:
    """testA Dice per round for each strategy (each seed and the mean) and Spearman rho."""
    strategies = [k for k in ("active", "active_uncertainty", "random") if k in seeds["0"]]
    runs = {s: {k: v[s] for k, v in seeds.items() if s in v} for s in strategies}
    n_rounds = max(len(r) for by_seed in runs.values() for r in by_seed.values())
    cols = [f"{s} s{k}" for s in strategies for k in runs[s]]
    cols += [f"{s} mean ({len(runs[s])} seeds)" for s in strategies]
    out = "| round | labeled | " + " | ".join(cols) + " |\n"
    out += "|---" * (2 + len(cols)) + "|\n"
    for r in range(n_rounds):
        cells, means = [], []
        for s in strategies:
            vals = [v[r]["dice_pooled"] for v in runs[s].values() if len(v) > r]
            cells += [pct(v) for v in vals]
            means.append(pct(sum(vals) / len(vals)))
        n_lab = len(next(iter(runs["random"].values()))[r]["labeled"])
        out += f"| {r} | {n_lab} | " + " | ".join(cells + means) + " |\n"
    for s in strategies:
        rows = [r["spearman_score_vs_error"] for v in runs[s].values() for r in v]
        keys = list(rows[0])
        out += f"\nSpearman rho (score vs 1 - Dice, testA images), {s} runs ({len(rows)} models):\n"
        out += "| " + " | ".join(keys) + " |\n" + "|---" * len(keys) + "|\n"
        out += (
            "| " + " | ".join(f"{sum(x[k] for x in rows) / len(rows):+.2f}" for k in keys) + " |\n"
        )
    return out


def main() -> None:
    """Print the tables of docs/benchmarks.md (the prose around them is written by hand)."""
    glas = load("glas.json")
    if glas:
        main_runs = {k: v for k, v in glas.items() if "400" not in k}
        print(glas_table(main_runs))
        print(curve_table(main_runs))
        prec = {k: v for k, v in glas.items() if "400" in k}
        if prec:
            print(glas_table(prec))
    active = load("active.json")
    if active:
        print(active_tables(active["seeds"]))
    ui = load("ui.json")
    if ui:
        print(
            "| phase | seconds | ticks | longest stall (ms) | p99 (ms) | median (ms) | "
            "stalls > 100 ms |\n|---|---|---|---|---|---|---|"
        )
        for r in ui["results"]:
            print(
                f"| {r['phase']} | {r['seconds']} | {r['ticks']} | {r['max_stall_ms']} | "
                f"{r['p99_ms']} | {r['median_ms']} | {r['stalls_over_100ms']} |"
            )


if __name__ == "__main__":
    main()
