"""npe2 reader, writer and sample data: pyramids open lazily with their physical scale."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_semimoe.core.tiff_writer import write_pyramid
from napari_semimoe.plugin.reader import get_reader
from napari_semimoe.plugin.sample import SAMPLE_TILES, TILE_NATIVE, make_sample_data
from napari_semimoe.plugin.writer import write_tiff_layer


def rgb(h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([yy % 256, xx % 256, (yy + xx) % 256], -1).astype(np.uint8)


def test_reader_claims_only_images(tmp_path):
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "a.png")) is not None
    assert get_reader(str(tmp_path / "slide.svs")) is not None


@pytest.mark.parametrize("subifds", [False, True])
def test_pyramid_opens_lazily_as_multiscale_with_scale(tmp_path, subifds):
    path = tmp_path / "slide.tif"
    write_pyramid(path, rgb(1024, 768), levels=4, tile=128, mpp=0.25, subifds=subifds)
    ((data, meta, kind),) = get_reader(str(path))(str(path))
    assert kind == "image" and meta["multiscale"] and meta["rgb"]
    assert [d.shape[:2] for d in data] == [(1024, 768), (512, 384), (256, 192), (128, 96)]
    assert not isinstance(data[0], np.ndarray)  # a lazy array, not loaded pixels
    assert meta["scale"] == (0.25, 0.25)
    np.testing.assert_array_equal(
        np.asarray(data[0][100:110, 200:210]), rgb(1024, 768)[100:110, 200:210]
    )


def test_plain_png_is_one_level(tmp_path):
    from PIL import Image

    Image.fromarray(rgb(50, 60)).save(tmp_path / "t.png")
    ((data, meta, _),) = get_reader(str(tmp_path / "t.png"))(str(tmp_path / "t.png"))
    assert not meta["multiscale"] and data.shape == (50, 60, 3)


def test_corrupt_file_gives_a_readable_error(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage-garbage")
    with pytest.raises(ValueError, match="broken.tif") as info:
        get_reader(str(bad))(str(bad))
    assert "\n" not in str(info.value)


def test_writer_round_trip(tmp_path):
    labels = np.zeros((40, 30), np.uint16)
    labels[5:10, 5:10] = 7
    (out,) = write_tiff_layer(str(tmp_path / "ann"), labels, {})
    assert out.endswith(".tif")
    np.testing.assert_array_equal(tifffile.imread(out), labels)


def test_sample_has_annotations_only_inside_tiles():
    (image, im_meta, k1), (ann, _, k2), (rects, _, k3) = make_sample_data()
    assert (k1, k2, k3) == ("image", "labels", "shapes")
    assert image.ndim == 3 and image.dtype == np.uint8 and len(rects) == len(SAMPLE_TILES)
    inside = np.zeros(ann.shape, bool)
    for y, x in SAMPLE_TILES:
        inside[y : y + TILE_NATIVE, x : x + TILE_NATIVE] = True
    assert ann[inside].max() > 0 and ann[~inside].max() == 0


@pytest.mark.viewer
def test_napari_opens_pyramid_with_the_plugin(make_napari_viewer, tmp_path):
    """An OME-TIFF pyramid through napari's reader choice; a pyramid named plain '.tif'
    (left to napari's own reader: no prompt for plain TIFFs) through File › IO Utilities ›
    Open slide with Semi-MoE."""
    from napari_semimoe.plugin.open_slide import add_slide

    viewer = make_napari_viewer()
    for name in ("slide.ome.tif", "slide.tif"):
        path = tmp_path / name
        write_pyramid(path, rgb(1024, 1024), levels=3, tile=128, mpp=0.5, subifds=True)
        if name.endswith(".ome.tif"):
            (layer,) = viewer.open(str(path), plugin="napari-semimoe")
        else:
            (layer,) = add_slide(viewer, path)
        assert layer.multiscale and len(layer.data) == 3
        np.testing.assert_allclose(layer.scale, (0.5, 0.5))


def test_a_slide_named_like_a_prediction_still_opens_as_a_slide(tmp_path):
    """Only predict's single-channel maps become labels/maps; an RGB 'x_mask.tif' is a slide."""
    path = tmp_path / "biopsy_mask.tif"
    tifffile.imwrite(path, rgb(40, 50), photometric="rgb")
    ((data, meta, kind),) = get_reader(str(path))(str(path))
    assert kind == "image" and meta["rgb"] and data.shape == (40, 50, 3)
    labels = tmp_path / "biopsy2_mask.tif"
    tifffile.imwrite(labels, (rgb(40, 50)[..., 0] > 100).astype(np.uint8))
    ((data, _, kind),) = get_reader(str(labels))(str(labels))
    assert kind == "labels" and data.shape == (40, 50)


def test_cmyk_tiff_opens_as_its_rgb_colours(tmp_path):
    from PIL import Image

    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:, :4, 3] = 255  # black ink on the left half, bare paper on the right
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    ((data, meta, kind),) = get_reader(str(tmp_path / "c.tif"))(str(tmp_path / "c.tif"))
    assert kind == "image" and meta["rgb"] and data.shape == (8, 8, 3)
    expected = np.asarray(Image.fromarray(cmyk, mode="CMYK").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(data[:, :]), expected)
    assert (expected[:, :4] == 0).all() and (expected[:, 4:] == 255).all()


