"""Inference in parts: ``tiling`` (where tiles go, blend window), ``merge`` (where tile
outputs are summed: memory, memory-mapped files, zarr), ``resample`` (working scale <->
native), ``predictor`` (a loaded model run over tiles), ``slide_job`` (the working-scale reader,
tissue, scratch folders) and ``writers`` (TIFF maps, gates). A whole slide is predicted by
the cohort's block engine: :func:`napari_semimoe.core.cohort.predict_slide`."""

from __future__ import annotations

from .merge import InMemoryMerger, MemmapMerger, Merger, ZarrMerger, make_merger
from .predictor import LoadedModel, PredictOptions, Predictor, WorkingPrediction, load_model
from .resample import resample, resample_band
from .slide_job import (
    SCRATCH_PREFIX,
    check_space,
    remove_stale_scratch,
    scratch_prefix,
    working_reader,
    working_tissue,
)
from .tiling import TileGrid, blend_window
from .writers import map_level_shapes

__all__ = [
    "SCRATCH_PREFIX",
    "InMemoryMerger",
    "LoadedModel",
    "MemmapMerger",
    "Merger",
    "PredictOptions",
    "Predictor",
    "TileGrid",
    "WorkingPrediction",
    "ZarrMerger",
    "blend_window",
    "check_space",
    "load_model",
    "make_merger",
    "map_level_shapes",
    "remove_stale_scratch",
    "resample",
    "resample_band",
    "scratch_prefix",
    "working_reader",
    "working_tissue",
]
