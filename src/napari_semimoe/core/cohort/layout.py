"""One slide's OME-Zarr output: its arrays, its blocks, its done markers, its metadata.

``OUT/<name>.ome.zarr`` (zarr v3, NGFF 0.5, written through :mod:`napari_semimoe.core.ngff`,
the package's one OME-Zarr writer) holds, at the model's working resolution:

- ``0, 1, ...``: the float maps as channels (c, y, x): the family's maps (Semi-MoE: prob,
  sdf, boundary) and ``uncertainty`` when the family has the signals for it; a pyramid of
  halves, physical scale in µm (the slide's mpp times the working scale);
- ``labels/mask`` (uint8) and ``labels/instances`` (uint32, unique ids across the slide),
  NGFF labels with the same pyramid;
- ``tiles/gates`` (n, *gate_shape; Semi-MoE: n x 3 x 3, task x expert) and ``tiles/boxes``
  (n x 4: y, x, h, w in working px): the experts' weights of every predicted tile, in the
  tile grid's order (plain zarr arrays: NGFF has no table yet; ome-zarr readers skip them);
- ``.cohort/``: the work in progress: ``plan.json`` (the slide's shapes), per-block done
  markers written atomically after the block's chunks, scratch arrays. Removed once the
  slide is complete.

A slide is complete when its root carries the OME ``multiscales`` metadata: it is written
last, after every chunk and level, so an interrupted run never claims a finished slide.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import ngff
from ..atomic import atomic_write_json
from ..ngff import level_shapes

__all__ = ["level_shapes"]  # re-exported: the cohort's levels are the package's one rule

#: Working-scale pixels per chunk side; blocks are whole chunks.
CHUNK = ngff.CHUNK  # default; a plan may choose another (tests use small ones)
WORK = ".cohort"


@dataclass
class SlidePlan:
    """What the driver and the blocks know of one slide (``plan.json``)."""

    path: str
    name: str
    out: str  # the slide's .ome.zarr folder
    shape: tuple[int, int]  # level 0, native px
    work: tuple[int, int]  # working-scale shape (the outputs' level 0)
    mpp: float | None  # native µm per px, if the slide says
    maps: list[str]  # float channels, in order
    block: int  # block side, working px (a multiple of chunk)
    halo: int  # context read around a block for instances and uncertainty
    tissue_px: int  # tissue pixels at working scale
    chunk: int = CHUNK  # chunk side of every array, working px
    #: The slide's own stain basis (its thumbnail's Macenko vectors), when the model
    #: normalises stains: every block maps its tiles with it, so tiles of a slide match.
    stain: dict | None = None
    #: tissue tiles each block owns (the work of its ``maps`` task), in block order; the
    #: driver starts the largest first, so one big block does not finish alone at the end
    block_tiles: list[int] | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """Native px per working px along y and x."""
        return self.shape[0] / self.work[0], self.shape[1] / self.work[1]

    @property
    def work_mpp(self) -> float | None:
        """µm per working pixel (None without an mpp)."""
        return None if not self.mpp else self.mpp * (self.scale[0] + self.scale[1]) / 2

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Block interiors (y0, y1, x0, x1) in raster order; index = block id."""
        h, w = self.work
        b = self.block
        return [
            (y, min(y + b, h), x, min(x + b, w)) for y in range(0, h, b) for x in range(0, w, b)
        ]

    def grid(self) -> tuple[int, int]:
        return math.ceil(self.work[0] / self.block), math.ceil(self.work[1] / self.block)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SlidePlan:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["work"] = tuple(d["work"])
        return cls(**d)


def work_dir(out: str | Path) -> Path:
    return Path(out) / WORK


def plan_path(out: str | Path) -> Path:
    return work_dir(out) / "plan.json"


def marker(out: str | Path, stage: str, index: int | str, ext: str = "done") -> Path:
    return work_dir(out) / f"{stage}-{index}.{ext}"


def mark_done(path: Path) -> None:
    atomic_write_json(path, {"done": True})


def is_complete(out: str | Path) -> bool:
    """True when the slide's OME metadata (written last) is there."""
    doc = Path(out) / "zarr.json"
    if not doc.is_file():
        return False
    try:
        attrs = json.loads(doc.read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError):
        return False
    return "multiscales" in attrs.get("ome", attrs)


def create_arrays(plan: SlidePlan) -> None:
    """The slide's group and every array, empty (idempotent: a retried plan recreates them)."""
    import zarr

    out = Path(plan.out)
    root = zarr.open_group(out, mode="a", zarr_format=3)
    shapes = level_shapes(plan.work, plan.chunk)
    ngff.create_levels(root, shapes, "float32", plan.chunk, channels=len(plan.maps))
    labels = root.require_group("labels")
    for name, dtype in (("mask", "uint8"), ("instances", "uint32")):
        ngff.create_levels(labels.require_group(name), shapes, dtype, plan.chunk)
    scratch = zarr.open_group(work_dir(out) / "scratch", mode="a", zarr_format=3)
    h, w = plan.work
    C = plan.chunk
    scratch.create_array("provisional", shape=(h, w), chunks=(C, C), dtype="int32", overwrite=True)
    scratch.create_array("tissue", shape=(h, w), chunks=(C, C), dtype="bool", overwrite=True)


def write_tiles(plan: SlidePlan, gates, boxes) -> None:
    """``tiles/gates`` and ``tiles/boxes`` (replaced whole: a retried task writes the same)."""
    import zarr

    g = zarr.open_group(Path(plan.out), mode="a", zarr_format=3).require_group("tiles")
    for name, data in (("gates", gates), ("boxes", boxes)):
        chunks = tuple(max(1, n) for n in data.shape)
        g.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, overwrite=True)
        if data.size:
            g[name][...] = data


def read_tiles(out: str | Path):
    """(gates, boxes) of a finished slide, as numpy arrays."""
    import zarr

    g = zarr.open_group(Path(out) / "tiles", mode="r")
    return np.asarray(g["gates"][...]), np.asarray(g["boxes"][...])


def open_array(out: str | Path, key: str, mode: str = "r+"):
    import zarr

    return zarr.open_array(Path(out) / key, mode=mode)


def write_metadata(plan: SlidePlan, summary: dict | None = None) -> None:
    """The OME-NGFF metadata of the labels, then of the image (last: it marks completion)."""
    import zarr

    root = zarr.open_group(Path(plan.out), mode="a", zarr_format=3)
    shapes = level_shapes(plan.work, plan.chunk)
    for name in ("mask", "instances"):
        ngff.write_label_metadata(root, name, shapes, plan.work_mpp)
    ngff.write_image_metadata(
        root,
        shapes,
        plan.work_mpp,
        plan.name,
        channels=plan.maps,
        metadata={
            "semimoe": {
                "maps": plan.maps,
                "slide": plan.path,
                "native_shape": list(plan.shape),
                "native_mpp": plan.mpp,
                "working_mpp": plan.work_mpp,
                "summary": summary or {},
            },
        },
    )


def read_semimoe(out: str | Path) -> dict:
    """The ``semimoe`` metadata of a finished slide (maps, slide, summary); {} if none."""
    import zarr

    attrs = dict(zarr.open_group(Path(out), mode="r").attrs)
    ms = attrs.get("ome", attrs).get("multiscales") or [{}]
    return dict(ms[0].get("metadata", {}).get("semimoe", {}))


def finish(plan: SlidePlan, summary: dict | None = None) -> None:
    """Write the metadata, then drop the work folder (the slide is complete from here)."""
    write_metadata(plan, summary)
    shutil.rmtree(work_dir(plan.out), ignore_errors=True)
