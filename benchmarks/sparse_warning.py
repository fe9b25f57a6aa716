"""How often the dock's "unpainted gland-like tissue" warning is right, on GlaS train.

For each image with >= 2 glands, at half resolution (near the dock's working scale): fully
painted (every warning is a false alarm) and with half of its glands, drawn at random,
left unpainted (a warning is a detection); the rule in use (core.sparse) against the
colour-mean rule it replaced.

    .venv/bin/python benchmarks/sparse_warning.py [--data ../shared/data/glas/train] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_semimoe.core.sparse import (  # noqa: E402
    count_gland_sized,
    gland_like_unpainted,
    glands_of,
)


def colour_mean_rule(image: np.ndarray, a: np.ndarray, sigma: float = 2.0) -> int:
    """The rule before: nearest of the two mean colours (smoothed over ``sigma`` px)."""
    glands = glands_of(a)
    unpainted = a == 0
    if not glands.any() or not unpainted.any():
        return 0
    f = ndi.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
    g, b = f[glands].mean(0), f[unpainted].mean(0)
    near = ((f - g) ** 2).sum(-1) < ((f - b) ** 2).sum(-1)
    return count_gland_sized(unpainted & near, glands)


def main() -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/glas/train")
    ap.add_argument("--seed", type=int, default=0, help="which glands are left unpainted")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    files = sorted((args.data / "images").glob("*.png"))
    if not files:
        print(f"no GlaS images in {args.data}/images")
        return 2
    rules = {
        "discriminant (in use)": gland_like_unpainted,
        "colour mean (before)": colour_mean_rule,
    }
    counts = {k: {"false_alarms": 0, "detections": 0} for k in rules}
    rng = np.random.default_rng(args.seed)
    n = 0
    for fp in files:
        img = np.asarray(Image.open(fp).convert("RGB"))[::2, ::2]
        full = np.asarray(Image.open(args.data / "masks" / fp.name))[::2, ::2].astype(np.uint16)
        ids = [i for i in np.unique(full) if i]
        if len(ids) < 2:
            continue
        half = full.copy()
        half[np.isin(half, rng.permutation(ids)[: len(ids) // 2])] = 0
        n += 1
        for k, rule in rules.items():
            counts[k]["false_alarms"] += rule(img, full) > 0
            counts[k]["detections"] += rule(img, half) > 0
    print(f"{n} GlaS train images with >= 2 glands, half resolution")
    print("| rule | warns on fully painted (false alarm) | warns on half painted (detection) |")
    print("|---|---|---|")
    for k, c in counts.items():
        fa, det = c["false_alarms"], c["detections"]
        print(f"| {k} | {fa}/{n} ({fa / n:.0%}) | {det}/{n} ({det / n:.0%}) |")
    if args.json:
        args.json.write_text(json.dumps({"images": n, "seed": args.seed, **counts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
