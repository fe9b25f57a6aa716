"""Bilinear (maps) and nearest (labels) resampling between the working scale and the input's
native size, band by band so that a disk-backed map is never read whole."""

from __future__ import annotations

import numpy as np


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
