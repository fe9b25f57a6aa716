"""The live preview: while a training runs, each checkpoint it saves is used to predict what
the user is looking at, shown as gland outlines in one layer that is updated in place.

Cheap on purpose: only the visible part of the slide, at the model's working scale, capped
at :data:`MAX_SIDE` working pixels a side (the centre of the view when zoomed far out);
prediction in a worker thread; a checkpoint that arrives while the previous preview is still
being computed is skipped (the next one catches up). The worker also draws each gland's
outline (the model's instances, as the final prediction shows them) into a 0/1 image, so the
GUI thread only swaps an Image layer's data (~5 ms, plus the repaint every change costs): a
Labels layer with ``contour`` traced the outlines on the GUI thread, ~125 ms per checkpoint.
The layer is made, hidden and empty, when an image opens, shown while a training runs and
hidden again when it ends (the dock then predicts the view with the final model,
:mod:`.widget`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core.checkpoint import CHECKPOINT_NAME
from .common import camera, canvas_size
from .layers import NapariLayers
from .session import Session

log = logging.getLogger(__name__)

PREVIEW_LAYER = "live preview (training)"  # whatever the family
#: Largest side of the previewed region, in working-scale pixels (16 tiles of 256 at most).
MAX_SIDE = 1024
#: The outline colour: not an annotation colour (greens, yellows, oranges) nor the final
#: prediction's cyan; white reads on both pink stroma and purple epithelium.
PREVIEW_COLOR = "#ffffff"
#: Outline thickness in working px (what napari's Labels ``contour=2`` drew before).
OUTLINE_PX = 2


def outline_image(instances: np.ndarray, width: int = OUTLINE_PX) -> np.ndarray:
    """1 on the inner ``width`` px of each instance's edge (touching glands keep the line
    between them), 0 elsewhere: uint8, what the preview layer shows."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(instances, mode="inner")
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1) & (instances > 0)
    return edge.astype(np.uint8)


def view_box(viewer, layers: NapariLayers) -> tuple[int, int, int, int] | None:
    """The visible part of the current image, (y, x, h, w) in level-0 px; None when the view
    shows none of it (or its size cannot be read)."""
    size = canvas_size(viewer)
    if size is None or layers.image() is None:
        return None
    cam = camera(viewer)
    half = np.asarray(size) / 2 / cam.zoom
    c = np.asarray(cam.center[-2:])
    base = layers.base_scale()
    lo, hi = (c - half) / base, (c + half) / base
    H, W = layers.slide_shape()
    y0, x0 = np.clip(np.floor(lo), 0, [H, W]).astype(int)
    y1, x1 = np.clip(np.ceil(hi), 0, [H, W]).astype(int)
    if y1 - y0 < 16 or x1 - x0 < 16:
        return None
    return int(y0), int(x0), int(y1 - y0), int(x1 - x0)


