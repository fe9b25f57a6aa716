"""Pooled Dice of the gated output vs the segmentation expert alone, on a data folder.

Used to diagnose where semi-supervised training helps or hurts (docs/benchmarks.md):

    python benchmarks/glas_gate_vs_expert.py RUN ../shared/data/glas/testA
    python benchmarks/glas_gate_vs_expert.py RUN ../shared/data/glas/train --skip RUN/split.json

With ``--skip``, the run's labeled images are left out (the unlabeled pool remains).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_semimoe.core.data import scan_folder
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.metrics import PixelAccumulator
from napari_semimoe.core.slide import read_image, read_mask


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("folder")
    ap.add_argument("--skip", help="split.json whose 'labeled' images are left out")
    args = ap.parse_args()
    pred = Predictor(load_model(args.run, "cpu"), PredictOptions(threads=1, experts=True))
    items = [it for it in scan_folder(args.folder) if it.mask_path]
    if args.skip:
        labeled = set(json.loads(Path(args.skip).read_text())["labeled"])
        items = [it for it in items if it.name not in labeled]
    gated, expert = PixelAccumulator(), PixelAccumulator()
    for it in items:
        image = read_image(it.image_path)
        gt = read_mask(it.mask_path, image.shape[:2])
        out = pred.predict_image(image, instances=False)
        gated.add(out["prob"] >= 0.5, gt)
        expert.add(out["expert_prob"] >= 0.5, gt)
    print(
        json.dumps(
            {
                "run": args.run,
                "folder": args.folder,
                "images": len(items),
                "gated_dice_pooled": round(100 * gated.dice_pooled, 2),
                "seg_expert_dice_pooled": round(100 * expert.dice_pooled, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