def test_header_without_data_is_one_line_not_a_giant_layer(tmp_path):
    from test_bad_inputs import header_only_tiff

    path = str(header_only_tiff(tmp_path / "bomb.tif"))
    with pytest.raises(ValueError, match="holds no image data") as info:
        get_reader(path)(path)
    assert "\n" not in str(info.value)


def test_class_map_and_class_probabilities_open_as_the_dock_shows_them(tmp_path):
    import fnmatch
    from pathlib import Path

    import yaml

    from napari_semimoe.core.classes import ClassTable, write_classes
    from napari_semimoe.core.tiff_writer import write_tiff

    cm = np.zeros((32, 32), np.uint8)
    cm[4:10, 4:10], cm[20:30, 20:30] = 1, 2
    write_tiff(tmp_path / "slide_classes.tif", cm)
    write_tiff(tmp_path / "slide_prob_2.tif", np.full((32, 32), 0.25, np.float32))
    patterns = yaml.safe_load(
        (Path(__file__).parents[1] / "src/napari_semimoe/napari.yaml").read_text()
    )["contributions"]["readers"][0]["filename_patterns"]
    for name in ("slide_classes.tif", "slide_prob_2.tif", "slide_prob_12.tiff"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
    # Without a classes.json: Labels with napari's colours, an image in the prob ramp.
    ((data, meta, kind),) = get_reader(str(tmp_path / "slide_classes.tif"))(
        str(tmp_path / "slide_classes.tif")
    )
    assert kind == "labels" and "features" not in meta
    np.testing.assert_array_equal(np.asarray(data), cm)
    ((data, meta, kind),) = get_reader(str(tmp_path / "slide_prob_2.tif"))(
        str(tmp_path / "slide_prob_2.tif")
    )
    assert kind == "image" and meta["colormap"].name == "semimoe-prob"
    # With the model's classes beside it: named and coloured.
    write_classes(tmp_path, ClassTable.from_names(["background", "benign", "malignant"]))
    ((data, meta, kind),) = get_reader(str(tmp_path / "slide_classes.tif"))(
        str(tmp_path / "slide_classes.tif")
    )
    assert meta["features"]["class"] == ["background", "benign", "malignant"]
    from napari.layers import Labels

    layer = Labels(np.asarray(data), **meta)  # what napari makes of it
    assert "malignant" in str(layer.get_status((25, 25))["coordinates"])
    np.testing.assert_allclose(layer.colormap.map(np.array([2]))[0][:3], (1, 127 / 255, 14 / 255))
