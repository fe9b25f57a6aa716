"""Do the inference optimisations change what a trained model predicts? (real images)

For each image of a folder, the model is predicted four ways: ``today`` (the network as
trained, bf16 autocast where the CPU has bf16 units: the default before
``core/inference/optimize.py``), ``fp32`` (as trained, fp32), ``folded fp32`` (batch norm
folded, phase kernels precomputed, channels-last) and ``optimized`` (the default now: folded
+ bf16 weights under bf16 autocast). Reported per pair: the largest probability difference,
the Dice between the two masks (pooled and the worst image) and the share of equal pixels.

    python benchmarks/inference_agreement.py RUN ../shared/data/glas/testA --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.slide import read_image

PATHS = {
    "today": dict(precision="auto", optimize=False),
    "fp32": dict(precision="fp32", optimize=False),
    "folded fp32": dict(precision="fp32"),
    "optimized": dict(precision="auto"),
}
PAIRS = [("fp32", "folded fp32"), ("today", "optimized"), ("fp32", "optimized"), ("fp32", "today")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("folder", help="a folder of images, or one with an images/ subfolder")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="the first N images only")
    ap.add_argument("--json")
    args = ap.parse_args()
    folder = Path(args.folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".bmp"))
    files = files[: args.limit]
    preds = {
        k: Predictor(load_model(args.run, "cpu"), PredictOptions(threads=args.threads, **o))
        for k, o in PATHS.items()
    }
    inter = {p: 0 for p in PAIRS}
    total = {p: 0 for p in PAIRS}
    equal = {p: 0 for p in PAIRS}
    worst = {p: 1.0 for p in PAIRS}
    maxdiff = {p: 0.0 for p in PAIRS}
    pixels = 0
    for f in files:
        img = read_image(f)
        out = {k: p.predict_image(img, instances=False) for k, p in preds.items()}
        pixels += out["today"]["mask"].size
        for a, b in PAIRS:
            ma, mb = out[a]["mask"].astype(bool), out[b]["mask"].astype(bool)
            inter[(a, b)] += int((ma & mb).sum())
            total[(a, b)] += int(ma.sum() + mb.sum())
            equal[(a, b)] += int((ma == mb).sum())
            s = ma.sum() + mb.sum()
            worst[(a, b)] = min(worst[(a, b)], 1.0 if s == 0 else 2 * (ma & mb).sum() / s)
            d = float(np.abs(out[a]["prob"] - out[b]["prob"]).max())
            maxdiff[(a, b)] = max(maxdiff[(a, b)], d)
    result = {
        "run": args.run,
        "images": len(files),
        "steps": {k: p.steps for k, p in preds.items()},
        "pairs": {
            f"{a} vs {b}": {
                "dice_pooled": round(2 * inter[(a, b)] / max(1, total[(a, b)]), 6),
                "dice_worst_image": round(float(worst[(a, b)]), 6),
                "pixels_equal": round(equal[(a, b)] / pixels, 6),
                "max_prob_diff": round(maxdiff[(a, b)], 6),
            }
            for a, b in PAIRS
        },
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
