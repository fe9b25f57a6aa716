"""Write the two real multi-class tasks as data folders with a ``classes.json``.

- ``glas``: GlaS 3-class, background / benign gland / malignant gland: each image's gland
  pixels (instance mask > 0) take the class of its grade in ``glas/grades.csv``.
- ``ebhi``: EBHI-Seg 7-class, background + the gland of each of the six diagnostic
  categories: gland pixels (mask > 127: the masks are 0/255 with soft edges) take the class
  of the image's category in ``ebhi/classes.csv``.

Masks are made from the released ones by these rules only (nothing is edited by hand);
images are linked, not copied. Each split becomes ``OUT/<task>/<split>/{images,masks}`` plus
``classes.json``; the script prints (and writes to ``OUT/<task>/summary.json``) each class's
pixel share in the training split and the log-gap split DCA would make of it.

    python benchmarks/multiclass_data.py glas /tmp/mc
    python benchmarks/multiclass_data.py ebhi /tmp/mc
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from napari_semimoe.core.classes import ClassTable, pixel_counts, write_classes
from napari_semimoe.core.dca import log_gap_split

DATA = Path(os.environ.get("SEMIMOE_DATA", "/work/shared/data"))
EBHI_CLASSES = ("Adenocarcinoma", "High-grade IN", "Low-grade IN", "Normal", "Polyp",
                "Serrated adenoma")  # fmt: skip


def _write(out: Path, split: str, items, table: ClassTable) -> list[np.ndarray]:
    """Link the images, write the class masks; returns the masks."""
    root = out / split
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    write_classes(root, table)
    masks = []
    for image, mask in items:
        link = root / "images" / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
        Image.fromarray(mask).save(root / "masks" / f"{image.stem}.png")
        masks.append(mask)
    return masks


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def glas(out: Path) -> dict[str, list[np.ndarray]]:
    grades = {r["name"]: r["grade"] for r in _rows(DATA / "glas/grades.csv")}
    ids = {"benign": 1, "malignant": 2}
    table = ClassTable.from_names(["background", "benign gland", "malignant gland"])
    written = {}
    for split in ("train", "testA"):
        items = []
        for img in sorted((DATA / "glas" / split / "images").glob("*.png")):
            inst = np.asarray(Image.open(DATA / "glas" / split / "masks" / img.name))
            items.append((img, np.where(inst > 0, ids[grades[img.stem]], 0).astype(np.uint8)))
        written[split] = _write(out, split, items, table)
    return written


def ebhi(out: Path) -> dict[str, list[np.ndarray]]:
    rows = _rows(DATA / "ebhi/classes.csv")
    ids = {c: i + 1 for i, c in enumerate(EBHI_CLASSES)}
    table = ClassTable.from_names(["background", *EBHI_CLASSES])
    written = {}
    for split in ("train", "val"):
        items = []
        for r in (r for r in rows if r["split"] == split):
            img = DATA / "ebhi" / split / "images" / f"{r['name']}.png"
            m = np.asarray(Image.open(DATA / "ebhi" / split / "masks" / img.name).convert("L"))
            items.append((img, np.where(m > 127, ids[r["class"]], 0).astype(np.uint8)))
        written[split] = _write(out, split, items, table)
    return written


def summary(masks: list[np.ndarray], table: ClassTable) -> dict:
    counts = pixel_counts(masks, table.n_foreground)
    split = log_gap_split(counts)
    name = table.names
    return {
        "images": len(masks),
        "pixels": {name[k]: int(counts[k - 1]) for k in table.ids[1:]},
        "shares": {name[k]: round(split.shares[k - 1], 4) for k in table.ids[1:]},
        "order": [name[k] for k in split.order],
        "gaps": [round(g, 3) for g in split.gaps],
        "split": {g: [name[k] for k in getattr(split, g)] for g in ("head", "medium", "tail")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", choices=["glas", "ebhi"])
    ap.add_argument("out", type=Path, help="folder to write <task>/<split>/ into (not the repo)")
    args = ap.parse_args()
    out = args.out / ("glas3" if args.task == "glas" else "ebhi7")
    written = glas(out) if args.task == "glas" else ebhi(out)
    from napari_semimoe.core.classes import read_classes

    table = read_classes(out / next(iter(written)))
    report = {split: summary(m, table) for split, m in written.items()}
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
