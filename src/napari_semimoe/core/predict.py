"""The old import path of inference, kept for the plugin's widget and panels and the CLI's
``predict`` command (owned elsewhere); new code imports :mod:`.inference`."""

from __future__ import annotations

from .inference import (
    PredictOptions,
    Predictor,
    TileGrid,
    load_model,
    predict_slide,
    resample,
)

__all__ = [
    "PredictOptions",
    "Predictor",
    "TileGrid",
    "load_model",
    "predict_slide",
    "resample",
]
