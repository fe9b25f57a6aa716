"""The package's one OME-Zarr writer (core/ngff.py) makes both kinds of output, and the
ome-zarr library reads both: an image of float channels with NGFF labels beside it (the
cohort's slide) and a standalone label image (the dock's export), multiscale, in µm."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")


def _read(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return list(Reader(parse_url(str(path)))())


def test_both_kinds_are_read_by_ome_zarr_with_levels_scale_and_labels(tmp_path):
    from napari_semimoe.core import ngff
    from napari_semimoe.core.export import write_ome_zarr

    rng = np.random.default_rng(0)
    maps = rng.random((2, 150, 130)).astype(np.float32)
    lab = (rng.random((150, 130)) > 0.5).astype(np.uint8)
    # the cohort's kind: channels + labels/mask, chunk 64 -> levels 150, 75, 38
    root = zarr.open_group(tmp_path / "slide.ome.zarr", mode="w", zarr_format=3)
    shapes = ngff.level_shapes((150, 130), 64)
    assert shapes == [(150, 130), (75, 65), (38, 33)]
    ngff.create_levels(root, shapes, "float32", 64, channels=2)
    g = root.require_group("labels").require_group("mask")
    ngff.create_levels(g, shapes, "uint8", 64)
    root["0"][:] = maps
    g["0"][:] = lab
    ngff.fill_levels(root, shapes, False, 64)
    ngff.fill_levels(g, shapes, True, 64)
    ngff.write_label_metadata(root, "mask", shapes, 2.0)
    ngff.write_image_metadata(root, shapes, 2.0, "slide", channels=["prob", "sdf"])
    nodes = _read(tmp_path / "slide.ome.zarr")
    image = nodes[0]
    assert [d.shape for d in image.data] == [(2, 150, 130), (2, 75, 65), (2, 38, 33)]
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales[0] == [1.0, 2.0, 2.0] and scales[1] == pytest.approx([1.0, 4.0, 4.0])
    assert image.metadata["axes"][1]["unit"] == "micrometer"
    assert image.metadata["channel_names"] == ["prob", "sdf"]  # omero channel labels
    np.testing.assert_allclose(
        np.asarray(image.data[1])[:, 0, 0], maps[:, :2, :2].mean((1, 2)), rtol=1e-6
    )
    (label,) = [n for n in nodes if n.zarr.path.rstrip("/").endswith("labels/mask")]
    assert "image-label" in dict(label.zarr.root_attrs).get("ome", label.zarr.root_attrs)
    np.testing.assert_array_equal(np.asarray(label.data[0]), lab)
    np.testing.assert_array_equal(np.asarray(label.data[2]), lab[::4, ::4])

    # the export's kind: a standalone label image at native size (nearest), in µm
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_ome_zarr(tmp_path / "x.ome.zarr", ids, (1200, 1000), name="instances", mpp=0.5)
    (node,) = _read(tmp_path / "x.ome.zarr")
    assert [d.shape for d in node.data] == [(1200, 1000), (600, 500), (300, 250)]
    assert node.data[0].dtype == np.uint8  # the smallest dtype that holds the ids
    level0 = np.asarray(node.data[0])
    np.testing.assert_array_equal(level0, ids.repeat(400, 0).repeat(250, 1))
    np.testing.assert_array_equal(np.asarray(node.data[2]), level0[::4, ::4])
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer"] * 2
