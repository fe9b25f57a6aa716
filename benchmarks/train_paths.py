"""Training-iteration time of the ways one Semi-MoE step can be run, interleaved in one process.

    python benchmarks/train_paths.py --repeats 15 --json docs/benchmarks/train_paths.json

Variants (2 labeled + 2 unlabeled tiles of 256², b = 16, bf16 autocast, channels-last):

- ``reference``: upstream's way, fp32, NCHW (what ``bench`` divides by);
- ``batched``: all four tiles in one pass through each expert, batch norm over all four (the
  default, ``batch_norm="pooled"``);
- ``batched-literal``: the same with the decoder's up-steps computed in upstream's literal
  form (upsample then convolve, concatenate then convolve): what the phase up-convolutions
  and split concat convolutions of the fast path save;
- ``halves-sequential``: ``batch_norm="per-half"``, the halves one after the other (what that
  setting does on one thread or on a GPU);
- ``halves-side-by-side``: ``batch_norm="per-half"`` on two threads (2+ core CPU).

Each round steps every variant once, in turn, so host noise hits all alike; medians and the
per-round ratio to ``halves-side-by-side`` are printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_semimoe.core.bench import synthetic_tiles
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.model import UpStep
from napari_semimoe.core.train import TrainConfig, Trainer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, masks = synthetic_tiles(8, size=args.tile)
    data = TrainingSet(images[:4], masks[:4], images[4:])
    common = dict(
        width=16,
        iterations=10_000,
        checkpoint_every=10**9,
        geometry=Geometry(input_size=args.tile).to_dict(),
        compile="off",
        threads=args.threads,
    )
    tmp = tempfile.mkdtemp(prefix="semimoe-paths-")
    half = "per-half"
    trainers = {
        "reference": Trainer(TrainConfig(**common, fast=False, precision="fp32"), data, tmp + "/r"),
        "batched": Trainer(TrainConfig(**common), data, tmp + "/b"),
        "batched-literal": Trainer(TrainConfig(**common), data, tmp + "/l"),
        "halves-sequential": Trainer(TrainConfig(**common, batch_norm=half), data, tmp + "/s"),
        "halves-side-by-side": Trainer(TrainConfig(**common, batch_norm=half), data, tmp + "/p"),
    }
    for mod in trainers["batched-literal"].model.modules():
        if isinstance(mod, UpStep):
            mod.literal = True
    trainers["halves-sequential"].parallel_halves = False
    for tr in trainers.values():  # warm-up
        tr.step()
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for r in range(args.repeats):
        for k, tr in trainers.items():
            t = time.perf_counter()
            tr.step()
            times[k].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    base = np.array(times["halves-side-by-side"])
    out = {
        "tile": args.tile,
        "threads": args.threads,
        "repeats": args.repeats,
        "median_s": {k: round(float(np.median(v)), 4) for k, v in times.items()},
        "median_ratio_to_side_by_side": {
            k: round(float(np.median(np.array(v) / base)), 3) for k, v in times.items()
        },
        "rounds_slower_than_side_by_side": {
            k: int((np.array(v) > base).sum()) for k, v in times.items()
        },
        "all_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }
    print(json.dumps({k: v for k, v in out.items() if k != "all_s"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
