"""Tiled prediction: seamless blending, tiles = one pass, native-size outputs, slides, instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_semimoe.core.cohort import predict_slide
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.inference import (
    LoadedModel,
    PredictOptions,
    Predictor,
    TileGrid,
    blend_window,
    resample,
    resample_band,
)
from napari_semimoe.core.instances import label_instances
from napari_semimoe.core.model import SemiMoE
from napari_semimoe.core.slide import open_slide
from napari_semimoe.core.tiff_writer import write_pyramid


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    model = SemiMoE(4).eval()
    return LoadedModel(
        model,
        Geometry(scale=1.0, tile=64),
        [0.7, 0.5, 0.7],
        [0.2, 0.2, 0.2],
        {},
        torch.device("cpu"),
    )


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.random((h, w, 3)), (3, 3, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.uint8)


def test_tile_grid_covers_image_evenly():
    g = TileGrid((300, 64), 64, 16)
    assert g.ys[0] == 0 and g.ys[-1] == 300 - 64
    assert all(b - a <= 48 for a, b in zip(g.ys, g.ys[1:]))
    assert g.xs == [0]
    assert TileGrid((40, 40), 64, 16).ys == [0]


def test_blend_window_is_positive_and_smooth():
    w = blend_window(64, 16)
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    assert w[32, 32] == 1.0 and w[0, 32] < 0.05
    assert np.all(np.diff(w[:16, 32]) > 0)


def test_constant_tiles_blend_without_seams(loaded, monkeypatch):
    """If every tile predicts 0.7, the blended map is 0.7 everywhere: weights normalise."""
    p = Predictor(loaded, PredictOptions(tile=64, overlap=16, precision="fp32"))

    def const(tiles):
        n, h, w = tiles.shape[:3]
        maps = {k: np.full((n, h, w), 0.7, np.float32) for k in ("prob", "sdf", "boundary")}
        return maps, np.full((n, 3, 3), 1 / 3, np.float32)

    monkeypatch.setattr(p, "predict_batch", const)
    out = p.predict_image(texture(150, 170), instances=False)
    np.testing.assert_allclose(out["prob"], 0.7, rtol=1e-5)
    assert out["gates"].shape == (len(out["tiles"]), 3, 3)


def test_tiled_prediction_equals_one_pass(loaded):
    """Default tiling (256 px tiles, 64 px overlap) vs the whole 512 px image in one pass.

    They cannot be bit-equal: each tile has its own gate weights (global pooling) and sees
    less context; measured differences are ~0.001 mean, <0.01 at the 99th percentile.
    """
    image = texture(512, 512, seed=1)
    tiled = Predictor(loaded, PredictOptions(tile=256, precision="fp32"))
    whole = Predictor(loaded, PredictOptions(tile=512, overlap=0, precision="fp32"))
    a = tiled.predict_image(image, instances=False)
    b = whole.predict_image(image, instances=False)
    assert len(a["tiles"]) == 9 and len(b["tiles"]) == 1
    inner = (slice(16, -16), slice(16, -16))
    for key, tol in (("prob", 0.015), ("boundary", 0.015), ("sdf", 0.03)):
        d = np.abs(a[key] - b[key])[inner]
        assert d.mean() < tol / 5, (key, d.mean())
        assert np.percentile(d, 99) < tol, (key, np.percentile(d, 99))


def test_outputs_at_native_size_and_in_range(loaded):
    loaded2 = LoadedModel(
        loaded.model, Geometry(scale=2.0, tile=64), loaded.mean, loaded.std, {}, loaded.device
    )
    p = Predictor(loaded2, PredictOptions(overlap=16, experts=True, precision="fp32"))
    image = texture(130, 90)
    out = p.predict_image(image)
    for key in ("prob", "sdf", "boundary", "mask", "instances", "expert_prob", "expert_sdf"):
        assert out[key].shape == (130, 90), key
    assert out["prob"].min() >= 0 and out["prob"].max() <= 1
    assert out["sdf"].min() >= -1 and out["sdf"].max() <= 1
    assert set(np.unique(out["mask"])) <= {0, 1}
    assert out["mask"].dtype == np.uint8 and out["instances"].dtype == np.int32
    np.testing.assert_allclose(out["gates"].sum(-1), 1, rtol=1e-5)


def test_whole_image_geometry_resizes_and_back(loaded):
    g = LoadedModel(
        loaded.model, Geometry(input_size=64), loaded.mean, loaded.std, {}, loaded.device
    )
    out = Predictor(g, PredictOptions(precision="fp32")).predict_image(texture(100, 150))
    assert out["prob"].shape == (100, 150) and len(out["tiles"]) == 1


def test_bad_tile_settings(loaded):
    with pytest.raises(InputError, match="multiple of 16"):
        Predictor(loaded, PredictOptions(tile=50))
    with pytest.raises(InputError, match="overlap"):
        Predictor(loaded, PredictOptions(tile=64, overlap=48))
    assert Predictor(loaded, PredictOptions(tile=64)).overlap == 16


def test_batch_default_and_validation(loaded):
    assert Predictor(loaded).batch == 2  # CPU: larger batches gain nothing
    assert Predictor(loaded, PredictOptions(batch=5)).batch == 5
    with pytest.raises(InputError, match="batch"):
        Predictor(loaded, PredictOptions(batch=0))


def test_resample_band_matches_whole():
    src = np.random.default_rng(0).random((37, 23)).astype(np.float32)
    whole = resample(src, (100, 61))
    np.testing.assert_allclose(resample_band(src, (100, 61), 40, 25), whole[40:65], rtol=1e-6)
    lab = np.arange(12).reshape(3, 4)
    up = resample(lab, (6, 8), nearest=True)
    assert up.dtype == lab.dtype and (up[::2, ::2] == lab).all()


def test_predict_slide_streams_native_outputs(loaded, tmp_path):
    import tifffile

    loaded2 = LoadedModel(
        loaded.model, Geometry(scale=2.0, tile=64), loaded.mean, loaded.std, {}, loaded.device
    )
    img = np.full((300, 260, 3), 240, np.uint8)
    img[40:200, 30:180] = texture(160, 150)
    write_pyramid(tmp_path / "s.tif", img, levels=3, tile=64, mpp=0.5)
    p = Predictor(loaded2, PredictOptions(overlap=16, tissue_only=True, precision="fp32"))
    calls = []
    with open_slide(tmp_path / "s.tif") as slide:
        written = predict_slide(
            p, slide, tmp_path / "out", "s", progress=lambda d, t: calls.append((d, t))
        )
    assert calls and calls[-1][0] == calls[-1][1]
    mask = tifffile.imread(written["mask"])
    prob = tifffile.imread(written["prob"])
    assert mask.shape == (300, 260) and mask.dtype == np.uint8
    assert prob.shape == (300, 260) and prob.dtype == np.float32
    sdf = tifffile.imread(written["sdf"])
    assert prob.min() >= 0 and prob.max() <= 1 and sdf.min() >= -1 and sdf.max() <= 1
    assert prob[40:200, 30:180].std() > 0  # real values survive the float predictor
    assert tifffile.imread(written["instances"]).shape == (300, 260)
    # outputs keep the slide's pixel size, so they overlay it in µm (napari, QuPath)
    for key in ("mask", "prob", "instances"):
        with tifffile.TiffFile(written[key]) as tf:
            x_res = tf.pages[0].tags["XResolution"].value
            assert tf.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
            assert 1e4 * x_res[1] / x_res[0] == pytest.approx(0.5)
    with np.load(written["gates"]) as z:  # per tile: its box and 3 x 3 gate weights
        assert z["gates"].shape[1:] == (3, 3) and len(z["gates"]) == len(z["tiles"]) > 0
        np.testing.assert_allclose(z["gates"].sum(-1), 1.0, atol=1e-5)  # softmax over experts
        np.testing.assert_array_equal(z["tiles"], z["tiles_working"] * 2)  # scale 2
    assert not list((tmp_path / "out").glob(".*"))  # scratch and temp files are gone
    with open_slide(tmp_path / "s.tif") as slide, pytest.raises(InterruptedError):
        predict_slide(p, slide, tmp_path / "out2", "s", cancel=lambda: True)


def test_instances_split_touching_glands_and_drop_specks():
    yy, xx = np.mgrid[:80, :120]
    a = (yy - 40) ** 2 + (xx - 35) ** 2 < 25**2
    b = (yy - 40) ** 2 + (xx - 82) ** 2 < 25**2
    mask = a | b  # two discs joined by a neck
    mask[5:7, 5:7] = True  # a speck
    sdf = ndi.distance_transform_edt(mask)
    sdf = sdf / sdf.max()
    lab = label_instances(mask, sdf, None, min_size=16)
    assert lab.max() == 2
    assert lab[40, 35] != lab[40, 82] and lab[40, 35] > 0 and lab[40, 82] > 0
    assert lab[6, 6] == 0
    # Without an SDF each component stays whole.
    assert label_instances(mask, None, None, min_size=16).max() == 1


def test_jobs_hand_gpu_cache_back(monkeypatch):
    """What the viewer's prediction jobs are wrapped in: after the job (its model gone),
    PyTorch's GPU cache goes back to the driver; also when the job fails."""
    from napari_semimoe.core import device

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))

    @device.releasing_memory
    def job(x):
        assert not calls  # not before the job has finished
        return x * 2

    assert job(3) == 6 and calls == ["empty"]

    @device.releasing_memory
    def failing():
        raise InputError("bad tile")

    with pytest.raises(InputError):
        failing()
    assert calls == ["empty", "empty"]


