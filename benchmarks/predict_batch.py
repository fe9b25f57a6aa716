"""Prediction throughput by tile batch size and precision on one device, in one process.

    python benchmarks/predict_batch.py --device cuda --json docs/benchmarks/predict_batch_cuda.json

A 2048² working-scale image in 256² tiles with 64 px overlap, b = 16, freshly initialised
weights (speed does not depend on them). Every setting is timed in turn per round, so host
noise hits all alike; medians of the rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_semimoe.core.bench import synthetic_tiles
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.device import resolve_device
from napari_semimoe.core.inference import LoadedModel, PredictOptions, Predictor
from napari_semimoe.core.model import SemiMoE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    tile = 256
    image = np.tile(synthetic_tiles(1, size=tile)[0][0], (args.size // tile,) * 2 + (1,))
    model = SemiMoE(16).to(dev).eval()
    preds = {}
    for prec in ("auto", "fp32"):
        for b in (int(v) for v in args.batches.split(",")):
            loaded = LoadedModel(model, Geometry(tile=tile), [0.5] * 3, [0.25] * 3, {}, dev)
            preds[f"{prec}/b{b}"] = Predictor(loaded, PredictOptions(batch=b, precision=prec))
    for p in preds.values():  # warm-up: kernels chosen, memory pools filled
        p.predict_image(image[: 2 * tile, : 2 * tile], instances=False)
    times: dict[str, list[float]] = {k: [] for k in preds}
    for r in range(args.rounds):
        for k, p in preds.items():
            t = time.perf_counter()
            p.predict_image(image, instances=False)
            times[k].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    mpx = args.size**2 / 1e6
    out = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "image": args.size,
        "tile": tile,
        "mpx_per_s": {k: round(mpx / float(np.median(v)), 3) for k, v in times.items()},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
