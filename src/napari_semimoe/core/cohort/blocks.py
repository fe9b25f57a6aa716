"""What a worker does for a cohort: plan a slide, predict a block's tiles, merge and label
the block, relabel it, build the pyramid, export a native-size TIFF.

Every function here is a dask task (also called in-process for a single slide): it takes
small arguments (paths, a :class:`SlidePlan`, options), reads its input lazily from the
slide or the slide's zarr, writes only its own whole chunks, and writes its done marker
atomically after them, so a task that is retried (its worker died) or re-run (``--resume``)
rewrites the same chunks with the same values.

The model is loaded once per worker process (:func:`worker_predictor`, a cache keyed by
the checkpoint's path and mtime and the options), never pickled into a task. In this
process (single-slide ``predict``), :func:`in_process` hands the tasks a predictor and an
open slide that are already there, plus a per-batch progress and cancel hook.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_json
from ..inference import PredictOptions, Predictor, load_model, working_reader, working_tissue
from ..inference.merge import InMemoryMerger
from ..inference.tiling import TileGrid, read_padded
from ..slide import open_slide
from . import layout
from .layout import SlidePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds its predictor (small and picklable; the model is not)."""

    run: str
    options: PredictOptions = field(default_factory=PredictOptions)
    device: str = "auto"
    #: set by :func:`in_process`: the token of a predictor handed in by this process
    local: str = ""

    def key(self) -> tuple:
        if self.local:
            return ("local", self.local)
        run = Path(self.run)
        ck = run / "checkpoint.safetensors" if run.is_dir() else run
        try:
            mtime = ck.stat().st_mtime_ns
        except OSError:
            mtime = 0
        return (str(run.resolve()), mtime, self.device, tuple(sorted(asdict(self.options).items())))


_CACHE: dict[tuple, Predictor] = {}
_LOCK = threading.Lock()
_LOADS = [0]


@dataclass
class _Local:
    predictor: Predictor
    tick: Callable[[int], None] | None = None
    cancel: Callable[[], bool] | None = None


_LOCAL: dict[str, _Local] = {}
_LOCAL_SLIDES: dict[str, object] = {}


