"""Targets derived from a mask (spec §2): SDF and boundary band on hand-made masks, with
hand-derived expected arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.morphology import dilation, disk

from napari_semimoe.core.targets import boundary_band, make_targets, signed_distance

# ------------------------------------------------------------------ SDF


def test_sdf_one_row_by_hand():
    # d_in = [0 0 1 2 1 0 0] / 2, d_out = [2 1 0 0 0 1 2] / 2, inner boundary (cols 2, 4) -> 0.
    mask = np.array([[0, 0, 1, 1, 1, 0, 0]])
    want = np.array([[-1.0, -0.5, 0.0, 1.0, 0.0, -0.5, -1.0]], dtype=np.float32)
    got = signed_distance(mask)
    assert got.dtype == np.float32
    assert got.shape == (1, 7)
    np.testing.assert_array_equal(got, want)


def test_sdf_5x5_square_by_hand():
    mask = np.zeros((5, 5), np.uint8)
    mask[1:4, 1:4] = 1
    # Inside: the centre is 2 px from the background (max), the 3x3 ring is the inner boundary.
    # Outside: edge neighbours are 1 px from the square, the 4 corners sqrt(2) (max).
    e = -1 / math.sqrt(2)
    want = np.array(
        [
            [-1, e, e, e, -1],
            [e, 0, 0, 0, e],
            [e, 0, 1, 0, e],
            [e, 0, 0, 0, e],
            [-1, e, e, e, -1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(signed_distance(mask), want, rtol=0, atol=1e-6)


def _blob(shape=(40, 48)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - 15) ** 2 + (xx - 20) ** 2 <= 81).astype(np.uint8)  # disk r=9 at (15, 20)


def test_sdf_sign_range_and_extremes():
    mask = _blob()
    sdf = signed_distance(mask)
    fg = mask > 0
    assert sdf.shape == mask.shape
    assert sdf.min() == -1.0 and sdf.max() == 1.0
    assert bool((sdf[fg] >= 0).all())
    assert bool((sdf[~fg] < 0).all())  # every background pixel is strictly outside
    # +1 exactly at the deepest inside pixel (the disk centre), -1 at the farthest outside
    # pixel (the corner farthest from the disk: bottom-right).
    assert sdf[15, 20] == 1.0
    assert np.argwhere(sdf == 1.0).tolist() == [[15, 20]]
    assert np.argwhere(sdf == -1.0).tolist() == [[39, 47]]
    # Inner boundary: foreground pixels with a 4-neighbour in the background are exactly 0 ...
    pad = np.pad(fg, 1, constant_values=True)
    has_bg_nb = (
        ~pad[:-2, 1:-1] | ~pad[2:, 1:-1] | ~pad[1:-1, :-2] | ~pad[1:-1, 2:]
    )  # image border does not count as background
    inner = fg & has_bg_nb
    assert inner.sum() > 20
    assert bool((sdf[inner] == 0).all())
    # ... and the deeper foreground is strictly positive.
    assert bool((sdf[fg & ~inner] > 0).all())


def test_sdf_empty_and_full_tiles():
    empty = signed_distance(np.zeros((6, 9), np.uint8))
    full = signed_distance(np.full((6, 9), 4, np.uint16))
    np.testing.assert_array_equal(empty, -np.ones((6, 9), np.float32))
    np.testing.assert_array_equal(full, np.ones((6, 9), np.float32))
    assert empty.dtype == np.float32 and full.dtype == np.float32


def test_sdf_instance_ids_are_foreground_and_union_is_used():
    labels = np.zeros((20, 24), np.int32)
    labels[4:14, 3:11] = 3
    labels[4:14, 11:19] = 7  # touches instance 3 along a column
    binary = (labels > 0).astype(np.uint8)
    got = signed_distance(labels)
    np.testing.assert_array_equal(got, signed_distance(binary))
    # Computed on the union: the seam between the two instances is inside, not a boundary.
    assert bool((got[6:12, 10:12] > 0).all())


# ------------------------------------------------------------------ boundary band


def _band_by_hand(shape, r0, r1, c0, c1):
    """Pixels outside the rectangle [r0, r1) x [c0, c1) whose (dy, dx) offset from it lies
    in disk(2): dy^2 + dx^2 <= 4."""
    out = np.zeros(shape, np.uint8)
    for r in range(shape[0]):
        for c in range(shape[1]):
            dy = max(0, r0 - r, r - (r1 - 1))
            dx = max(0, c0 - c, c - (c1 - 1))
            if (dy or dx) and dy * dy + dx * dx <= 4:
                out[r, c] = 1
    return out


def test_boundary_band_square_by_hand():
    mask = np.zeros((15, 15), np.uint8)
    mask[5:10, 5:10] = 1
    band = boundary_band(mask)
    assert band.dtype == np.uint8
    want = _band_by_hand(mask.shape, 5, 10, 5, 10)
    # 4 sides x 5 px x 2 rows + the 4 diagonal (1, 1) corner pixels; (1, 2) / (2, 2) are out.
    assert int(want.sum()) == 44
    np.testing.assert_array_equal(band, want)
    np.testing.assert_array_equal(band, dilation(mask, disk(2)) & (1 - mask))
    assert int(band[mask > 0].sum()) == 0
    assert band[4, 4] == 1 and band[3, 4] == 0 and band[3, 3] == 0


def test_boundary_band_empty_and_instance_ids():
    assert int(boundary_band(np.zeros((8, 8), np.uint8)).sum()) == 0
    mask = np.zeros((15, 15), np.uint8)
    mask[5:10, 5:10] = 1
    np.testing.assert_array_equal(boundary_band(mask * 9), boundary_band(mask))
    # A single instance with id 9: nothing to separate, same with per_instance.
    np.testing.assert_array_equal(boundary_band(mask * 9, per_instance=True), boundary_band(mask))


def test_boundary_band_touching_instances():
    labels = np.zeros((14, 16), np.int32)
    labels[4:10, 3:8] = 1
    labels[4:10, 8:13] = 2  # shares the seam between columns 7 and 8
    fg = labels > 0
    outside = _band_by_hand(labels.shape, 4, 10, 3, 13)  # the union is one rectangle

    merged = boundary_band(labels, per_instance=False)
    np.testing.assert_array_equal(merged, outside)
    assert int(merged[fg].sum()) == 0  # upstream: no band between touching glands

    split = boundary_band(labels, per_instance=True)
    # Pixels of one gland within disk(2) of the other: columns 6, 7 (of 1) and 8, 9 (of 2).
    seam = np.zeros_like(outside)
    seam[4:10, 6:10] = 1
    np.testing.assert_array_equal(split, outside | seam)
    assert int(split[fg].sum()) == 24


def test_make_targets():
    labels = np.zeros((12, 12), np.int32)
    labels[3:8, 2:6] = 5
    labels[3:8, 6:9] = 2
    t = make_targets(labels)
    assert set(t) == {"seg", "sdf", "bnd"}
    assert t["seg"].dtype == np.uint8
    np.testing.assert_array_equal(t["seg"], (labels > 0).astype(np.uint8))
    np.testing.assert_array_equal(t["sdf"], signed_distance(labels))
    np.testing.assert_array_equal(t["bnd"], boundary_band(labels))
    ti = make_targets(labels, per_instance_boundary=True)
    np.testing.assert_array_equal(ti["bnd"], boundary_band(labels, per_instance=True))
    assert ti["bnd"].sum() > t["bnd"].sum()


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, bool])
def test_sdf_mask_dtypes(dtype):
    mask = np.zeros((5, 5), dtype)
    mask[1:4, 1:4] = 1
    out = signed_distance(mask)
    assert out[2, 2] == 1.0 and out[0, 0] == -1.0
