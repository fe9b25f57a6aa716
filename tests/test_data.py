"""Augmentation: the fast bilinear crop resize and image/mask alignment."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from napari_semimoe.core.data import augment, upscale_linear


@pytest.mark.parametrize("shape", [(224, 224, 3), (224, 200, 3), (31, 17)])
def test_upscale_linear_is_skimage_resize(shape):
    im = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    ref = resize(im, (256, 256), order=1, preserve_range=True)
    out = upscale_linear(im, 256)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-3)
    np.testing.assert_array_equal(np.rint(out[:8]), np.rint(ref[:8]))  # mirrored edge rows


def test_augment_keeps_image_and_mask_aligned():
    """Crops, the 224 -> 256 resize, flips, transposes and rotations move both alike."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    mask = ((yy - 80) ** 2 / 40**2 + (xx - 150) ** 2 / 25**2 < 1).astype(np.uint8)
    mask[200:240, 20:60] = 2  # an asymmetric second gland
    image = np.where(mask[..., None] > 0, 40, 220).astype(np.uint8) * np.ones(3, np.uint8)
    resized = 0
    for _ in range(40):
        im, m = augment(rng, image, mask, 256)
        assert im.shape == (256, 256, 3) and m.shape == (256, 256) and m.dtype == mask.dtype
        dark = im[..., 0] < 130
        agree = (dark == (m > 0)).mean()
        assert agree > 0.995, agree  # only resampled edge pixels may differ
        resized += (im[..., 0] % 180 != 40).any()  # interpolated grey levels
    assert resized > 5  # the random crop + resize branch ran


@pytest.mark.parametrize(
    ("geometry", "problem"),
    [
        ((1.0, None, 256), None),
        ((2.5, None, 64), None),
        ((1.0, 256, 256), None),
        ((1.0, None, 40), "tile must be a multiple of 16 from 16 to 8192, got 40"),
        ((1.0, None, 0), "tile must be a multiple of 16"),
        ((1.0, None, "256"), "tile must be a multiple of 16"),
        ((1.0, None, True), "tile must be a multiple of 16"),
        ((1.0, 40, 256), "input_size must be a multiple of 16"),
        ((0.5, None, 256), "scale is a downsample factor"),
        ((float("nan"), None, 256), "scale is a downsample factor"),
        ((float("inf"), None, 256), "scale is a downsample factor"),
        ((2.0, 256, 256), "use either input_size or scale, not both"),
    ],
)
def test_one_geometry_check_for_every_caller(geometry, problem):
    from napari_semimoe.core.errors import InputError
    from napari_semimoe.core.validate import check_geometry, geometry_problem

    got = geometry_problem(*geometry)
    assert got == problem if problem is None or problem.endswith("40") else problem in got
    if problem is None:
        assert check_geometry(*geometry).to_dict()["tile"] == geometry[2]
    else:
        with pytest.raises(InputError, match="--"):
            check_geometry(*geometry, spell=lambda k: "--" + k.replace("_", "-"))


def test_widths_are_even_and_bounded():
    from napari_semimoe.core.validate import width_problem

    assert [width_problem(w) for w in (2, 16, 1024)] == [None] * 3
    for w in (0, 1, 7, -2, 1026, 2.0, True, None):
        assert width_problem(w).startswith("must be an even integer from 2 to 1024"), w
    assert width_problem(130, hi=128) == "must be an even integer from 2 to 128, got 130"