def test_large_outputs_are_pyramids_that_the_reader_opens_in_microns(loaded, tmp_path, monkeypatch):
    """Outputs over PYRAMID_MIN_SIDE get halved levels (resampled from the working-scale map,
    so equal to level 0 subsampled for labels), and the plugin's reader opens them lazily,
    multiscale, in µm, as labels or styled images."""
    import tifffile

    from napari_semimoe.core.inference import writers as P
    from napari_semimoe.plugin.reader import get_reader

    monkeypatch.setattr(P, "PYRAMID_MIN_SIDE", 128)
    assert P.map_level_shapes((300, 260)) == [(300, 260), (150, 130), (75, 65), (38, 33)]
    assert P.map_level_shapes((100, 90)) == [(100, 90)]
    loaded2 = LoadedModel(
        loaded.model, Geometry(scale=2.0, tile=64), loaded.mean, loaded.std, {}, loaded.device
    )
    img = np.full((300, 260, 3), 240, np.uint8)
    img[40:200, 30:180] = texture(160, 150)
    write_pyramid(tmp_path / "s.tif", img, levels=3, tile=64, mpp=0.5)
    p = Predictor(loaded2, PredictOptions(overlap=16, precision="fp32"))
    with open_slide(tmp_path / "s.tif") as slide:
        written = predict_slide(p, slide, tmp_path / "out", "s")
    with tifffile.TiffFile(written["prob"]) as tf:
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(300, 260), (150, 130), (75, 65), (38, 33)]
        full = levels[0].asarray()
        half = levels[1].asarray()
    assert full.std() > 0
    # each level is the same working-scale map resampled: level 1 follows level 0
    assert np.corrcoef(half.ravel(), full[::2, ::2].ravel())[0, 1] > 0.95

    reader = get_reader(str(written["prob"]))
    ((data, meta, kind),) = reader(str(written["prob"]))
    assert kind == "image" and meta["multiscale"] and meta["scale"] == (0.5, 0.5)
    assert [d.shape for d in data] == [(300, 260), (150, 130), (75, 65), (38, 33)]
    assert not isinstance(data[0], np.ndarray)  # lazy
    np.testing.assert_array_equal(np.asarray(data[0][10:60, 20:90]), full[10:60, 20:90])
    assert meta["contrast_limits"] == (0, 1)
    ((data, meta, kind),) = reader(str(written["instances"]))
    assert kind == "labels" and meta["multiscale"] and meta["scale"] == (0.5, 0.5)
    assert np.asarray(data[1][:]).dtype == np.int32
    ((_, meta, kind),) = reader(str(written["sdf"]))
    assert kind == "image" and meta["contrast_limits"] == (-1, 1)
    # the slide itself still opens as the RGB image it is
    ((_, meta, kind),) = reader(str(tmp_path / "s.tif"))
    assert kind == "image" and meta["rgb"]


