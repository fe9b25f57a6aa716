"""Tiled prediction of images of any size, with overlap blending and bounded memory.

The model sees tiles at its working scale; tile outputs are blended with a smooth window
so no seams show, then (for output files) resampled back to the input's native size band
by band. Pyramids are read lazily, region by region, through :class:`~.slide.Slide`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import damaged_run_files, load_model_state, model_meta, read_checkpoint
from .data import Geometry, normalise
from .device import autocast, autocast_dtype, resolve_device, set_threads
from .errors import CheckpointError, InputError
from .instances import label_instances
from .model import TASKS, SemiMoE

#: Maps written at working scale; experts' maps only when asked for.
BASE_MAPS = ("prob", "sdf", "boundary")
EXPERT_MAPS = ("expert_prob", "expert_sdf", "expert_boundary")
#: Value of each map where no tile was predicted (glass skipped by the tissue mask).
FILL = {
    "prob": 0.0,
    "sdf": -1.0,
    "boundary": 0.0,
    "expert_prob": 0.0,
    "expert_sdf": -1.0,
    "expert_boundary": 0.0,
}

ProgressFn = Callable[[int, int], None]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what it needs to see images as in training."""

    model: SemiMoE
    geometry: Geometry
    mean: list[float]
    std: list[float]
    meta: dict
    device: torch.device


