"""A trained model loaded for inference, and the predictor that runs it over tiles.

The model's family (named in its checkpoint) builds the network and turns its outputs into
maps; the predictor only tiles, batches, merges and resamples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import damaged_run_files, load_model_state, model_meta, read_checkpoint
from ..data import Geometry, normalise
from ..device import autocast, autocast_dtype, resolve_device, set_threads
from ..errors import CheckpointError, InputError
from ..families import Family, get_family
from .merge import make_merger
from .optimize import inference_model
from .resample import resample
from .tiling import RegionReader, TileGrid, blend_window, read_padded

ProgressFn = Callable[[int, int], None]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what it needs to see images as in training."""

    model: torch.nn.Module
    geometry: Geometry
    mean: list[float]
    std: list[float]
    meta: dict
    device: torch.device
    #: The model's family (from the checkpoint; Semi-MoE when it names none).
    family: Family = field(default_factory=get_family)


def load_model(run: str | Path, device: str = "auto", weights: str = "model") -> LoadedModel:
    """Load a run folder or checkpoint file for inference (no pickle is ever executed).

    The checkpoint's metadata is checked against its tensors before the model is built; the
    run's other JSON files are not needed, so a damaged one is only reported. ``weights``:
    "model" (the trained network, for predictions) or "labeller" (what made the run's
    pseudo-labels: its mean teacher when it trained with one, else the network)."""
    from ..config import TrainConfig

    if weights not in ("model", "labeller"):
        raise ValueError(f"weights must be model or labeller, got {weights!r}")
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
    family = get_family(meta["family"])
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    config = TrainConfig.from_dict({**cfg, "width": int(meta["width"]), "family": family.name})
    try:
        family = family.configure(config)  # the run's classes (and DCA's split)
    except (ValueError, InputError) as exc:
        raise CheckpointError(f"{run}: {exc}") from None
    model = family.build(config)
    if weights == "labeller" and any(k.startswith("teacher.") for k in tensors):
        # the teacher's state has the network's names: read it as the model's
        tensors = {"model." + k[len("teacher.") :]: v for k, v in tensors.items()
                   if k.startswith("teacher.")}  # fmt: skip
    try:
        load_model_state(model, tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{run}: {exc}") from None
    model.to(dev).eval()
    return LoadedModel(
        model, Geometry.from_dict(meta["geometry"]), meta["mean"], meta["std"], meta, dev, family
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
    #: Run an inference copy of the network (batch norm folded, phase kernels precomputed,
    #: bf16 weights under bf16 autocast; :mod:`.optimize`): the same function, faster.
    #: False = the loaded network as trained (the benchmark's "today" path).
    optimize: bool = True
    #: Where tile outputs are merged: None = memory (or memory-mapped files with a folder),
    #: "memory", "memmap" or "zarr" (see :mod:`.merge`).
    merger: str | None = None
    #: Test-time augmentation: "flips" averages each tile's maps (and gates) over the four
    #: flips of the tile (identity, left-right, up-down, both): 4x the network time.
    tta: str = "off"
    #: Post-processing of the mask (issue 20's levers; off by default): fill the holes a
    #: gland encloses, and drop components below ``min_object`` px of working scale (its
    #: native-size equivalent where the mask is made at native size).
    fill_holes: bool = False
    min_object: int = 0


#: The flips of :attr:`PredictOptions.tta` ("flips"), as the dims of an (N, C, H, W) tile.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass
class WorkingPrediction:
    """Blended maps at working scale (float32 arrays, possibly disk-backed) + gate weights.

    ``tiles`` holds each prediction tile's (y, x, h, w) at working scale and ``gates`` the
    tile's gate matrix (Semi-MoE: 3 x 3, task x expert) in the same order.
    """

    maps: dict[str, np.ndarray]
    tiles: list[tuple[int, int, int, int]]
    gates: np.ndarray  # (n_tiles, *family.gate_shape)
    cancelled: bool = False
    #: per tile, the pooled expert features the gates see (n_tiles, 3b); with ``experts``
    embeddings: np.ndarray | None = None


class Predictor:
    """Runs a loaded model over tiles; shared by the CLI, the plugin and the evaluator."""

    def __init__(self, loaded: LoadedModel, options: PredictOptions | None = None) -> None:
        self.m = loaded
        self.family = loaded.family
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
        self._stain_ref = self.stain_reference  # None: no stain normalisation
        self._stain_source = None
        #: One tile's gate weights' shape: the model's own where it varies (moe-k's K).
        self.gate_shape = tuple(getattr(loaded.model, "gate_shape", self.family.gate_shape))
        # A CPU gains nothing from larger batches; an H100 predicts 3.1 Mpx/s in batches
        # of 2 and 9.0 in batches of 16 (docs/benchmarks.md).
        default_batch = 16 if loaded.device.type == "cuda" else 2
        self.batch = default_batch if self.opt.batch is None else int(self.opt.batch)
        if self.batch < 1:
            raise InputError(f"batch must be at least 1, got {self.batch}")
        if self.opt.tta not in ("off", "flips"):
            raise InputError(f"tta must be off or flips, got {self.opt.tta!r}")
        if self.opt.min_object < 0:
            raise InputError(f"min_object must be >= 0 px, got {self.opt.min_object}")
        self.channels_last = self.opt.fast and loaded.device.type == "cpu"
        if self.opt.optimize:
            fast = inference_model(loaded.model, amp=self.amp, channels_last=self.channels_last)
            self.net, self.steps = fast.model, fast.steps
            log.debug("inference network: %s", ", ".join(fast.steps))
        else:
            self.net, self.steps = loaded.model, []
            if self.channels_last:
                self.m.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ stain normalisation

    @property
    def stain_reference(self):
        """The run's stain reference (:class:`~..stain.StainBasis`), None when the model
        was trained without stain normalisation."""
        cfg = self.m.meta.get("config")
        ref = cfg.get("stain_reference") if isinstance(cfg, dict) else None
        if ref is None:
            return None
        from ..stain import StainBasis

        return StainBasis.from_dict(ref)

    def slide_stain(self, slide) -> dict | None:
        """A slide's own stain basis (from its thumbnail), for :meth:`use_stain`; None when
        the model does not normalise stains or the slide shows no tissue."""
        if self.stain_reference is None:
            return None
        from ..errors import InputError
        from ..stain import macenko_basis

        try:
            return macenko_basis(slide.thumbnail(2048)).to_dict()
        except InputError:
            return None

    def use_stain(self, basis: dict | None) -> None:
        """The stain basis the next tiles are mapped from (their slide's); None: each tile
        (or image) its own."""
        from ..stain import StainBasis

        self._stain_source = None if basis is None else StainBasis.from_dict(basis)

    def _restain(self, tiles: np.ndarray) -> np.ndarray:
        ref = self._stain_ref
        if ref is None:
            return tiles
        from ..stain import normalise_or_keep

        own = getattr(self, "_stain_source", None)
        return np.stack([normalise_or_keep(t, ref, own) for t in tiles])

    def use_attribute(self, attribute: str | None) -> str | None:
        """Route the next predictions through ``attribute``'s router (attribute routing);
        a missing value, or one not seen in training, uses "any". Returns the router used
        (None: the model has no attribute routing)."""
        from ..routing import routing_of, set_routes

        routing = routing_of(self.net)
        if routing is None:
            return None
        index = routing.first.route(attribute)
        set_routes(self.net, index)
        return routing.routers[index]

    def map_names(self) -> list[str]:
        """The float maps this predictor writes (the family's, + experts' when asked)."""
        f = self.family
        return list(f.output_maps()) + (list(f.output_maps(True)) if self.opt.experts else [])

    # ------------------------------------------------------------------ tiles -> maps

    @torch.inference_mode()
    def predict_batch(self, tiles: np.ndarray, embeddings: bool = False):
        """uint8 (N, h, w, 3) tiles (h, w multiples of 16) -> maps (N, h, w) and gates
        (N, *gate_shape); with ``embeddings`` also the pooled features that describe what
        the model sees in each tile (used to keep suggestions diverse)."""
        tiles = self._restain(tiles)
        x = np.stack([normalise(t, self.m.mean, self.m.std) for t in tiles])
        xt = torch.from_numpy(x).to(self.m.device)
        if self.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        flips = TTA_FLIPS if self.opt.tta == "flips" else ((),)
        sums: dict[str, torch.Tensor] = {}
        gsum = esum = None
        for dims in flips:
            xi = xt
            if dims:
                xi = xt.flip(dims)
                if self.channels_last:
                    xi = xi.contiguous(memory_format=torch.channels_last)
            with autocast(self.m.device, self.amp):
                inf = self.family.infer(self.net, xi, self.opt.experts, embeddings)
            for k, v in inf.maps.items():  # (N, H, W) maps: flipped back on the same dims
                v = v.float().flip(dims) if dims else v.float()
                sums[k] = v if k not in sums else sums[k] + v
            if inf.gates is not None:
                gsum = inf.gates.float() if gsum is None else gsum + inf.gates.float()
            if inf.embeddings is not None:
                e = inf.embeddings.float()
                esum = e if esum is None else esum + e
        n = len(flips)
        maps = {k: (v / n if n > 1 else v).cpu().numpy() for k, v in sums.items()}
        if gsum is None:
            gates = np.zeros((len(tiles), *self.gate_shape), np.float32)
        else:
            gates = (gsum / n if n > 1 else gsum).cpu().numpy()
        if embeddings:
            emb = None if esum is None else (esum / n if n > 1 else esum).cpu().numpy()
            return maps, gates, emb
        return maps, gates

    def predict_region_reader(
        self,
        read: RegionReader,
        shape: tuple[int, int],
        *,
        tissue: np.ndarray | None = None,
        out_dir: Path | None = None,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> WorkingPrediction:
        """Predict a working-scale image given by ``read(y, x, h, w) -> uint8`` of ``shape``.

        Only one batch of tiles is in memory at a time. With ``out_dir`` the output maps are
        disk-backed (np.memmap, or zarr with ``merger="zarr"``) so a whole slide never has
        to fit in memory.
        """
        h, w = shape
        t = self.tile
        grid = TileGrid((h, w), t, self.overlap)
        names = self.map_names()
        merger = make_merger(names, (h, w), self.family.fills(), out_dir, self.opt.merger)
        todo = []
        for y, x in grid:
            if tissue is not None and not tissue[y : y + t, x : x + t].any():
                continue
            todo.append((y, x))
        gates = np.zeros((len(todo), *self.gate_shape), np.float32)
        embs: list[np.ndarray] = []
        boxes = []
        cancelled = False
        for b0 in range(0, len(todo), self.batch):
            if cancel is not None and cancel():
                cancelled = True
                break
            chunk = todo[b0 : b0 + self.batch]
            tiles = np.stack([read_padded(read, y, x, t, t, h, w) for y, x in chunk])
            if self.opt.experts:
                maps, g, e = self.predict_batch(tiles, embeddings=True)
                if e is not None:
                    embs.append(e)
            else:
                maps, g = self.predict_batch(tiles)
            gates[b0 : b0 + len(chunk)] = g
            for j, (y, x) in enumerate(chunk):
                merger.add(y, x, {k: maps[k][j] for k in names}, self.window)
                boxes.append((y, x, min(t, h - y), min(t, w - x)))
            if progress is not None:
                progress(min(b0 + len(chunk), len(todo)), len(todo))
        acc = merger.finish()
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

        Returns the family's float32 maps (Semi-MoE: ``prob``, ``sdf``, ``boundary``, +
        experts' maps), uint8 ``mask``, int32 ``instances`` and the per-tile ``gates``.
        """
        g = self.m.geometry
        work = g.image_to_working(image)
        kept = getattr(self, "_stain_source", None)
        if self._stain_ref is not None and kept is None:
            # The whole image's basis for all its tiles, as for a slide.
            from ..errors import InputError
            from ..stain import macenko_basis

            with contextlib.suppress(InputError):
                self._stain_source = macenko_basis(work)
        try:
            wp = self.predict_region_reader(
                lambda y, x, hh, ww: work[y : y + hh, x : x + ww],
                work.shape[:2],
                progress=progress,
                cancel=cancel,
            )
        finally:
            self._stain_source = kept
        out = dict(wp.maps)
        if native and work.shape[:2] != image.shape[:2]:
            out = {k: resample(v, image.shape[:2]) for k, v in out.items()}
        out["mask"] = self.mask(out, area_scale(image.shape, work.shape) if native else 1.0)
        out.update(self.family.derived_maps(out))  # the class map of a multi-class model
        if instances:
            out["instances"] = self.instances(
                out, scale=area_scale(image.shape, work.shape) if native else 1.0
            )
        out["gates"] = wp.gates
        out["tiles"] = np.asarray(wp.tiles, np.int64).reshape(-1, 4)
        if wp.embeddings is not None:
            out["embeddings"] = wp.embeddings
        return out

    def mask(self, maps: dict[str, np.ndarray], scale: float = 1.0) -> np.ndarray:
        """uint8 0/1: the family's probability map at the threshold, then the optional
        post-processing (holes filled, components below ``min_object`` x ``scale`` px
        dropped; ``scale`` = area of a map px in working px)."""
        mask = np.asarray(maps[self.family.mask_from]) >= self.opt.threshold
        return postprocess_mask(mask, self.opt.fill_holes, round(self.opt.min_object * scale))

    def instances(self, maps: dict[str, np.ndarray], scale: float = 1.0) -> np.ndarray:
        """Objects from the maps (the family's rule); ``scale`` = native px per working px
        (area), which scales the smallest object kept."""
        return self.family.instances(maps, max(4, round(16 * scale)))


def postprocess_mask(mask: np.ndarray, fill_holes: bool, min_object: int) -> np.ndarray:
    """uint8 0/1 ``mask`` with its enclosed holes filled (a hole touching the image edge is
    not enclosed) and its 8-connected components below ``min_object`` px removed."""
    from scipy import ndimage as ndi

    from ..instances import drop_small

    mask = np.asarray(mask, bool)
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if min_object > 1:
        mask = drop_small(mask, min_object, diagonal=True)
    return mask.astype(np.uint8)


def area_scale(native: tuple[int, ...], work: tuple[int, ...]) -> float:
    return (native[0] * native[1]) / float(work[0] * work[1])
