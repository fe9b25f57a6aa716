"""Per-attribute quality and equity-scaled scores (dMoE's Eq. 19-20, after FairSeg):
ES = I_all / (1 + Σ_a |I_all − I_a|) for I in {Dice, IoU}.

``I_all`` and ``I_a`` are means of per-image scores (over all images, and over the images of
attribute value a). Images whose attribute is unknown count in ``I_all`` but form no group
of their own: Δ sums over the known groups only (``docs/method.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def equity_scaled(overall: float, groups: Mapping[str, float]) -> float:
    """``overall / (1 + Σ_a |overall − groups[a]|)``; no group: ``overall``."""
    delta = sum(abs(overall - v) for v in groups.values())
    return float(overall) / (1.0 + delta)


def per_attribute(scores: Sequence[float], attributes: Sequence[str | None]) -> dict[str, float]:
    """Mean score of each known attribute value (sorted by value)."""
    if len(scores) != len(attributes):
        raise ValueError(f"{len(scores)} scores but {len(attributes)} attributes")
    groups: dict[str, list[float]] = {}
    for s, a in zip(scores, attributes):
        if a:
            groups.setdefault(a, []).append(float(s))
    return {a: float(np.mean(v)) for a, v in sorted(groups.items())}


def equity_report(
    metrics: Mapping[str, Sequence[float]], attributes: Sequence[str | None]
) -> dict[str, object]:
    """For per-image metrics (e.g. ``{"dice": [...], "iou": [...]}``): each metric over all
    images, per attribute value, and equity-scaled (``es_dice``, ``es_iou``), plus the
    number of images per group and of unknown ones."""
    out: dict[str, object] = {}
    for name, scores in metrics.items():
        overall = float(np.mean(scores)) if len(scores) else float("nan")
        groups = per_attribute(scores, attributes)
        out[name] = overall
        out[f"{name}_per_attribute"] = groups
        out[f"es_{name}"] = equity_scaled(overall, groups)
    counts: dict[str, int] = {}
    for a in attributes:
        if a:
            counts[a] = counts.get(a, 0) + 1
    out["images_per_attribute"] = dict(sorted(counts.items()))
    out["unknown_attribute_images"] = sum(1 for a in attributes if not a)
    return out


def format_equity_table(report: Mapping[str, object]) -> str:
    """The equity report as a table: one row per attribute value (images, Dice, IoU), then
    all images and the equity-scaled scores."""
    dice = report.get("dice_per_attribute", {})
    iou = report.get("iou_per_attribute", {})
    counts = report.get("images_per_attribute", {})
    rows = [(str(a), str(counts.get(a, 0)), dice[a], iou.get(a, float("nan"))) for a in dice]
    n_all = sum(counts.values()) + int(report.get("unknown_attribute_images", 0))
    rows.append(("all images", str(n_all), report["dice"], report["iou"]))
    rows.append(("equity-scaled (ES)", "", report["es_dice"], report["es_iou"]))
    width = max(len("Attribute"), *(len(r[0]) for r in rows))
    lines = [f"{'Attribute':<{width}}  Images  Dice (%)  IoU (%)"]
    lines.append(f"{'-' * width}  ------  --------  -------")
    for name, n, d, j in rows:
        lines.append(f"{name:<{width}}  {n:>6}  {100 * float(d):8.2f}  {100 * float(j):7.2f}")
    unknown = int(report.get("unknown_attribute_images", 0))
    if unknown:
        lines.append(f"({unknown} images with no attribute count in 'all images' only)")
    return "\n".join(lines)
