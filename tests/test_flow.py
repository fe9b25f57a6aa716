"""Issue 19, the flow: export for QuPath / TIFF / OME-Zarr at native resolution, no reader
prompt for plain images, the dock's first page, the real H&E sample, the live preview during
training and the prediction when it ends."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from conftest import wait_training


def nearest_up(labels: np.ndarray, shape) -> np.ndarray:
    """What a native pixel shows: the nearest working pixel, centre to centre."""
    h, w = labels.shape
    yi = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    xi = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return labels[np.ix_(yi, xi)]


def rasterize(doc: dict, shape) -> np.ndarray:
    """Each feature's polygons filled at native pixel centres (holes subtracted), as the
    feature's object id: what QuPath would show."""
    from skimage.measure import points_in_poly

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.c_[xx.ravel() + 0.5, yy.ravel() + 0.5]
    out = np.zeros(shape, np.int64)
    for f in doc["features"]:
        oid = int(f["properties"]["name"].split()[-1])
        g = f["geometry"]
        for poly in [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]:
            inside = points_in_poly(centres, np.asarray(poly[0], float))
            for hole in poly[1:]:
                inside &= ~points_in_poly(centres, np.asarray(hole, float))
            out[inside.reshape(shape)] = oid
    return out


def signed_area(ring) -> float:
    r = np.asarray(ring, float)
    return 0.5 * float(np.dot(r[:-1, 0], r[1:, 1]) - np.dot(r[1:, 0], r[:-1, 1]))


@pytest.fixture(scope="module")
def objects() -> np.ndarray:
    """Working-scale instances: a gland with a lumen (hole), one in two pieces touching at
    a corner, two glands sharing an edge, and a field of small irregular ones."""
    lab = np.zeros((60, 70), np.int32)
    lab[5:25, 5:25] = 3
    lab[11:16, 11:16] = 0  # the lumen
    lab[30:35, 40:45] = 7
    lab[35:38, 45:48] = 7  # touches the first piece at one corner only
    lab[5:15, 40:60] = 4
    lab[15:22, 40:60] = 5  # shares an edge with 4
    blobs = ndi.label(ndi.gaussian_filter(np.random.default_rng(1).random((20, 30)), 1) > 0.52)[0]
    lab[40:60, 0:30] = np.where(blobs > 0, blobs + 100, 0)
    return lab


def test_geojson_outlines_are_valid_and_cover_exactly_the_objects(tmp_path, objects):
    from napari_semimoe.core.export import write_geojson

    shape = (120, 210)  # native: the working map at 2 x 3 (no pixel centre on an edge)
    path = write_geojson(tmp_path / "o.geojson", objects, shape, object_type="detection")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    ids = set(np.unique(objects[objects > 0]).tolist())
    assert len(doc["features"]) == len(ids)
    kinds = {}
    for f in doc["features"]:
        p = f["properties"]
        assert p["objectType"] == "detection"
        assert p["classification"]["name"] == "Gland" and len(p["classification"]["color"]) == 3
        g = f["geometry"]
        kinds[int(p["name"].split()[-1])] = (g["type"], len(g["coordinates"]))
        for poly in [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]:
            for j, ring in enumerate(poly):
                r = np.asarray(ring, float)
                assert len(r) >= 5 and np.array_equal(r[0], r[-1]), "a closed ring"
                assert (r[:, 0] >= 0).all() and (r[:, 0] <= shape[1]).all()  # [x, y]
                assert (r[:, 1] >= 0).all() and (r[:, 1] <= shape[0]).all()
                # exterior counterclockwise, holes clockwise (RFC 7946, as numbers)
                assert (signed_area(r) > 0) == (j == 0)
    assert kinds[3] == ("Polygon", 2)  # the lumen is an interior ring
    assert kinds[7] == ("MultiPolygon", 2)  # two pieces that share no edge
    # every native pixel is inside exactly the polygon of the object the TIFF shows there
    np.testing.assert_array_equal(rasterize(doc, shape), nearest_up(objects, shape))


def test_export_writes_native_tiff_and_ome_zarr(tmp_path, objects):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from napari_semimoe.core.export import export_labels

    shape = (600, 700)
    paths = export_labels(objects, shape, tmp_path, "slide_prediction", mpp=0.5)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "slide_prediction_outlines.geojson",
            "slide_prediction_mask.tif",
            "slide_prediction_instances.tif",
            "slide_prediction_mask.ome.zarr",
            "slide_prediction_instances.ome.zarr",
        ]
    )
    up = nearest_up(objects, shape)
    mask = tifffile.imread(tmp_path / "slide_prediction_mask.tif")
    inst = tifffile.imread(tmp_path / "slide_prediction_instances.tif")
    assert mask.shape == inst.shape == shape
    np.testing.assert_array_equal(mask, (up > 0).astype(np.uint8))
    np.testing.assert_array_equal(inst, up)
    for what, want in (("instances", up), ("mask", (up > 0).astype(np.uint8))):
        (node,) = list(Reader(parse_url(str(tmp_path / f"slide_prediction_{what}.ome.zarr")))())
        levels = node.data
        assert len(levels) >= 2 and levels[0].shape == shape
        np.testing.assert_array_equal(np.asarray(levels[0]), want)
        axes = node.metadata["axes"]
        assert [a["name"] for a in axes] == ["y", "x"] and axes[0]["unit"] == "micrometer"