@contextlib.contextmanager
def in_process(
    predictor: Predictor,
    slide,
    tick: Callable[[int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[ModelSpec]:
    """A spec whose tasks, run in this process, use ``predictor`` and the open ``slide``
    (by its path) instead of loading them; ``tick(n)`` after every batch of n tiles, and
    ``cancel()`` before it (true: the block raises InterruptedError)."""
    token = uuid.uuid4().hex
    path = str(slide.path)
    with _LOCK:
        _LOCAL[token] = _Local(predictor, tick, cancel)
        _LOCAL_SLIDES[path] = slide
    try:
        yield ModelSpec(path, predictor.opt, local=token)
    finally:
        with _LOCK:
            _LOCAL.pop(token, None)
            _LOCAL_SLIDES.pop(path, None)


def worker_predictor(spec: ModelSpec) -> Predictor:
    """This process's predictor for ``spec``: loaded on first use, then reused by every task
    (torch threads = ``spec.options.threads``, set by the predictor)."""
    if spec.local:
        return _LOCAL[spec.local].predictor
    key = spec.key()
    with _LOCK:
        p = _CACHE.get(key)
        if p is None:
            _CACHE.clear()  # one model per worker: a new checkpoint replaces the old one
            if not _LOADS[0]:
                from ..device import adaptive_malloc

                if adaptive_malloc():
                    log.info("pid %d: glibc's adaptive mmap threshold restored", os.getpid())
            p = Predictor(load_model(spec.run, spec.device), spec.options)
            _CACHE[key] = p
            _LOADS[0] += 1
            log.info("pid %d loaded %s", os.getpid(), spec.run)
        return p


_SLIDES: dict[tuple, object] = {}
#: Slides a worker keeps open (opening checks every tile's offsets: seconds for a big one).
OPEN_SLIDES = 4


def worker_slide(path: str):
    """This process's open :class:`Slide` for ``path`` (reopened when the file changed);
    the few most recent stay open for the next block of the same slide."""
    local = _LOCAL_SLIDES.get(str(path))
    if local is not None:
        return local
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    with _LOCK:
        slide = _SLIDES.pop(key, None)
        if slide is None:
            slide = open_slide(path)
        _SLIDES[key] = slide  # most recent last
        while len(_SLIDES) > OPEN_SLIDES:
            _SLIDES.pop(next(iter(_SLIDES))).close()
        return slide


def model_loads() -> int:
    """How many times this process has loaded a model (once per worker and checkpoint)."""
    return _LOADS[0]


def map_channels(predictor: Predictor) -> list[str]:
    """The float channels of the output: the predictor's maps (the family's, + the experts'
    when asked), + uncertainty when the family has the signals for it."""
    from ..uncertainty import supports

    maps = predictor.map_names()
    return maps + (["uncertainty"] if supports(list(predictor.family.output_maps())) else [])


# ----------------------------------------------------------------------------- plan


def plan_slide(
    path: str,
    name: str,
    out: str,
    spec: ModelSpec,
    block: int,
    chunk: int = layout.CHUNK,
    halo: int | None = None,
) -> SlidePlan:
    """Open the slide, decide its working shape and blocks, create its arrays and store the
    tissue mask; ``plan.json`` is written last. An unreadable slide raises InputError."""
    from ..errors import InputError

    p = worker_predictor(spec)
    g = p.m.geometry
    if g.input_size:
        raise InputError(
            f"{spec.run}: this model was trained on whole images resized to "
            f"{g.input_size}x{g.input_size}; a cohort needs a model trained with a working "
            "scale (--scale)"
        )
    slide = worker_slide(path)
    H, W = slide.shape
    work = g.working_shape((H, W))
    tissue = working_tissue(slide, work)
    mpp = slide.mpp
    plan = SlidePlan(
        path=str(path),
        name=name,
        out=str(out),
        shape=(int(H), int(W)),
        work=(int(work[0]), int(work[1])),
        mpp=mpp,
        maps=map_channels(p),
        block=int(block),
        halo=int(p.tile if halo is None else halo),
        tissue_px=int(tissue.sum()),
        chunk=int(chunk),
        stain=p.slide_stain(slide),
    )
    grid = TileGrid(plan.work, p.tile, p.overlap)
    plan.block_tiles = [
        len(block_tiles(grid, box, tissue if p.opt.tissue_only else None, 0, 0)[2])
        for box in plan.blocks()
    ]
    layout.create_arrays(plan)
    layout.open_array(out, f"{layout.WORK}/scratch/tissue")[:] = tissue
    atomic_write_json(layout.plan_path(out), plan.to_json())
    return plan


# ----------------------------------------------------------------------------- maps


def block_tiles(
    grid: TileGrid, box: tuple[int, int, int, int], tissue: np.ndarray | None, oy: int, ox: int
):
    """The global grid's tiles a block owns: those that start in its interior ``box`` (in
    grid order; every tile of the slide has exactly one owner), those without tissue left
    out; ``tissue`` covers the tiles' reach from (oy, ox)."""
    y0, y1, x0, x1 = box
    t = grid.tile
    ys = [y for y in grid.ys if y0 <= y < y1]
    xs = [x for x in grid.xs if x0 <= x < x1]
    out = []
    for y in ys:
        for x in xs:
            if tissue is not None and not tissue[y - oy : y - oy + t, x - ox : x - ox + t].any():
                continue
            out.append((y, x))
    return ys, xs, out


def reach(plan: SlidePlan, index: int, tile: int) -> tuple[int, int, int, int]:
    """Where block ``index``'s own tiles can write: its interior, plus one tile down and
    right (a tile starts in the interior and is at most ``tile`` px; blocks are >= a tile,
    so the reach ends inside the next block), cut at the image."""
    y0, y1, x0, x1 = plan.blocks()[index]
    h, w = plan.work
    return y0, min(y1 + tile, h), x0, min(x1 + tile, w)


def predict_block(spec: ModelSpec, plan: SlidePlan, index: int) -> dict:
    """Predict the tiles block ``index`` owns (each tile of the slide is predicted once, by
    the block it starts in) and keep their weighted sums over the block's :func:`reach` in
    ``.cohort/acc-INDEX.npy`` (channels: the maps, then the window weights); the gates of
    its tiles go to ``.cohort/gates-INDEX.npz``. :func:`window_maps` adds the sums that
    reach into a region from the blocks around it and normalises, which gives the
    whole-slide merge (same tiles, same windows; float sums in another order). Returns its
    tile count and network seconds."""
    p = worker_predictor(spec)
    p.use_stain(plan.stain)
    box = plan.blocks()[index]
    y0, y1, x0, x1 = box
    h, w = plan.work
    t = p.tile
    if t > plan.block:
        from ..errors import InputError

        raise InputError(f"the tile ({t} px) is larger than the block ({plan.block} px)")
    grid = TileGrid((h, w), t, p.overlap)
    names = p.map_names()
    _, ry1, _, rx1 = reach(plan, index, t)
    tissue = None
    if p.opt.tissue_only:
        tissue = np.asarray(
            layout.open_array(plan.out, f"{layout.WORK}/scratch/tissue", "r")[y0:ry1, x0:rx1]
        )
    _, _, todo = block_tiles(grid, box, tissue, y0, x0)
    merger = InMemoryMerger(names, (ry1 - y0, rx1 - x0), p.family.fills())
    # The merger crops tiles at its own border: only at the image border does a tile reach
    # it, and there it is cut as a whole-slide prediction cuts it.
    gates, boxes = [], []
    net = 0.0
    read = working_reader(worker_slide(plan.path), (h, w))
    hooks = _LOCAL.get(spec.local) if spec.local else None
    for b0 in range(0, len(todo), p.batch):
        if hooks is not None and hooks.cancel is not None and hooks.cancel():
            raise InterruptedError("prediction cancelled")
        chunk = todo[b0 : b0 + p.batch]
        tiles = np.stack([read_padded(read, y, x, t, t, h, w) for y, x in chunk])
        t0 = time.perf_counter()
        maps, g = p.predict_batch(tiles)
        net += time.perf_counter() - t0
        for j, (y, x) in enumerate(chunk):
            merger.add(y - y0, x - x0, {k: maps[k][j] for k in names}, p.window)
            boxes.append((y, x, min(t, h - y), min(t, w - x)))
            gates.append(g[j])
        if hooks is not None and hooks.tick is not None:
            hooks.tick(len(chunk))
    sums = np.stack([merger.acc[k] for k in names] + [merger.weight])
    with atomic_path(layout.marker(plan.out, "acc", index, "npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, sums)
    gate_shape = tuple(p.family.gate_shape)
    with atomic_path(layout.marker(plan.out, "gates", index, "npz")) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            gates=np.asarray(gates, np.float32).reshape(-1, *gate_shape),
            boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
        )
    layout.mark_done(layout.marker(plan.out, "maps", index))
    return {"tiles": len(todo), "net_s": net}


def window_maps(p: Predictor, plan: SlidePlan, window: tuple[int, int, int, int]) -> dict:
    """The finished maps over ``window`` (a0, a1, b0, b1): the sums of every block whose
    tiles reach into it, added in block order (so every pixel gets the same float sum in
    whichever window it is read, and a retry writes the same values), divided by the summed
    window weights; pixels no tile covered get the family's fill values."""
    names = p.map_names()
    a0, a1, b0, b1 = window
    sums = np.zeros((len(names) + 1, a1 - a0, b1 - b0), np.float32)
    B = plan.block
    rows, cols = plan.grid()
    for r in range(max(0, a0 // B - 1), min(rows, (a1 - 1) // B + 1)):
        for c in range(max(0, b0 // B - 1), min(cols, (b1 - 1) // B + 1)):
            n = r * cols + c
            y0, y1, x0, x1 = reach(plan, n, p.tile)
            ya, yb, xa, xb = max(a0, y0), min(a1, y1), max(b0, x0), min(b1, x1)
            if ya >= yb or xa >= xb:
                continue
            part = np.load(layout.marker(plan.out, "acc", n, "npy"), mmap_mode="r")
            into = sums[:, ya - a0 : yb - a0, xa - b0 : xb - b0]
            into += part[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
    weight = sums[-1]
    covered = weight > 0
    fills = p.family.fills()
    maps = {}
    for i, k in enumerate(names):
        m = sums[i]
        np.divide(m, weight, out=m, where=covered)
        m[~covered] = fills[k]
        maps[k] = m
    return maps


# ----------------------------------------------------------------------------- labels


def _window(plan: SlidePlan, index: int) -> tuple[tuple[int, int, int, int], tuple[int, ...]]:
    y0, y1, x0, x1 = plan.blocks()[index]
    h, w = plan.work
    r = plan.halo
    return (y0, y1, x0, x1), (max(0, y0 - r), min(h, y1 + r), max(0, x0 - r), min(w, x1 + r))


def label_block(spec: ModelSpec, plan: SlidePlan, index: int) -> dict:
    """The finished maps and mask of block ``index``'s interior (:func:`window_maps`), then
    its instances (the family's rule) and uncertainty, computed on its interior plus a halo
    of ``plan.halo`` px of the finished maps, so a gland smaller than the halo is seen whole
    by every block it touches. Writes block-local ids (1..n) for the interior into the
    scratch array; returns, per side, the ids along the interior edge and
    just outside it (in this block's labelling) so the driver can join glands across
    borders, and each id's area."""
    from ..uncertainty import uncertainty_map

    p = worker_predictor(spec)
    (y0, y1, x0, x1), (a0, a1, b0, b1) = _window(plan, index)
    maps = window_maps(p, plan, (a0, a1, b0, b1))
    maps["mask"] = p.mask(maps)
    iy, ix = y0 - a0, x0 - b0
    inside = (slice(iy, iy + (y1 - y0)), slice(ix, ix + (x1 - x0)))
    image = layout.open_array(plan.out, "0")
    for c, k in enumerate(p.map_names()):
        image[c, y0:y1, x0:x1] = maps[k][inside]
    layout.open_array(plan.out, "labels/mask/0")[y0:y1, x0:x1] = maps["mask"][inside]
    lab = p.instances(maps, scale=1.0)
    inner = lab[iy : iy + (y1 - y0), ix : ix + (x1 - x0)]
    ids, local = np.unique(inner, return_inverse=True)
    local = local.reshape(inner.shape).astype(np.int32)
    if ids[0] != 0:  # no background in the interior: ids start at 1 anyway
        local += 1
        ids = np.concatenate([[0], ids])
    lut = np.zeros(int(lab.max()) + 1, np.int32)  # this block's labels -> local ids
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    keep = np.isin(lab, ids)
    lab_local = np.where(keep, lut[np.where(keep, lab, 0)], -1)  # -1: a gland not in the interior

    def lines(a, b):  # interior edge line a, the line just outside b (None at the image edge)
        return [lab_local[a].tolist(), None if b is None else lab_local[b].tolist()]

    H, W = lab.shape
    cols = slice(ix, ix + (x1 - x0))
    rows = slice(iy, iy + (y1 - y0))
    sides = {
        "top": lines((iy, cols), (iy - 1, cols) if iy > 0 else None),
        "bottom": lines(
            (iy + y1 - y0 - 1, cols), (iy + y1 - y0, cols) if iy + y1 - y0 < H else None
        ),
        "left": lines((rows, ix), (rows, ix - 1) if ix > 0 else None),
        "right": lines(
            (rows, ix + x1 - x0 - 1), (rows, ix + x1 - x0) if ix + x1 - x0 < W else None
        ),
    }
    layout.open_array(plan.out, f"{layout.WORK}/scratch/provisional")[y0:y1, x0:x1] = local
    if "uncertainty" in plan.maps:
        u = uncertainty_map(maps)[rows, cols]
        image[plan.maps.index("uncertainty"), y0:y1, x0:x1] = u
    areas = np.bincount(local.ravel(), minlength=len(ids)).tolist()
    result = {"index": index, "count": len(ids) - 1, "areas": areas, "sides": sides}
    atomic_write_json(layout.marker(plan.out, "labels", index, "json"), result)
    return result


def relabel_block(plan: SlidePlan, index: int, lut: list[int]) -> int:
    """Write the final instance ids of block ``index``: ``lut[local id]``."""
    y0, y1, x0, x1 = plan.blocks()[index]
    local = np.asarray(
        layout.open_array(plan.out, f"{layout.WORK}/scratch/provisional", "r")[y0:y1, x0:x1]
    )
    table = np.asarray(lut, np.uint32)
    layout.open_array(plan.out, "labels/instances/0")[y0:y1, x0:x1] = table[local]
    layout.mark_done(layout.marker(plan.out, "relabel", index))
    return index


# ----------------------------------------------------------------------------- pyramid


def build_pyramid(plan: SlidePlan, key: str) -> str:
    """Levels 1.. of ``key`` ("" = the maps, ``labels/mask``, ``labels/instances``), each
    from the previous one (:func:`..ngff.fill_levels`: whole chunks, bounded memory)."""
    import zarr

    from .. import ngff

    group = zarr.open_group(Path(plan.out) / key if key else Path(plan.out), mode="r+")
    shapes = layout.level_shapes(plan.work, plan.chunk)
    ngff.fill_levels(group, shapes, key.startswith("labels"), plan.chunk)
    layout.mark_done(layout.marker(plan.out, "pyramid", key.replace("/", "_") or "maps"))
    return key


def gather_gates(plan: SlidePlan) -> str:
    """Every block's owned tiles' gates into the slide's ``tiles/gates`` (n, *gate_shape)
    and ``tiles/boxes`` (n, 4: y, x, h, w in working px), in the tile grid's order (the
    order of a whole-slide prediction)."""
    parts = []
    for b in range(len(plan.blocks())):
        with np.load(layout.marker(plan.out, "gates", b, "npz")) as z:
            parts.append((z["gates"], z["boxes"]))
    gates = np.concatenate([g for g, _ in parts])
    boxes = np.concatenate([b for _, b in parts])
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    layout.write_tiles(plan, gates[order], boxes[order])
    layout.mark_done(layout.marker(plan.out, "pyramid", "gates"))
    return "gates"


# ----------------------------------------------------------------------------- export


def export_mask_tiff(plan: SlidePlan, dest: str) -> str:
    """The mask at the slide's native size as a tiled (OME-)TIFF pyramid, for tools that need
    it (QuPath, older viewers); streamed band by band from the zarr."""
    from ..inference.writers import write_tiled

    mask = layout.open_array(plan.out, "labels/mask/0", "r")
    write_tiled(Path(dest), mask, plan.shape, True, np.uint8, mpp=plan.mpp)
    return dest
