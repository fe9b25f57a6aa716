"""Build the real H&E sample shipped with the plugin (plugin/sample_data/) from EBHI-Seg.

Six 224 x 224 colon-biopsy images at 400x, one per diagnostic category, in a 3 x 2 mosaic
with a white gutter, their expert gland masks (mask > 127) as one binary PNG, and a JSON that
says where each image lies and which ones are the annotated training tiles. EBHI-Seg is
CC BY 4.0 (Shi et al., Frontiers in Medicine 2023; figshare 21540159): the attribution
ships next to the files (sample_data/LICENSE-EBHI-Seg.md).

    .venv/bin/python benchmarks/make_ebhi_sample.py [../shared/data/ebhi]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_semimoe" / "plugin" / "sample_data"
#: (category, file in train/images, annotated): picked by eye for clear, typical glands.
PICKS = (
    ("Normal", "normal__GT2012221-2-400-001.png", True),
    ("Polyp", "polyp__GT2012286-3-400-004.png", False),
    ("Low-grade IN", "low-grade-in__GT2012175-1-400-001.png", True),
    ("High-grade IN", "high-grade-in__GT2012149-3-400-006.png", False),
    ("Serrated adenoma", "serrated-adenoma__GT2014848-1-400-001.png", False),
    ("Adenocarcinoma", "adenocarcinoma__GT2012468-1-400-006.png", True),
)
SIDE, GUTTER, COLS = 224, 32, 3


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ebhi") / "train"
    rows = -(-len(PICKS) // COLS)
    H, W = rows * SIDE + (rows + 1) * GUTTER, COLS * SIDE + (COLS + 1) * GUTTER
    img = np.full((H, W, 3), 245, np.uint8)  # glass
    mask = np.zeros((H, W), bool)
    images = []
    for i, (category, name, annotated) in enumerate(PICKS):
        r, c = divmod(i, COLS)
        y, x = GUTTER + r * (SIDE + GUTTER), GUTTER + c * (SIDE + GUTTER)
        img[y : y + SIDE, x : x + SIDE] = np.asarray(
            Image.open(src / "images" / name).convert("RGB")
        )
        m = np.asarray(Image.open(src / "masks" / name).convert("L")) > 127
        mask[y : y + SIDE, x : x + SIDE] = m
        images.append(
            {
                "category": category,
                "source": name.split("__", 1)[1],
                "y": y,
                "x": x,
                "size": SIDE,
                "annotated": annotated,
            }
        )
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(OUT / "ebhi_mosaic.png", optimize=True)
    Image.fromarray(mask).save(OUT / "ebhi_glands.png", optimize=True)  # 1-bit
    doc = {"dataset": "EBHI-Seg (CC BY 4.0)", "magnification": "400x", "images": images}
    (OUT / "ebhi_sample.json").write_text(json.dumps(doc, indent=1) + "\n")
    for f in sorted(OUT.iterdir()):
        print(f.name, f.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