def test_export_refuses_in_one_line(tmp_path):
    from napari_semimoe.core.errors import InputError
    from napari_semimoe.core.export import export_labels

    with pytest.raises(InputError, match="no object"):
        export_labels(np.zeros((10, 10), np.int32), (20, 20), tmp_path, "x")
    with pytest.raises(InputError, match="unknown export format"):
        export_labels(np.ones((10, 10), np.int32), (20, 20), tmp_path, "x", ("png",))


# ----------------------------------------------------------------------------- reader


def test_plain_images_have_one_reader_and_plugin_outputs_are_claimed(tmp_path):
    """napari prompts 'Choose reader' whenever two plugins' patterns match a file: plain
    PNG/TIFF/JPG match napari's builtins only; slides and our outputs match ours."""
    from npe2 import PluginManager

    from napari_semimoe.plugin.layer_styles import prediction_keys

    # What napari does at start (discover the installed plugins' manifests), in a manager of
    # this test's own: napari's global one would keep actions registered for later viewers.
    pm = PluginManager()
    pm.discover()

    def readers(name: str) -> list[str]:
        return sorted({r.plugin_name for r in pm.iter_compatible_readers([str(tmp_path / name)])})

    for name in ("tile.png", "tile.tif", "tile.tiff", "photo.jpg", "scan.bmp"):
        assert readers(name) == ["napari"], (name, readers(name))
    for name in ["slide.svs", "slide.ndpi", "slide.ome.tif", "case.ome.zarr"] + [
        f"s_{k}.tif" for k in prediction_keys()
    ]:
        assert "napari-semimoe" in readers(name), name


@pytest.mark.viewer
def test_plain_png_opens_without_a_reader_prompt(make_napari_viewer, tmp_path):
    from PIL import Image

    path = tmp_path / "plain.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path)
    viewer = make_napari_viewer()
    # ViewerModel.open raises MultipleReaderError (the dialog, in the GUI) when two match
    layers = viewer.open(str(path))
    assert len(layers) == 1 and layers[0].data.shape[:2] == (20, 30)
    # the project still knows where the image lives (napari's reader adds no metadata)
    from napari_semimoe.plugin.widget import SemiMoEWidget

    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_project(tmp_path / "proj")
    (entry,) = widget.project.state.images
    assert entry.name == "plain" and entry.path is not None
    assert Path(entry.path).resolve() == path.resolve()


# ----------------------------------------------------------------------------- the dock


@pytest.mark.viewer
def test_dock_opens_on_the_project_page_without_a_project(make_napari_viewer, tmp_path):
    from napari_semimoe.plugin.widget import SemiMoEWidget

    viewer = make_napari_viewer()
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.toolbox.currentIndex() == 0  # 1 · Project and tiles
    widget.set_project(tmp_path / "empty")  # no image, no tiles: still the page to add them
    assert widget.toolbox.currentIndex() == 0


@pytest.mark.viewer
def test_real_sample_opens_in_a_project_with_annotations_and_exports(
    make_napari_viewer, qtbot, tmp_path
):
    """The real sample: six EBHI-Seg biopsies, the three annotated ones as training tiles
    holding their expert glands; the dock moves to 2 · Train; the annotations export to a
    QuPath GeoJSON and TIFFs from 6 · Export."""
    from napari_semimoe.plugin.sample import REAL_SAMPLE_NAME, real_sample
    from napari_semimoe.plugin.widget import SemiMoEWidget

    files = resources.files("napari_semimoe.plugin") / "sample_data"
    shipped = [f for f in files.iterdir() if f.is_file()]
    assert sum(f.stat().st_size for f in shipped) < 1_000_000  # small package data
    licence = (files / "LICENSE-EBHI-Seg.md").read_text()
    assert "CC BY 4.0" in licence and "Shi et al." in licence and "21540159" in licence

    viewer = make_napari_viewer()
    viewer.open_sample("napari-semimoe", "ebhi-sample")
    widget = SemiMoEWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_project(tmp_path / "proj")
    assert widget.toolbox.currentIndex() == 1  # painted tiles: ready to train
    (entry,) = widget.project.state.images
    assert entry.name == REAL_SAMPLE_NAME
    tiles = entry.train_tiles()
    assert len(tiles) == 3 and all(t.h == t.w == 224 for t in tiles)
    image, glands, doc = real_sample()
    assert viewer.layers[REAL_SAMPLE_NAME].data.shape == image.shape
    ann = viewer.layers["annotations"].data
    inside = np.zeros(ann.shape, bool)
    for t in tiles:
        sl = (slice(t.y, t.y + t.h), slice(t.x, t.x + t.w))
        inside[sl] = True
        assert (ann[sl] > 0).mean() > 0.2  # real glands fill much of each tile
        np.testing.assert_array_equal(ann[sl] > 0, glands[sl])
    assert not ann[~inside].any()  # the other three biopsies are left for the model
    assert sum(im["annotated"] for im in doc["images"]) == 3 and len(doc["images"]) == 6

    panel = widget.export_panel
    panel.source_combo.setCurrentIndex(1)  # my annotations
    panel.folder_edit.setText(str(tmp_path / "out"))
    panel.export()
    qtbot.waitUntil(lambda: bool(panel.written), timeout=60_000)
    out = {p.name: p for p in panel.written}
    gj = json.loads(out["EBHI-Seg_colon_biopsies_annotations_outlines.geojson"].read_text())
    assert len(gj["features"]) == len(np.unique(ann[ann > 0]))
    assert {f["properties"]["objectType"] for f in gj["features"]} == {"annotation"}
    np.testing.assert_array_equal(rasterize(gj, ann.shape), ann)
    mask = tifffile.imread(out["EBHI-Seg_colon_biopsies_annotations_mask.tif"])
    np.testing.assert_array_equal(mask, (ann > 0).astype(np.uint8))