# ------------------------------------------------------------------ nothing half-made in --out


def _slide_file(tmp_path):
    img = np.full((200, 180, 3), 240, np.uint8)
    img[20:180, 20:160] = texture(160, 140)
    write_pyramid(tmp_path / "s.tif", img, levels=1, tile=64)
    return tmp_path / "s.tif"


@pytest.mark.parametrize("fail", [InputError("disk said no"), KeyboardInterrupt()])
def test_a_failed_prediction_leaves_nothing_in_out(loaded, tmp_path, monkeypatch, fail):
    """An error (or Ctrl-C) while the outputs are written leaves neither the scratch folder
    nor a half set of outputs: the older outputs of the same name stay as they were."""
    from napari_semimoe.core.inference import writers as pr

    out = tmp_path / "out"
    out.mkdir()
    (out / "s_mask.tif").write_bytes(b"older")
    real, calls = pr.write_tiled, []

    def write_then_fail(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:  # mask and prob written, then the disk fills up
            raise fail
        return real(path, *a, **k)

    monkeypatch.setattr(pr, "write_tiled", write_then_fail)
    p = Predictor(loaded, PredictOptions(precision="fp32"))
    with open_slide(_slide_file(tmp_path)) as slide, pytest.raises(type(fail)):
        predict_slide(p, slide, out, "s")
    assert sorted(q.name for q in out.iterdir()) == ["s_mask.tif"]
    assert (out / "s_mask.tif").read_bytes() == b"older"


def test_scratch_of_a_killed_prediction_is_removed_next_time(loaded, tmp_path):
    from napari_semimoe.core.inference.slide_job import SCRATCH_PREFIX, _host

    out = tmp_path / "out"
    dead = subprocess_pid_that_has_exited()
    stale = out / f"{SCRATCH_PREFIX}{dead}@{_host()}-abc"
    (stale / "maps").mkdir(parents=True)
    (stale / "maps" / "prob.f32").write_bytes(b"\0" * 1000)
    kept = [
        out / f"{SCRATCH_PREFIX}1@{_host()}-xyz",  # pid 1 runs: another prediction's
        out / f"{SCRATCH_PREFIX}{dead}@elsewhere-xyz",  # another machine's (shared folder)
    ]
    for d in kept:
        d.mkdir()
    p = Predictor(loaded, PredictOptions(precision="fp32"))
    with open_slide(_slide_file(tmp_path)) as slide:
        predict_slide(p, slide, out, "s")
    assert not stale.exists() and all(d.exists() for d in kept)


def subprocess_pid_that_has_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_prediction_that_cannot_fit_on_disk_is_refused_before_it_starts(
    loaded, tmp_path, monkeypatch
):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    p = Predictor(loaded, PredictOptions(precision="fp32"))
    with (
        open_slide(_slide_file(tmp_path)) as slide,
        pytest.raises(InputError, match=r"needs 0\.0 GB of scratch space .* free"),
    ):
        predict_slide(p, slide, tmp_path / "out", "s")
    assert list((tmp_path / "out").iterdir()) == []


def test_sigterm_during_predict_cleans_up(tmp_path):
    """SIGTERM (a scheduler, `timeout`) ends predict like Ctrl-C: exit 143, one line, and
    no scratch folder or output left in --out."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_bad_inputs import write_ckpt

    run = tmp_path / "run"
    write_ckpt(run / "checkpoint.safetensors")
    big = np.full((1536, 1536, 3), 230, np.uint8)
    big[100:1400, 100:1400] = texture(1300, 1300)
    write_pyramid(tmp_path / "big.tif", big, levels=1, tile=256)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable,
        "-m",
        "napari_semimoe.cli",
        "predict",
        str(run),
        str(tmp_path / "big.tif"),
        "--out",
        str(out),
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    # the block engine's plan is in the scratch zarr: the prediction has started
    started = ".semimoe-predict-*/*.ome.zarr/.cohort/plan.json"
    while time.time() < deadline and not list(out.glob(started)):
        time.sleep(0.05)
    assert list(out.glob(".semimoe-predict-*")), "predict never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "predict: terminated" in err, repr(err)
    assert not out.exists()  # predict made it, and leaves neither scratch nor an empty folder


def test_glands_lying_on_glass_are_dropped_and_the_rest_keep_their_ids():
    """An object mostly on glass (a mosaic's gap, a slide's margin) goes; one mostly in
    tissue stays, without its pixels on glass; ids are not renumbered."""
    from napari_semimoe.core.instances import drop_off_tissue

    tissue = np.zeros((6, 10), bool)
    tissue[:, :5] = True
    inst = np.zeros((6, 10), np.int32)
    inst[1:3, 1:4] = 2  # all in tissue
    inst[1:3, 4:7] = 5  # 2 of its 6 px in tissue: off
    inst[4:6, 3:6] = 7  # 4 of 6 in tissue: kept, its 4 px there
    out = drop_off_tissue(inst, tissue)
    assert sorted(np.unique(out)) == [0, 2, 7] and (out[inst == 2] == 2).all()
    assert (out[inst == 7] == 7).sum() == 4 and not out[:, 5:].any()  # its glass part goes
    assert drop_off_tissue(np.zeros((2, 2), np.int32), np.zeros((2, 2), bool)).max() == 0


def test_the_tissue_of_a_view_is_that_part_of_the_slides_mask(tmp_path):
    """tissue_mask(box) costs the view's size and equals the whole mask's crop; outside the
    slide is no tissue."""
    from PIL import Image

    from napari_semimoe.core.slide import open_slide, tissue_mask

    img = np.full((60, 80, 3), 245, np.uint8)
    img[10:40, 20:70] = (150, 60, 140)  # stained tissue on glass
    Image.fromarray(img).save(tmp_path / "s.png")
    slide = open_slide(tmp_path / "s.png")
    whole = tissue_mask(slide, 2.0)
    assert whole.shape == (30, 40) and whole[10, 20] and not whole[0, 0]
    assert np.array_equal(tissue_mask(slide, 2.0, (3, 5, 10, 12)), whole[3:13, 5:17])
    edge = tissue_mask(slide, 2.0, (-2, 30, 6, 14))  # off the top and the right
    assert edge.shape == (6, 14) and not edge[:2].any() and not edge[:, 10:].any()
    assert np.array_equal(edge[2:, :10], whole[:4, 30:40])
