"""Image, mask and slide I/O: conversions, user errors, pyramids, laziness, tissue detection."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_semimoe.core import slide as sl
from napari_semimoe.core import tiff_writer as tw
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.slide import (
    Slide,
    open_slide,
    read_image,
    read_mask,
    tissue_mask,
    to_rgb_uint8,
)
from napari_semimoe.core.tiff_writer import write_pyramid, write_pyramid_tiles, write_tiff


def smooth_rgb(h: int, w: int, y0: int = 0, x0: int = 0) -> np.ndarray:
    """Smooth colourful image: interpolation differences stay small, so tolerances are tight."""
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    r = 128 + 100 * np.sin(yy / 37.0)
    g = 128 + 100 * np.cos(xx / 53.0)
    b = 128 + 80 * np.sin((xx + yy) / 61.0)
    return np.stack([r, g, b], -1).astype(np.uint8)


def block_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    return img[:h, :w].reshape(h // f, f, w // f, f, 3).astype(np.float64).mean((1, 3))


# ------------------------------------------------------------------ conversions and reading


def test_png_round_trip(tmp_path):
    img = smooth_rgb(40, 60)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, img)


def test_rgba_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # opaque red-ish top, transparent bottom
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[9, 9], [255, 255, 255])
    half = rgba.copy()
    half[..., 3] = 128
    np.testing.assert_allclose(to_rgb_uint8(half)[0, 0], [228, 128, 128], atol=1)


def test_16bit_and_float_and_planar():
    a16 = np.full((4, 5, 3), 65535, np.uint16)
    a16[..., 1] = 0
    a16[..., 2] = 32768
    np.testing.assert_array_equal(to_rgb_uint8(a16)[0, 0], [255, 0, 128])
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2, 3), 0.5))[0, 0], [128] * 3)
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2, 3), 200.0))[0, 0], [200] * 3)
    chw = np.moveaxis(smooth_rgb(8, 9), -1, 0)
    np.testing.assert_array_equal(to_rgb_uint8(chw), smooth_rgb(8, 9))
    with pytest.raises(InputError, match="not one 2-D RGB image"):
        to_rgb_uint8(np.zeros((5, 8, 9, 3), np.uint8))


def test_16bit_tiff_scaled(tmp_path):
    img = smooth_rgb(20, 30)
    tifffile.imwrite(tmp_path / "a.tif", img.astype(np.uint16) * 257, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), img)


def test_grayscale_refused(tmp_path):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="grayscale"):
        read_image(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((10, 10), np.uint16))
    with pytest.raises(InputError, match="grayscale"):
        open_slide(tmp_path / "g.tif")


@pytest.mark.parametrize("name", ["bad.png", "bad.tif", "bad.svs", "bad.jpg"])
def test_corrupt_file(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError, match=name):
        read_image(tmp_path / name)


def test_missing_package_is_named_not_blamed_on_the_file(tmp_path, monkeypatch):
    """A broken install (zarr absent, as on a machine we tried) must not read as a bad file."""
    import sys

    tifffile.imwrite(tmp_path / "p.tif", smooth_rgb(64, 64), photometric="rgb")
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr -> ModuleNotFoundError
    with pytest.raises(InputError, match="needs the Python package 'zarr'") as err:
        open_slide(tmp_path / "p.tif").read_region(0, 0, 8, 8)
    assert "damaged" not in str(err.value)


def test_truncated_files(tmp_path):
    Image.fromarray(smooth_rgb(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.png"):
        read_image(tmp_path / "t.png")
    tifffile.imwrite(tmp_path / "t.tif", smooth_rgb(64, 64), photometric="rgb")
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[:100])
    with pytest.raises(InputError, match="t.tif"):
        read_image(tmp_path / "t.tif")


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(tmp_path / "a.gif")
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_too_big_points_to_slides(tmp_path, monkeypatch):
    Image.fromarray(smooth_rgb(40, 40)).save(tmp_path / "a.png")
    write_tiff(tmp_path / "a.tif", smooth_rgb(40, 40))
    monkeypatch.setattr(sl, "MAX_PIXELS", 1000)
    for name in ("a.png", "a.tif"):
        with pytest.raises(InputError, match="open_slide"):
            read_image(tmp_path / name)
    with pytest.raises(InputError, match="a.tif is 40x40 px, too large"):
        read_mask(tmp_path / "a.tif")


def test_planar_tiff(tmp_path):
    img = smooth_rgb(30, 50)
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(img, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), img)
    with open_slide(tmp_path / "p.tif") as s:
        np.testing.assert_array_equal(s.read_region(5, 7, 10, 12), img[5:15, 7:19])
        assert s.levels[0][3:5, 4:9].shape == (2, 5, 3)


# ------------------------------------------------------------------ masks


def test_masks(tmp_path):
    lab = np.zeros((30, 40), np.uint8)
    lab[5:10, 5:10], lab[20:25, 20:30] = 1, 2
    Image.fromarray(lab).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", (30, 40)), lab)
    Image.fromarray(np.repeat(lab[..., None], 3, -1)).save(tmp_path / "m3.bmp")
    np.testing.assert_array_equal(read_mask(tmp_path / "m3.bmp"), lab)
    tifffile.imwrite(tmp_path / "m16.tif", lab.astype(np.uint16) * 300)
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.tif"), lab.astype(np.uint16) * 300)


def test_mask_size_mismatch(tmp_path):
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match=r"mask m.png is 400x300 but its image is 775x522"):
        read_mask(tmp_path / "m.png", shape=(522, 775))


def test_colour_and_float_masks_refused(tmp_path):
    col = np.zeros((10, 10, 3), np.uint8)
    col[2:5, 2:5] = [255, 0, 0]
    Image.fromarray(col).save(tmp_path / "c.png")
    with pytest.raises(InputError, match="colour"):
        read_mask(tmp_path / "c.png")
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match="float32"):
        read_mask(tmp_path / "f.tif")


# ------------------------------------------------------------------ pyramids


@pytest.fixture(scope="module")
def pyramid_image():
    return smooth_rgb(520, 770)  # not a multiple of the tile or of 2**levels


@pytest.mark.parametrize("subifds", [False, True])
def test_pyramid_layouts(tmp_path, pyramid_image, subifds):
    img = pyramid_image
    path = tmp_path / ("p.ome.tif" if subifds else "p.tif")
    write_pyramid(path, img, levels=4, tile=128, mpp=0.5, subifds=subifds)
    with tifffile.TiffFile(path) as tf:
        assert len(tf.pages) == (1 if subifds else 4)
    with open_slide(path) as s:
        assert len(s.levels) == 4
        assert s.shape == (520, 770)
        assert [s.level_shape(i) for i in range(4)] == [
            (520, 770),
            (260, 385),
            (130, 193),
            (65, 97),
        ]
        np.testing.assert_allclose(s.downsamples, [1, 2, 4, 8], rtol=0.01)
        assert s.mpp == pytest.approx(0.5)
        assert s.best_level(1) == 0 and s.best_level(3) == 1 and s.best_level(100) == 3
        np.testing.assert_array_equal(s.read_region(100, 200, 60, 70), img[100:160, 200:270])
        out = s.read_region(500, 760, 40, 30)
        np.testing.assert_array_equal(out[:20, :10], img[500:, 760:])
        assert (out[20:] == 255).all() and (out[:, 10:] == 255).all()
        assert (s.read_region(-50, -50, 10, 10) == 255).all()
        # scale 2 is level 1 exactly: the 2x2 mean of level 0
        s2 = s.read_scaled(30, 40, 64, 80, 2)
        ref2 = block_mean(img, 2)[30:94, 40:120]
        assert np.abs(s2 - ref2).max() <= 1
        # scale 3 is resampled from level 1: close to the 3x3 mean of level 0
        s3 = s.read_scaled(20, 30, 64, 80, 3)
        ref3 = block_mean(img, 3)[20:84, 30:110]
        assert s3.shape == (64, 80, 3) and s3.dtype == np.uint8
        assert np.abs(s3 - ref3).mean() < 1.0 and np.abs(s3 - ref3).max() <= 4
        # a region running off the image is padded with white there, not stretched
        edge = s.read_scaled(0, 250, 20, 20, 3)  # working width is ceil(770 / 3) = 257
        assert (edge[:, 8:] == 255).all() and (edge[:, :5] < 250).any()
        th = s.thumbnail(200)
        assert max(th.shape[:2]) == 200 and th.dtype == np.uint8


def test_pyramid_is_read_lazily(tmp_path, pyramid_image, monkeypatch):
    """Destroy every level-0 tile but the first: opening and reading near it must still work."""
    monkeypatch.setattr(sl, "TISSUE_LEVEL_SIZE", 200)
    path = tmp_path / "p.tif"
    write_pyramid(path, pyramid_image, levels=3, tile=128)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        assert len(offsets) == 5 * 7
    with open(path, "r+b") as fh:
        for off, n in list(zip(offsets, counts))[1:]:
            fh.seek(off)
            fh.write(b"\xff" * n)
    with open_slide(path) as s:
        np.testing.assert_array_equal(s.read_region(0, 0, 100, 120), pyramid_image[:100, :120])
        assert s.thumbnail(150).shape[1] == 150  # from level 2
        assert tissue_mask(s, 4).shape == (130, 193)  # from level 2
        with pytest.raises(InputError, match="p.tif"):
            s.read_region(300, 300, 10, 10)


def test_write_pyramid_tiles_matches(tmp_path):
    H, W = 1200, 1500
    calls = []

    def tile_fn(y, x, h, w):
        calls.append((h, w))
        return smooth_rgb(h, w, y, x)

    write_pyramid_tiles(tmp_path / "big.tif", (H, W), tile_fn, levels=4, tile=256, mpp=0.25)
    assert max(calls) <= (256, 256) and len(calls) == 5 * 6
    full = smooth_rgb(H, W)
    with open_slide(tmp_path / "big.tif") as s:
        assert s.mpp == pytest.approx(0.25)
        assert [s.level_shape(i) for i in range(4)] == [
            (1200, 1500),
            (600, 750),
            (300, 375),
            (150, 188),
        ]
        np.testing.assert_array_equal(s.read_region(0, 0, H, W), full)
        np.testing.assert_array_equal(s.read_region(0, 0, 600, 750, 1), tw._halve(full))
        lvl2 = tw._halve(tw._halve(full))
        np.testing.assert_array_equal(s.read_region(0, 0, 300, 375, 2), lvl2)
    assert [p.name for p in tmp_path.iterdir()] == ["big.tif"]  # temp files cleaned up


# ------------------------------------------------------------------ metadata, writing


def test_mpp_from_svs_description_and_resolution(tmp_path):
    img = smooth_rgb(16, 16)
    tifffile.imwrite(
        tmp_path / "a.tif",
        img,
        photometric="rgb",
        metadata=None,
        description="Aperio Image Library v12.0.5\n16x16 |AppMag = 40|MPP = 0.2520",
    )
    with open_slide(tmp_path / "a.tif") as s:
        assert s.mpp == pytest.approx(0.252)
    tifffile.imwrite(
        tmp_path / "b.tif",
        img,
        photometric="rgb",
        resolution=(20000, 20000),
        resolutionunit="CENTIMETER",
    )
    with open_slide(tmp_path / "b.tif") as s:
        assert s.mpp == pytest.approx(0.5)
    tifffile.imwrite(
        tmp_path / "c.tif", img, photometric="rgb", resolution=(72, 72), resolutionunit="INCH"
    )  # a screen default, not a microscope
    with open_slide(tmp_path / "c.tif") as s:
        assert s.mpp is None


def test_write_tiff_atomic_and_tiled(tmp_path):
    small = np.arange(100, dtype=np.uint16).reshape(10, 10)
    write_tiff(tmp_path / "m.tif", small)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), small)
    big = np.zeros((1100, 1000), np.uint8)
    big[100:200] = 1
    write_tiff(tmp_path / "out" / "big.tif", big > 0)
    with tifffile.TiffFile(tmp_path / "out" / "big.tif") as tf:
        assert tf.pages[0].is_tiled
        np.testing.assert_array_equal(tf.asarray(), big)
    with pytest.raises(Exception):  # noqa: B017 - a failed write leaves nothing behind
        write_tiff(tmp_path / "x.tif", np.zeros((4, 4), object))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "out"]


# ------------------------------------------------------------------ tissue


def test_tissue_mask_finds_blob_not_glass(tmp_path):
    rng = np.random.default_rng(1)
    h, w = 600, 800
    img = np.clip(rng.normal(242, 3, (h, w, 3)), 0, 255).astype(np.uint8)  # glass
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - 300) / 180.0) ** 2 + ((xx - 350) / 220.0) ** 2 < 1
    pink = np.clip(rng.normal([220, 140, 190], 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img[blob] = pink[blob]
    img[280:300, 340:360] = 250  # a lumen-like white hole inside the tissue
    write_pyramid(tmp_path / "t.tif", img, levels=3, tile=128)
    with open_slide(tmp_path / "t.tif") as s:
        m = tissue_mask(s, 2)
    assert m.shape == (300, 400) and m.dtype == bool
    ref = blob[::2, ::2]
    iou = (m & ref).sum() / (m | ref).sum()
    assert iou > 0.95
    assert not m[:20, :20].any() and not m[-20:, -20:].any()
    assert m[145, 175]  # hole filled
    all_tissue = Slide.from_array(pink[:200, :200])
    assert tissue_mask(all_tissue, 1).all()
    assert not tissue_mask(Slide.from_array(img[:100, -100:]), 1).any()


# ------------------------------------------------------------------ files that promise too much


def test_header_declaring_60000_squared_without_data_is_refused_at_once(tmp_path):
    """A 140-byte TIFF whose header declares 60000 x 60000 px: refused when opened, before
    any level, memmap or tile grid is made (it used to open and predict 1.5 M blank tiles)."""
    import time

    from test_bad_inputs import header_only_tiff

    path = header_only_tiff(tmp_path / "bomb.tif")
    assert path.stat().st_size < 200
    t = time.perf_counter()
    for read in (open_slide, read_image, read_mask, sl.open_map):
        with pytest.raises(InputError, match="declares a 60000x60000 px image but holds no"):
            read(path)
    assert time.perf_counter() - t < 2.0


def test_tiff_data_past_the_end_or_in_one_giant_strip_is_refused(tmp_path):
    from test_bad_inputs import header_only_tiff

    cut = header_only_tiff(tmp_path / "cut.tif", h=3000, w=3000, bytecount=3000 * 3000 * 3)
    with pytest.raises(InputError, match="truncated"):
        open_slide(cut)
    strip = header_only_tiff(tmp_path / "s.tif", h=20000, w=20000, bytecount=64, present=True)
    with pytest.raises(InputError, match=r"chunks of 1\.2 GB .* re-save it tiled"):
        open_slide(strip)
    # a real, well-compressed tiled slide of one colour still opens
    tifffile.imwrite(
        tmp_path / "white.tif",
        np.full((2048, 2048, 3), 255, np.uint8),
        tile=(256, 256),
        compression="zlib",
        photometric="rgb",
    )
    with open_slide(tmp_path / "white.tif") as s:
        assert s.shape == (2048, 2048) and s.read_region(0, 0, 4, 4).min() == 255


def _cmyk_image() -> Image.Image:
    rng = np.random.default_rng(5)
    cmyk = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    cmyk[0, 0] = (0, 0, 0, 0)  # white paper
    cmyk[0, 1] = (0, 0, 0, 255)  # black ink: K is not alpha (it used to come out white)
    cmyk[0, 2] = (255, 0, 0, 0)  # cyan
    return Image.fromarray(cmyk, mode="CMYK")


@pytest.mark.parametrize("planar", [False, True])
def test_cmyk_tiff_has_the_colours_pil_gives_it(tmp_path, planar):
    img = _cmyk_image()
    cmyk = np.asarray(img)
    expected = np.asarray(img.convert("RGB"))
    assert tuple(expected[0, 0]) == (255, 255, 255) and tuple(expected[0, 1]) == (0, 0, 0)
    assert tuple(expected[0, 2]) == (0, 255, 255)
    data = np.moveaxis(cmyk, -1, 0) if planar else cmyk
    tifffile.imwrite(
        tmp_path / "c.tif",
        data,
        photometric="separated",
        planarconfig="separate" if planar else "contig",
    )
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), expected)
    with open_slide(tmp_path / "c.tif") as s:
        assert s.levels[0].shape == (24, 32, 3)  # napari sees an RGB image too
        np.testing.assert_array_equal(np.asarray(s.levels[0][3:9, 4:20]), expected[3:9, 4:20])


def test_cmyk_jpeg_has_the_colours_pil_gives_it(tmp_path):
    img = _cmyk_image()
    img.save(tmp_path / "c.jpg", quality=95)
    expected = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "c.jpg"), expected)


def test_non_finite_pixels_are_a_warning(caplog):
    f = np.full((8, 8, 3), 0.5, np.float32)
    f[0, 0, 0] = np.nan
    f[1, 1, 1] = np.inf
    with caplog.at_level("WARNING"):
        out = to_rgb_uint8(f, "f.tif")
    assert "f.tif: 2 pixel values are NaN or infinite" in caplog.text
    assert out[0, 0, 0] == 0 and out[1, 1, 1] == 255


def test_permission_denied_is_not_file_not_found(tmp_path, monkeypatch):
    from test_bad_inputs import deny

    Image.fromarray(smooth_rgb(16, 16)).save(tmp_path / "a.png")
    deny(monkeypatch, tmp_path / "a.png")
    for read in (read_image, open_slide, read_mask):
        with pytest.raises(InputError, match="permission denied") as err:
            read(tmp_path / "a.png")
        assert "not found" not in str(err.value)