def load_model(run: str | Path, device: str = "auto") -> LoadedModel:
    """Load a run folder or checkpoint file for inference (no pickle is ever executed).

    The checkpoint's metadata is checked against its tensors before the model is built; the
    run's other JSON files are not needed, so a damaged one is only reported."""
    tensors, doc = read_checkpoint(run)
    meta = model_meta(run, doc, tensors)
    for name, reason in damaged_run_files(run):
        log.warning(
            "%s is damaged (%s); predicting with the checkpoint, which holds all that "
            "prediction needs",
            Path(run) / name,
            reason,
        )
    dev = resolve_device(device)
    model = SemiMoE(int(meta["width"]))
    try:
        load_model_state(model, tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{run}: {exc}") from None
    model.to(dev).eval()
    return LoadedModel(
        model, Geometry.from_dict(meta["geometry"]), meta["mean"], meta["std"], meta, dev
    )


@dataclass
class PredictOptions:
    tile: int | None = None  # working-scale tile side; default: the training tile (256)
    overlap: int | None = None  # default: a quarter of the tile
    batch: int | None = None  # tiles per forward pass; default 2 on a CPU, 16 on a GPU
    precision: str = "auto"
    threads: int | None = None
    experts: bool = False
    threshold: float = 0.5
    tissue_only: bool = False
    fast: bool = True  # channels-last on CPU; False = plain NCHW (the benchmark's reference)


@dataclass
class TileGrid:
    """Tile origins (working scale) covering an h x w image with a given overlap."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    ys: list[int] = field(init=False)
    xs: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.ys = _starts(self.shape[0], self.tile, self.overlap)
        self.xs = _starts(self.shape[1], self.tile, self.overlap)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((y, x) for y in self.ys for x in self.xs)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    stride = tile - overlap
    k = math.ceil((n - tile) / stride)
    # Spread the tiles evenly so that the last one ends exactly at the border.
    return [round(i * (n - tile) / k) for i in range(k + 1)]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """Separable weight that rises smoothly (sin^2) over ``overlap`` px from each edge.

    Strictly positive, so a pixel covered by a single tile (at the image border) keeps its
    value after normalisation.
    """
    if overlap <= 0:
        return np.ones((tile, tile), np.float32)
    d = np.minimum(np.arange(tile), np.arange(tile)[::-1]).astype(np.float32)
    r = np.clip((d + 0.5) / overlap, 0.0, 1.0)
    v = np.sin(0.5 * np.pi * r) ** 2
    v = np.maximum(v, 1e-3)
    return np.outer(v, v).astype(np.float32)


@dataclass
class WorkingPrediction:
    """Blended maps at working scale (float32 arrays, possibly disk-backed) + gate weights.

    ``tiles`` holds each prediction tile's (y, x, h, w) at working scale and ``gates`` the
    tile's 3 x 3 gate matrix (task x expert) in the same order.
    """

    maps: dict[str, np.ndarray]
    tiles: list[tuple[int, int, int, int]]
    gates: np.ndarray  # (n_tiles, 3, 3)
    cancelled: bool = False
    #: per tile, the pooled expert features the gates see (n_tiles, 3b); with ``experts``
    embeddings: np.ndarray | None = None


class Predictor:
    """Runs a loaded model over tiles; shared by the CLI, the plugin and the evaluator."""

    def __init__(self, loaded: LoadedModel, options: PredictOptions | None = None) -> None:
        self.m = loaded
        self.opt = options or PredictOptions()
        set_threads(self.opt.threads)
        self.amp = autocast_dtype(loaded.device, self.opt.precision)
        g = loaded.geometry
        self.tile = int(self.opt.tile or g.input_size or g.tile)
        if self.tile % 16:
            raise InputError(f"tile size must be a multiple of 16, got {self.tile}")
        self.overlap = self.tile // 4 if self.opt.overlap is None else int(self.opt.overlap)
        if not 0 <= self.overlap <= self.tile // 2:
            raise InputError(
                f"overlap must be between 0 and {self.tile // 2} (half the {self.tile} px tile)"
            )
        self.window = blend_window(self.tile, self.overlap)
        # A CPU gains nothing from larger batches; an H100 predicts 3.1 Mpx/s in batches
        # of 2 and 9.0 in batches of 16 (docs/benchmarks.md).
        default_batch = 16 if loaded.device.type == "cuda" else 2
        self.batch = default_batch if self.opt.batch is None else int(self.opt.batch)
        if self.batch < 1:
            raise InputError(f"batch must be at least 1, got {self.batch}")
        self.channels_last = self.opt.fast and loaded.device.type == "cpu"
        if self.channels_last:
            self.m.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ tiles -> maps

    @torch.inference_mode()
    def predict_batch(self, tiles: np.ndarray, embeddings: bool = False):
        """uint8 (N, h, w, 3) tiles (h, w multiples of 16) -> maps (N, h, w) and gates (N, 3, 3);
        with ``embeddings`` also the pooled expert features the gates see (N, 3b), which
        describe what the model sees in each tile (used to keep suggestions diverse)."""
        x = np.stack([normalise(t, self.m.mean, self.m.std) for t in tiles])
        xt = torch.from_numpy(x).to(self.m.device)
        if self.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with autocast(self.m.device, self.amp):
            out = self.m.model(xt)
        maps = {
            "prob": torch.softmax(out.gated["seg"].float(), 1)[:, 1],
            "sdf": torch.tanh(out.gated["sdf"].float())[:, 0],
            "boundary": torch.softmax(out.gated["bnd"].float(), 1)[:, 1],
        }
        if self.opt.experts:
            maps["expert_prob"] = torch.softmax(out.expert["seg"].float(), 1)[:, 1]
            maps["expert_sdf"] = torch.tanh(out.expert["sdf"].float())[:, 0]
            maps["expert_boundary"] = torch.softmax(out.expert["bnd"].float(), 1)[:, 1]
        gates = torch.stack([out.gates[t].float() for t in TASKS], dim=1)
        result = ({k: v.cpu().numpy() for k, v in maps.items()}, gates.cpu().numpy())
        if embeddings:
            emb = torch.cat([f.float().mean((2, 3)) for f in out.features], dim=1)
            return (*result, emb.cpu().numpy())
        return result

    def predict_region_reader(
        self,
        read: Callable[[int, int, int, int], np.ndarray],
        shape: tuple[int, int],
        *,
        tissue: np.ndarray | None = None,
        out_dir: Path | None = None,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> WorkingPrediction:
        """Predict a working-scale image given by ``read(y, x, h, w) -> uint8`` of ``shape``.

        Only one batch of tiles is in memory at a time. With ``out_dir`` the output maps are
        disk-backed (np.memmap) so a whole slide never has to fit in memory.
        """
        h, w = shape
        t = self.tile
        grid = TileGrid((h, w), t, self.overlap)
        names = list(BASE_MAPS) + (list(EXPERT_MAPS) if self.opt.experts else [])
        alloc = _allocator(out_dir)
        acc = {k: alloc(k, (h, w)) for k in names}
        wsum = alloc("_weight", (h, w))
        todo = []
        for y, x in grid:
            if tissue is not None and not tissue[y : y + t, x : x + t].any():
                continue
            todo.append((y, x))
        gates = np.zeros((len(todo), 3, 3), np.float32)
        embs: list[np.ndarray] = []
        boxes = []
        cancelled = False
        for b0 in range(0, len(todo), self.batch):
            if cancel is not None and cancel():
                cancelled = True
                break
            chunk = todo[b0 : b0 + self.batch]
            tiles = np.stack([_read_padded(read, y, x, t, t, h, w) for y, x in chunk])
            if self.opt.experts:
                maps, g, e = self.predict_batch(tiles, embeddings=True)
                embs.append(e)
            else:
                maps, g = self.predict_batch(tiles)
            gates[b0 : b0 + len(chunk)] = g
            for j, (y, x) in enumerate(chunk):
                hh, ww = min(t, h - y), min(t, w - x)
                win = self.window[:hh, :ww]
                for k in names:
                    acc[k][y : y + hh, x : x + ww] += maps[k][j, :hh, :ww] * win
                wsum[y : y + hh, x : x + ww] += win
                boxes.append((y, x, hh, ww))
            if progress is not None:
                progress(min(b0 + len(chunk), len(todo)), len(todo))
        # Normalise band by band (keeps memory bounded for disk-backed maps).
        for y0 in range(0, h, 1024):
            ws = wsum[y0 : y0 + 1024]
            covered = ws > 0
            for k in names:
                band = acc[k][y0 : y0 + 1024]
                np.divide(band, ws, out=band, where=covered)
                band[~covered] = FILL[k]
        emb = np.concatenate(embs)[: len(boxes)] if embs else None
        return WorkingPrediction(acc, boxes, gates[: len(boxes)], cancelled, emb)

    # ------------------------------------------------------------------ whole images

    def predict_image(
        self,
        image: np.ndarray,
        *,
        native: bool = True,
        instances: bool = True,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict an in-memory uint8 RGB image; maps at its native size (or working scale).

        Returns float32 ``prob``, ``sdf``, ``boundary`` (+ experts' maps), uint8 ``mask``,
        int32 ``instances`` and the per-tile ``gates``.
        """
        g = self.m.geometry
        work = g.image_to_working(image)
        wp = self.predict_region_reader(
            lambda y, x, hh, ww: work[y : y + hh, x : x + ww],
            work.shape[:2],
            progress=progress,
            cancel=cancel,
        )
        out = dict(wp.maps)
        if native and work.shape[:2] != image.shape[:2]:
            out = {k: resample(v, image.shape[:2]) for k, v in out.items()}
        out["mask"] = (out["prob"] >= self.opt.threshold).astype(np.uint8)
        if instances:
            out["instances"] = self.instances(
                out, scale=_area_scale(image.shape, work.shape) if native else 1.0
            )
        out["gates"] = wp.gates
        out["tiles"] = np.asarray(wp.tiles, np.int64).reshape(-1, 4)
        if wp.embeddings is not None:
            out["embeddings"] = wp.embeddings
        return out

    def instances(self, maps: dict[str, np.ndarray], scale: float = 1.0) -> np.ndarray:
        """Instances from a mask + SDF + boundary; ``scale`` = native px per working px (area)."""
        return label_instances(
            maps["mask"], maps["sdf"], maps["boundary"], min_size=max(4, round(16 * scale))
        )


def _area_scale(native: tuple[int, ...], work: tuple[int, ...]) -> float:
    return (native[0] * native[1]) / float(work[0] * work[1])


def _read_padded(read, y: int, x: int, th: int, tw: int, h: int, w: int) -> np.ndarray:
    """A full th x tw tile; parts beyond the image are mirrored, so the net sees
    tissue-like context rather than a hard edge (numpy mirrors repeatedly if needed)."""
    hh, ww = min(th, h - y), min(tw, w - x)
    a = np.asarray(read(y, x, hh, ww))
    if a.shape[:2] == (th, tw):
        return a
    return np.pad(a, ((0, th - a.shape[0]), (0, tw - a.shape[1]), (0, 0)), mode="symmetric")


def _allocator(out_dir: Path | None):
    if out_dir is None:
        return lambda name, shape: np.zeros(shape, np.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def alloc(name: str, shape: tuple[int, int]) -> np.ndarray:
        return np.memmap(out_dir / f"{name}.f32", dtype=np.float32, mode="w+", shape=shape)

    return alloc


# ----------------------------------------------------------------------------- resampling


def _coords(n_out: int, n_in: int, start: int = 0, count: int | None = None):
    """Bilinear source indices/weights for output pixels start..start+count (pixel centres)."""
    count = n_out - start if count is None else count
    pos = (np.arange(start, start + count) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def resample_band(
    src: np.ndarray, out_shape: tuple[int, int], y0: int, rows: int, nearest: bool = False
) -> np.ndarray:
    """Rows y0..y0+rows of ``src`` resampled to ``out_shape`` (bilinear, or nearest for labels)."""
    H, W = out_shape
    h, w = src.shape[:2]
    if nearest:
        yi = np.minimum(((np.arange(y0, y0 + rows) + 0.5) * h / H).astype(np.int64), h - 1)
        xi = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
        return np.asarray(src[yi[0] : yi[-1] + 1])[yi - yi[0]][:, xi]
    y_0, y_1, fy = _coords(H, h, y0, rows)
    x_0, x_1, fx = _coords(W, w)
    lo, hi = int(y_0.min()), int(y_1.max()) + 1
    rowsrc = np.asarray(src[lo:hi], np.float32)
    a = rowsrc[y_0 - lo]
    b = rowsrc[y_1 - lo]
    col = a + (b - a) * fy[:, None]
    return col[:, x_0] + (col[:, x_1] - col[:, x_0]) * fx[None, :]


def resample(src: np.ndarray, out_shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if src.shape[:2] == tuple(out_shape):
        return np.asarray(src)
    return resample_band(src, out_shape, 0, out_shape[0], nearest=nearest).astype(
        src.dtype if nearest else np.float32
    )


# ----------------------------------------------------------------------------- slides


def working_reader(slide, shape: tuple[int, int]) -> Callable[[int, int, int, int], np.ndarray]:
    """``read(y, x, h, w)`` in working-scale pixels of a slide whose working shape is ``shape``."""
    H, W = slide.shape
    scale = (H / shape[0] + W / shape[1]) / 2
    return lambda y, x, h, w: slide.read_scaled(y, x, h, w, scale)


def working_tissue(slide, shape: tuple[int, int]) -> np.ndarray:
    """The slide's tissue mask on the working-scale grid ``shape``."""
    from .slide import tissue_mask

    H, W = slide.shape
    tissue = tissue_mask(slide, (H / shape[0] + W / shape[1]) / 2)
    if tissue.shape != tuple(shape):
        tissue = resample(tissue.astype(np.uint8), shape, nearest=True).astype(bool)
    return tissue


#: Prefix of the scratch folder a prediction works in, inside the output folder; it holds the
#: disk-backed maps and the outputs until all of them are written. Followed by pid@host, so
#: a folder whose process has died (kill -9) is recognised and removed by the next prediction
#: on that machine (a shared folder may hold another machine's live scratch: never touched).
SCRATCH_PREFIX = ".semimoe-predict-"


def _host() -> str:
    import socket

    return "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname()) or "_"


def scratch_prefix() -> str:
    """This process's scratch-folder prefix: ``.semimoe-predict-<pid>@<host>-``."""
    return f"{SCRATCH_PREFIX}{os.getpid()}@{_host()}-"


def remove_stale_scratch(out_dir: str | Path) -> list[Path]:
    """Remove scratch folders in ``out_dir`` left by predictions on this machine whose
    process is gone."""
    removed = []
    for d in Path(out_dir).glob(SCRATCH_PREFIX + "*@*"):
        pid_text, _, rest = d.name[len(SCRATCH_PREFIX) :].partition("@")
        host = rest.rpartition("-")[0]
        if not pid_text.isdigit() or host != _host():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _check_space(out_dir: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise InputError(
            f"{what} needs {need / 1e9:.1f} GB of scratch space in {out_dir} but only "
            f"{free / 1e9:.1f} GB are free; free some space or choose another --out"
        )


def predict_slide(
    predictor: Predictor,
    slide,
    out_dir: str | Path,
    name: str,
    *,
    write_native: bool = True,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Path]:
    """Predict a (possibly gigapixel) slide and write TIFF outputs without loading it whole.

    Working-scale maps live in disk-backed arrays; native-size outputs are streamed to
    tiled TIFFs band by band. Everything is written in a scratch folder inside ``out_dir``
    and moved into place only once every output exists, so a failure, a cancel or a Ctrl-C
    leaves neither a half set of outputs nor the scratch folder.
    """
    g = predictor.m.geometry
    H, W = slide.shape
    if g.input_size and H * W > 64e6:
        raise InputError(
            f"{slide.path}: this model was trained on whole images resized to "
            f"{g.input_size}x{g.input_size}; a {W}x{H} slide needs a model trained with a "
            "working scale (--scale)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(out_dir)
    if not g.input_size:
        hw, ww = g.working_shape((H, W))
        n_maps = len(BASE_MAPS) + (len(EXPERT_MAPS) if predictor.opt.experts else 0) + 1
        _check_space(out_dir, n_maps * hw * ww * 4, f"predicting {name} ({W}x{H} px)")
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix(), dir=out_dir))
    try:
        if g.input_size:
            image = slide.read_region(0, 0, H, W)
            staged = _write_small(predictor, image, scratch, name, mpp=slide.mpp)
        else:
            staged = _predict_large(
                predictor, slide, scratch, name, (hw, ww), write_native, progress, cancel
            )
        written = {}
        for key, path in staged.items():
            dest = out_dir / path.name
            os.replace(path, dest)
            written[key] = dest
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _predict_large(
    predictor: Predictor,
    slide,
    scratch: Path,
    name: str,
    work_shape: tuple[int, int],
    write_native: bool,
    progress: ProgressFn | None,
    cancel: Callable[[], bool] | None,
) -> dict[str, Path]:
    """Predict at working scale with disk-backed maps and write every output into ``scratch``."""
    H, W = slide.shape
    hw, ww = work_shape
    tissue = working_tissue(slide, (hw, ww)) if predictor.opt.tissue_only else None
    wp = predictor.predict_region_reader(
        working_reader(slide, (hw, ww)),
        (hw, ww),
        tissue=tissue,
        out_dir=scratch / "maps",
        progress=progress,
        cancel=cancel,
    )
    if wp.cancelled:
        raise InterruptedError("prediction cancelled")
    maps = dict(wp.maps)
    maps["mask"] = (np.asarray(maps["prob"]) >= predictor.opt.threshold).astype(np.uint8)
    maps["instances"] = predictor.instances(maps, scale=1.0)
    shape = (H, W) if write_native else (hw, ww)
    written = {}
    kinds = [
        ("mask", True, np.uint8),
        ("prob", False, np.float32),
        ("sdf", False, np.float32),
        ("boundary", False, np.float32),
        ("instances", True, np.int32),
    ]
    kinds += [(k, False, np.float32) for k in EXPERT_MAPS if k in maps]
    mpp = slide.mpp if write_native else None
    for key, nearest, dtype in kinds:
        path = scratch / f"{name}_{key}.tif"
        _write_tiled(path, maps[key], shape, nearest, dtype, mpp=mpp)
        written[key] = path
    written["gates"] = _save_gates(
        scratch / f"{name}_gates.npz", wp.tiles, wp.gates, (H / hw, W / ww)
    )
    return written


def _save_gates(path: Path, tiles, gates: np.ndarray, scale: tuple[float, float]) -> Path:
    """Per-tile gate weights as .npz (atomic): ``gates`` (n, 3, 3): task x expert, tasks and
    experts in the order seg, sdf, bnd; ``tiles`` (n, 4): each tile's y, x, h, w in the
    input's (level-0) pixels; ``tiles_working``: the same at the model's working scale."""
    from .slide import _atomic

    work = np.asarray(tiles, np.int64).reshape(-1, 4)
    fy, fx = scale
    native = np.rint(work * np.array([fy, fx, fy, fx])).astype(np.int64)
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, gates=np.asarray(gates, np.float32), tiles=native, tiles_working=work)
    return path


#: Outputs whose longer side exceeds this get reduced levels (each half the previous) down
#: to it, so napari and QuPath show a gigapixel prediction without reading it whole.
PYRAMID_MIN_SIDE = 4096


def map_level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Level shapes of a written map: level 0, then halves while the longer side exceeds
    :data:`PYRAMID_MIN_SIDE` / 2."""
    shapes = [(int(shape[0]), int(shape[1]))]
    if max(shape) > PYRAMID_MIN_SIDE:
        while max(shapes[-1]) > PYRAMID_MIN_SIDE // 2:
            h, w = shapes[-1]
            shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _write_tiled(
    path: Path,
    src: np.ndarray,
    shape: tuple[int, int],
    nearest: bool,
    dtype,
    mpp: float | None = None,
) -> None:
    """Stream ``src`` resampled to ``shape`` into a tiled, compressed (Big)TIFF, atomically.

    Large outputs become OME-TIFF pyramids (reduced levels in SubIFDs, each resampled from
    ``src`` directly, so nothing of level 0 is held); ``mpp`` (the input's microns per
    pixel) is kept as resolution tags and OME physical size.
    """
    import os

    import tifffile

    from .slide import _atomic, ome_metadata, resolution_tags

    T = 256
    shapes = map_level_shapes(shape)
    H, W = shapes[0]

    def tiles(level_shape):
        h, w = level_shape
        for y0 in range(0, h, T):
            rows = min(T, h - y0)
            band = resample_band(src, level_shape, y0, rows, nearest=nearest).astype(dtype)
            for x0 in range(0, w, T):
                t = np.zeros((T, T), dtype)
                part = band[:, x0 : x0 + T]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    pyramid = len(shapes) > 1
    total = sum(h * w for h, w in shapes) * np.dtype(dtype).itemsize
    with (
        _atomic(path) as tmp,
        tifffile.TiffWriter(tmp, bigtiff=total > 2**31, ome=pyramid) as tw,
    ):
        for k, (h, w) in enumerate(shapes):
            kwargs = {
                "shape": (h, w),
                "dtype": dtype,
                "tile": (T, T),
                "compression": "zlib",
                "compressionargs": {"level": 1},
                # The floating-point predictor roughly halves float maps and makes deflate
                # faster; tiles are compressed on all cores (most of a slide's writing time).
                "predictor": np.dtype(dtype).kind == "f",
                "maxworkers": os.cpu_count(),
                **resolution_tags(mpp * W / w if mpp else None),
            }
            if k == 0 and pyramid:
                kwargs.update(subifds=len(shapes) - 1, metadata=ome_metadata("YX", mpp))
            elif k:
                kwargs.update(subfiletype=1, metadata=None)
            tw.write(tiles((h, w)), **kwargs)


def _write_small(
    predictor: Predictor, image: np.ndarray, out_dir, name: str, mpp: float | None = None
) -> dict[str, Path]:
    from .slide import write_tiff

    out = predictor.predict_image(image)
    written = {}
    for key in ("mask", "prob", "sdf", "boundary", "instances", *EXPERT_MAPS):
        if key in out:
            path = Path(out_dir) / f"{name}_{key}.tif"
            write_tiff(path, out[key], mpp=mpp)
            written[key] = path
    work = predictor.m.geometry.working_shape(image.shape[:2])
    scale = (image.shape[0] / work[0], image.shape[1] / work[1])
    written["gates"] = _save_gates(
        Path(out_dir) / f"{name}_gates.npz", out["tiles"], out["gates"], scale
    )
    return written