class LivePreview:
    """Predicts the view from each new checkpoint (one at a time) into :data:`PREVIEW_LAYER`."""

    def __init__(self, session: Session, layers: NapariLayers) -> None:
        self.session, self.layers = session, layers
        self.viewer = layers.viewer
        self.worker = None
        self.shown = 0  # previews shown (tests, benchmarks)
        self.skipped = 0  # checkpoints skipped because a preview was still running
        self.enabled = True
        self._generation = 0  # a preview that finishes after stop() is dropped

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def refresh(self, run_dir: str | Path) -> bool:
        """A checkpoint was saved in ``run_dir``: predict the view with it, unless a preview
        is still running (then skip: True only when one was started)."""
        if not self.enabled:
            return False
        if self.busy:
            self.skipped += 1
            return False
        ckpt = Path(run_dir) / CHECKPOINT_NAME
        box = view_box(self.viewer, self.layers)
        if box is None or not ckpt.exists():
            return False
        try:
            slide = self.layers.slide()
        except Exception:  # noqa: BLE001 - no image: nothing to preview
            return False
        from napari.qt.threading import thread_worker

        gen = self._generation

        @thread_worker(ignore_errors=True)
        def work():
            return _predict(ckpt, slide, box)

        worker = self.worker = work()
        worker.returned.connect(lambda out: self._show(out, gen))
        worker.errored.connect(lambda exc: log.warning("live preview failed: %s", exc))
        worker.finished.connect(self._finished)
        worker.start()
        return True

    def _finished(self) -> None:
        self.worker = None

    def prepare(self, _entry=None) -> None:
        """Create the (hidden, empty) preview layer ahead of training, when an image opens:
        creating a napari layer costs ~0.25 s of the GUI thread here (its controls, its
        visual, its colormap's shader), which at the first checkpoint was the one stall
        of a training over 100 ms; opening an image already takes longer than that."""
        if self.layers.image() is None or PREVIEW_LAYER in self.viewer.layers:
            return
        # Sized as the preview of the whole slide (the home view), at the scale the next
        # model will have: the first preview then rewrites this texture in place instead
        # of allocating one (that first draw was the one tick over 100 ms left).
        g = self.session.geometry or self.session.train_geometry
        s = float(g.scale) if g is not None else 1.0
        H, W = self.layers.slide_shape()
        h, w = min(MAX_SIDE, max(1, round(H / s))), min(MAX_SIDE, max(1, round(W / s)))
        base = self.layers.base_scale()
        layer = self._layer(np.zeros((h, w), np.uint8), tuple(base * s), tuple(base * (s - 1) / 2))
        # drawn once (all transparent: 0), so that showing it compiles no shader, then hidden
        from qtpy.QtCore import QTimer

        QTimer.singleShot(300, lambda: setattr(layer, "visible", False))

    def _layer(self, data: np.ndarray, scale, translate, visible: bool = True):
        from napari.utils.colormaps import Colormap

        from .layer_styles import LEGEND, legend_of

        active = self.viewer.layers.selection.active
        layer = self.viewer.add_image(
            data,
            name=PREVIEW_LAYER,
            scale=scale,
            translate=translate,
            opacity=0.9,
            colormap=Colormap(["transparent", PREVIEW_COLOR], name="semimoe-preview"),
            contrast_limits=(0, 1),
            blending="translucent",
            interpolation2d="nearest",
            visible=visible,
        )
        layer.metadata[LEGEND] = legend_of(
            "outline", "preview", items=[(PREVIEW_COLOR, "the model's glands, so far")]
        )
        if active is not None:  # the brush stays where it was
            self.viewer.layers.selection.active = active
        return layer

    def _show(self, out: dict | None, gen: int) -> None:
        """GUI thread: swap the preview layer's data (in place when the view kept its size:
        a refresh of the same texture, cheaper than a new array) and show it."""
        if out is None or gen != self._generation or self.layers.image() is None:
            return
        outline, s, (ys, xs) = out["outline"], out["scale"], out["origin"]
        base = self.layers.base_scale()
        scale = tuple(base * s)
        translate = tuple(base * (np.array([ys, xs]) * s + (s - 1) / 2))
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            if not np.allclose(layer.scale, scale) or not np.allclose(layer.translate, translate):
                layer.scale, layer.translate = scale, translate  # each set redraws: only on a pan
            if layer.data.shape == outline.shape and layer.data.dtype == outline.dtype:
                layer.data[...] = outline
                layer.refresh()
            else:
                layer.data = outline
            layer.visible = True
        else:  # the user removed it: make it again (once)
            layer = self._layer(outline, scale, translate)
        layer.metadata["semimoe_preview_iteration"] = out["iteration"]
        self.shown += 1
        self.session.say(
            f"live preview: the model at iteration {out['iteration']} on this view"
            + (" (its centre: zoom in to preview all of it)" if out["cropped"] else "")
        )

    def stop(self) -> None:
        """Training ended: drop a preview still running; the layer is hidden and emptied
        (kept for the next training, so that one pays no layer creation either)."""
        self._generation += 1
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            layer.visible = False
            layer.data[...] = 0  # emptied in place: the next training reuses the texture
            layer.metadata.pop("semimoe_preview_iteration", None)


def _predict(ckpt: Path, slide, box: tuple[int, int, int, int]) -> dict:
    """Worker thread: the gland mask of ``box`` (level-0 px) at the checkpoint's working
    scale, the centre ``MAX_SIDE`` px a side of it when larger."""
    from ..core.device import releasing_memory
    from ..core.inference import PredictOptions, Predictor, load_model

    @releasing_memory
    def run() -> dict:
        loaded = load_model(ckpt, "auto")
        pred = Predictor(loaded, PredictOptions())
        s = loaded.geometry.scale
        y, x, h, w = box
        ys, xs = round(y / s), round(x / s)
        hs, ws = max(16, round(h / s)), max(16, round(w / s))
        cropped = hs > MAX_SIDE or ws > MAX_SIDE
        if hs > MAX_SIDE:
            ys, hs = ys + (hs - MAX_SIDE) // 2, MAX_SIDE
        if ws > MAX_SIDE:
            xs, ws = xs + (ws - MAX_SIDE) // 2, MAX_SIDE
        wp = pred.predict_region_reader(
            lambda yy, xx, hh, ww: slide.read_scaled(ys + yy, xs + xx, hh, ww, s), (hs, ws)
        )
        maps = {k: np.asarray(v) for k, v in wp.maps.items()}
        maps["mask"] = pred.mask(maps)
        # the glands as the final prediction shows them (specks dropped, touching ones split)
        from ..core.instances import drop_off_tissue
        from ..core.slide import tissue_mask

        tissue = tissue_mask(slide, s, (ys, xs, hs, ws))  # no glands on glass
        instances = np.asarray(drop_off_tissue(pred.instances(maps), tissue), np.int32)
        return {
            "outline": outline_image(instances),
            "glands": int(instances.max()),
            "scale": s,
            "origin": (ys, xs),
            "cropped": cropped,
            "iteration": int(loaded.meta.get("state", {}).get("iteration", 0)),
        }

    return run()
