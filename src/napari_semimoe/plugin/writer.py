"""npe2 writer: save a Labels layer (annotations, segmentation) or an Image layer as TIFF."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.tiff_writer import write_tiff


def write_tiff_layer(path: str, data: Any, meta: dict) -> list[str]:
    if not path.lower().endswith((".tif", ".tiff")):
        path += ".tif"
    write_tiff(path, np.asarray(data))
    return [path]