@pytest.mark.viewer
@pytest.mark.slow
def test_live_preview_during_training_then_the_view_is_predicted(ui, qtbot, monkeypatch):
    """Checkpoints during a short training refresh the preview layer while it runs (one at a
    time); when it ends, the preview goes and the view is predicted with the final model on
    page 3, the annotations still the active layer."""
    from napari_semimoe.plugin.panels import train
    from napari_semimoe.plugin.preview import PREVIEW_LAYER
    from napari_semimoe.plugin.widget import camera

    viewer, widget, _proj = ui
    monkeypatch.setitem(train.DOCK_OVERRIDES, "checkpoint_every", 2)
    t = widget.entry.train_tiles()[0]
    camera(viewer).center = (t.y + t.h / 2, t.x + t.w / 2)
    camera(viewer).zoom = 6.0  # a small view: one or two model tiles to preview
    # made with the image (drawn once, transparent), hidden till a training uses it
    qtbot.waitUntil(lambda: not viewer.layers[PREVIEW_LAYER].visible, timeout=5_000)
    seen = []  # (training?, iteration) at each preview shown
    show = widget.preview._show

    def recording(out, gen):
        show(out, gen)
        it = viewer.layers[PREVIEW_LAYER].metadata.get("semimoe_preview_iteration")
        if it is not None:  # shown (a preview that came after the training is dropped)
            seen.append((widget.session.training, it))

    monkeypatch.setattr(widget.preview, "_show", recording)
    # Pause at the first checkpoint, so that a fast machine cannot end the training before
    # its preview is computed (a preview in flight when training ends is dropped).
    tp = widget.train_panel
    paused = []

    def pause_once(_run_dir):
        if not paused:
            paused.append(True)
            tp.toggle_pause()

    tp.checkpoint_saved.connect(pause_once)
    viewer.layers.selection.active = viewer.layers["annotations"]
    tp.iter_spin.setValue(6)
    tp.start_training()
    qtbot.waitUntil(lambda: tp.job is not None, timeout=30_000)
    qtbot.waitUntil(lambda: bool(seen), timeout=120_000)
    assert seen[0][0] and not tp.job.finished, "the preview came while training"
    assert PREVIEW_LAYER in viewer.layers
    layer = viewer.layers[PREVIEW_LAYER]  # outlines drawn by the worker: a 0/1 image
    assert layer._type_string == "image" and set(np.unique(layer.data)) <= {0, 1}
    qtbot.waitUntil(lambda: PREVIEW_LAYER in widget.review_panel.legend.rows, timeout=5_000)
    assert viewer.layers.selection.active.name == "annotations"  # the brush stays at hand
    tp.toggle_pause()  # resume
    wait_training(qtbot, widget)
    assert tp.job.last["kind"] == "exit"
    its = [it for _, it in seen]
    assert its == sorted(its) and all(it % 2 == 0 for it in its)
    from napari_semimoe.core.families import get_family

    seg = get_family().layer_names()["instances"]
    qtbot.waitUntil(lambda: seg in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.review_panel.showing_prediction, timeout=30_000)
    # hidden and emptied, kept for the next training (no layer creation while training)
    assert not viewer.layers[PREVIEW_LAYER].visible
    assert not viewer.layers[PREVIEW_LAYER].data.any()
    qtbot.waitUntil(lambda: PREVIEW_LAYER not in widget.review_panel.legend.rows, timeout=5_000)
    assert widget.toolbox.currentIndex() == 2  # 3 · Review: Accept is at hand
    assert "prediction shown" in widget.status.text()
