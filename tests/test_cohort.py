"""Cohorts on a real dask LocalCluster (worker processes): equal to whole-slide predictions,
a killed worker, a stop and --resume, a corrupt slide, glands across block borders, and the
OME-Zarr read by ome-zarr and (lazily) by the plugin's reader into napari layers."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from napari_semimoe.core.cohort import CohortOptions, is_complete, run_cohort  # noqa: E402
from napari_semimoe.core.cohort import blocks as cohort_blocks  # noqa: E402

SLIDE = (320, 384)  # native px; working scale 2 -> 160 x 192: 2 x 2 blocks of 128
OPT = {"block": 128, "chunk": 64, "tissue_only": False}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.inference import PredictOptions, Predictor, load_model, working_reader
    from napari_semimoe.core.slide import open_slide
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles
    from napari_semimoe.core.train import TrainConfig, Trainer
    from napari_semimoe.plugin.sample import synthetic_he

    d = tmp_path_factory.mktemp("cohort")
    patch, mask = synthetic_he(512)
    cfg = TrainConfig(
        iterations=1, width=4, geometry=Geometry(scale=2, tile=64).to_dict(), compile="off"
    )
    Trainer(
        cfg, TrainingSet([patch[::2, ::2]], [mask[::2, ::2]], [patch[::2, ::2]]), d / "run"
    ).run()
    slides = []
    for i in range(3):
        p = d / f"slide{i}.tif"
        img = np.roll(patch, 97 * i, axis=(0, 1))[: SLIDE[0], : SLIDE[1]]
        write_pyramid_tiles(
            p, SLIDE, lambda y, x, h, w, a=img: a[y : y + h, x : x + w], levels=2, tile=64, mpp=0.5
        )
        slides.append(p)
    bad = d / "corrupt.tif"
    bad.write_bytes(slides[0].read_bytes()[:3000])  # a truncated TIFF
    # A 1-iteration model is not confident: threshold its probability at its 70th
    # percentile so there are glands, and some of them cross block borders.
    pred = Predictor(load_model(d / "run"), PredictOptions(threads=1, batch=8))
    refs = []
    for p in slides:
        with open_slide(p) as sl:
            shape = pred.m.geometry.working_shape(sl.shape)
            maps = dict(pred.predict_region_reader(working_reader(sl, shape), shape).maps)
        refs.append(maps)
    threshold = float(np.percentile(refs[0]["prob"], 70))
    pred.opt.threshold = threshold
    for maps in refs:
        maps["mask"] = pred.mask(maps)
        maps["instances"] = pred.instances(maps)
    return {"dir": d, "run": d / "run", "slides": slides, "bad": bad, "refs": refs, "t": threshold}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _opts(work, **kw) -> CohortOptions:
    return CohortOptions(threshold=work["t"], batch=8, **{**OPT, **kw})


def _arrays(out: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(out, mode="r")
    keys = ["0", "1", "2", "labels/mask/0", "labels/mask/1", "labels/instances/0"]
    keys += ["labels/instances/2", "tiles/gates", "tiles/boxes"]
    return {k: np.asarray(g[k][...]) for k in keys}


def _same_glands(inst: np.ndarray, ref: np.ndarray, mask: np.ndarray, halo: int) -> int:
    """Every gland of the whole-slide labelling whose mask component spans at most the halo
    is exactly one gland of the cohort's (same pixels, its own id); returns how many."""
    from scipy import ndimage as ndi

    comp, _ = ndi.label(mask)
    n = 0
    for i, sl in enumerate(ndi.find_objects(comp), start=1):
        if max(s.stop - s.start for s in sl) > halo:
            continue
        for r in np.unique(ref[sl][comp[sl] == i]):
            if r == 0:
                continue
            ids = np.unique(inst[ref == r])
            assert len(ids) == 1 and ids[0] > 0, (r, ids)
            assert (ref[inst == ids[0]] == r).all(), (r, ids)
            n += 1
    return n


@pytest.fixture(scope="module")
def first(work, client):
    """The 3 good slides and a corrupt one, on the cluster."""
    slides = [*work["slides"][:2], work["bad"], work["slides"][2]]
    summary = run_cohort(work["run"], slides, work["dir"] / "a", _opts(work), client=client)
    return summary


def test_cohort_equals_single_slide_predictions_and_a_corrupt_slide_fails_alone(
    work, first, client
):
    by_name = {r.name: r for r in first.slides}
    bad = by_name.pop("corrupt")
    assert bad.status == "failed" and "corrupt.tif" in bad.error and "\n" not in bad.error
    assert not (work["dir"] / "a" / "corrupt.ome.zarr" / "zarr.json").exists() or not is_complete(
        work["dir"] / "a" / "corrupt.ome.zarr"
    )
    for i, ref in enumerate(work["refs"]):
        r = by_name[f"slide{i}"]
        assert r.status == "done" and r.blocks == 4
        out = Path(r.out)
        assert is_complete(out) and not (out / ".cohort").exists()
        g = zarr.open_group(out, mode="r")
        image = np.asarray(g["0"][:])
        for c, k in enumerate(["prob", "sdf", "boundary"]):
            np.testing.assert_allclose(image[c], ref[k], atol=1e-5, err_msg=k)
        np.testing.assert_array_equal(np.asarray(g["labels/mask/0"][:]), ref["mask"])
        inst = np.asarray(g["labels/instances/0"][:])
        assert _same_glands(inst, ref["instances"], ref["mask"], halo=64) > 5
        assert r.gland_count == int(inst.max()) == len(np.unique(inst)) - 1 > 0
    # the model was loaded once per worker, not once per task
    loads = client.run(cohort_blocks.model_loads)
    assert all(n <= 1 for n in loads.values()), loads
    summ = (work["dir"] / "a" / "cohort_summary.csv").read_text().splitlines()
    assert summ[0].startswith("name,path,status") and len(summ) == 5


def test_single_slide_predict_is_the_cohort_engine_in_process(work, first, tmp_path):
    """``predict`` (core.cohort.predict_slide) runs the cohort's tasks in this process: its
    OME-Zarr is the cohort's (maps, labels, gates), and its native-size TIFFs and gates file
    are the whole-slide prediction's."""
    import tifffile

    from napari_semimoe.core.cohort import predict_slide
    from napari_semimoe.core.inference import (
        PredictOptions,
        Predictor,
        load_model,
        resample,
        working_reader,
    )
    from napari_semimoe.core.slide import open_slide

    opts = PredictOptions(threads=1, batch=8, threshold=work["t"])
    pred = Predictor(load_model(work["run"]), opts)
    ref = work["refs"][0]
    calls = []
    with open_slide(work["slides"][0]) as sl:
        written = predict_slide(
            pred,
            sl,
            tmp_path,
            "slide0",
            keep_zarr=True,
            block=OPT["block"],
            chunk=OPT["chunk"],
            progress=lambda d, t: calls.append((d, t)),
        )
        shape = pred.m.geometry.working_shape(sl.shape)
        wp = pred.predict_region_reader(working_reader(sl, shape), shape)
    assert calls and calls[-1][0] == calls[-1][1] > 0
    assert calls[-1][0] == len(wp.tiles)  # each tile predicted once, by the block it starts in
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(p.name for p in written.values())
    a, b = _arrays(written["ome-zarr"]), _arrays(Path(first.slides[0].out))
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("prob", "sdf", "boundary"):
        got = tifffile.imread(written[k])
        np.testing.assert_allclose(got, resample(ref[k], SLIDE), atol=1e-5, err_msg=k)
    mask = tifffile.imread(written["mask"])
    np.testing.assert_array_equal(mask, resample(ref["mask"], SLIDE, nearest=True))
    inst = tifffile.imread(written["instances"])
    assert inst.dtype == np.int32 and inst.shape == SLIDE
    np.testing.assert_array_equal(inst, resample(a["labels/instances/0"], SLIDE, nearest=True))
    with np.load(written["gates"]) as z:  # the whole-slide prediction's tiles, in its order
        np.testing.assert_array_equal(z["tiles_working"], np.asarray(wp.tiles))
        np.testing.assert_array_equal(z["tiles"], z["tiles_working"] * 2)
        np.testing.assert_allclose(z["gates"], wp.gates, atol=1e-5)


def test_a_gland_across_a_block_border_has_one_id(work, first):
    """Every pair of touching pixels across a block border that the whole-slide rule puts
    in one gland has one id in the cohort's output; and crossing glands exist here."""
    crossing = 0
    for i, ref in enumerate(work["refs"]):
        inst = np.asarray(
            zarr.open_group(first.slides[[0, 1, 3][i]].out, mode="r")["labels/instances/0"][:]
        )
        g = ref["instances"]
        b = OPT["block"]
        for axis in (0, 1):
            lo = np.take(g, b - 1, axis=axis)
            hi = np.take(g, b, axis=axis)
            same = (lo > 0) & (lo == hi)
            crossing += int(same.sum())
            ci_lo, ci_hi = np.take(inst, b - 1, axis=axis), np.take(inst, b, axis=axis)
            assert (ci_lo[same] == ci_hi[same]).all()
            assert (ci_lo[same] > 0).all()
    assert crossing > 0


def test_a_killed_worker_gives_complete_identical_outputs(work, first, client):
    pids = list(client.run(os.getpid).values())
    killed, seen = [], []

    def progress(p):
        seen.append(p)
        if p.tiles_done > 0 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = run_cohort(
        work["run"],
        work["slides"][:2],
        work["dir"] / "k",
        _opts(work),
        client=client,
        progress=progress,
    )
    assert killed
    assert [r.status for r in summary.slides] == ["done"] * 2
    # per-slide rows of the dock: tiles done of all, complete at the end, and no reasons
    assert seen[-1].tiles == {r.name: (r.tiles, r.tiles) for r in summary.slides}
    assert seen[-1].errors == {}
    for r, ref in zip(summary.slides, first.slides[:2]):
        a, b = _arrays(Path(r.out)), _arrays(Path(ref.out))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_stop_then_resume_does_only_the_missing_blocks(work, first, client):
    stop = threading.Event()

    def progress(p):
        if p.tiles_done > 0:
            stop.set()

    out = work["dir"] / "r"
    one = [work["slides"][1]]
    s1 = run_cohort(work["run"], one, out, _opts(work), client=client, progress=progress, stop=stop)
    assert s1.stopped and s1.slides[0].status == "stopped"
    assert not is_complete(out / "slide1.ome.zarr")  # no metadata claims a finished slide
    with pytest.raises(Exception, match="--resume"):
        run_cohort(work["run"], one, out, _opts(work), client=client)
    s2 = run_cohort(work["run"], one, out, _opts(work, resume=True), client=client)
    r = s2.slides[0]
    assert r.status == "done" and r.resumed_blocks >= 1
    assert r.tiles < first.slides[1].tiles  # only the missing blocks were predicted
    a, b = _arrays(Path(r.out)), _arrays(Path(first.slides[1].out))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    s3 = run_cohort(work["run"], one, out, _opts(work, resume=True), client=client)
    r3 = s3.slides[0]
    assert r3.status == "done" and r3.tiles == 0 and r3.resumed_blocks == 4  # nothing to do
    assert r3.gland_count == first.slides[1].gland_count  # the summary, from the metadata


def test_the_output_opens_with_ome_zarr_and_lazily_in_napari(first):
    import dask.array as da
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = first.slides[0].out
    nodes = list(Reader(parse_url(out))())
    image = nodes[0]
    assert image.data[0].shape == (4, 160, 192) and len(image.data) == 3
    scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale[-2:] == [1.0, 1.0]  # 0.5 µm/px native x working scale 2
    names = {n.zarr.path.rstrip("/").rsplit("/", 1)[-1] for n in nodes}
    assert {"mask", "instances"} <= names

    from napari.layers import Layer

    from napari_semimoe.plugin.reader import get_reader

    reader = get_reader(out)
    assert reader is not None
    layers = [Layer.create(*ld) for ld in reader(out)]
    kinds = {ly.name: type(ly).__name__ for ly in layers}
    assert kinds["slide0_mask"] == kinds["slide0_instances"] == "Labels"
    assert kinds["slide0_prob"] == kinds["slide0_uncertainty"] == "Image"
    for ly in layers:
        assert ly.multiscale
        assert all(isinstance(a, da.Array | zarr.Array) for a in ly.data), ly.name
        assert not any(isinstance(a, np.ndarray) for a in ly.data)
    assert get_reader(str(Path(out).parent)) is None  # a plain folder is not ours


def test_cli_cohort_on_a_scheduler_and_one_line_errors(work, client, tmp_path, capsys):
    from napari_semimoe.cli import main

    listing = tmp_path / "slides.txt"
    listing.write_text(f"# one slide\n{work['slides'][0]}\n")
    addr = client.scheduler.address
    rc = main(
        [
            "cohort",
            str(work["run"]),
            str(listing),
            "--out",
            str(tmp_path / "o"),
            "--scheduler",
            addr,
            "--all-tiles",
            "--batch",
            "8",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert is_complete(tmp_path / "o" / "slide0.ome.zarr") and "1/1 slides done" in err
    for argv, msg in [
        ([str(tmp_path / "none.tif")], "none.tif: no such file or folder"),
        ([str(tmp_path / "*.svs")], "no slide matches this pattern"),
        ([str(listing), str(listing)], None),
    ]:
        rc = main(
            ["cohort", str(work["run"]), *argv, "--out", str(tmp_path / "o"), "--scheduler", addr]
        )
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert msg is None or msg in err
    assert "--resume" in err


def test_ctrl_c_stops_the_cli_cleanly_and_resume_completes_it(work, tmp_path):
    """SIGINT to a real `cohort` process once its first block is done: exit 130 with one
    line, no slide claimed complete; `--resume` then does the rest, equal to a clean run."""
    import subprocess
    import sys
    import time

    from napari_semimoe.core.cohort import layout
    from napari_semimoe.core.tiff_writer import write_pyramid_tiles
    from napari_semimoe.plugin.sample import synthetic_he

    patch, _ = synthetic_he(512)
    big = np.tile(patch, (4, 4, 1))  # 2048² native, 1024² working: 4 blocks of 512
    slide = tmp_path / "big.tif"
    write_pyramid_tiles(
        slide, big.shape[:2], lambda y, x, h, w: big[y : y + h, x : x + w], levels=2, tile=256
    )
    base = ["cohort", str(work["run"]), str(slide), "--workers", "1"]
    base += ["--all-tiles", "--batch", "8", "--block", "512", "--tile", "128"]
    cli = [sys.executable, "-m", "napari_semimoe.cli", *base]
    # Real processes all three (as a user runs them; in-process under pytest the cluster's
    # start is several times slower).
    clean = subprocess.run([*cli, "--out", str(tmp_path / "clean")], capture_output=True)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "cut"
    zarr_out = out / "big.ome.zarr"
    proc = subprocess.Popen([*cli, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(layout.work_dir(zarr_out).glob("maps-*.done")):
        assert proc.poll() is None and time.monotonic() < deadline, "no block finished"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    ours = [
        ln for ln in err.splitlines() if ln.startswith("napari-semimoe") and "dashboard:" not in ln
    ]
    assert proc.returncode == 130, err
    assert ours == ["napari-semimoe cohort: interrupted"] and "Traceback" not in err, err
    assert "napari-semimoe cohort: dashboard: http://" in err  # the LocalCluster's, live
    done = len(list(layout.work_dir(zarr_out).glob("maps-*.done")))
    assert 1 <= done < 4 and not is_complete(zarr_out)
    resumed = subprocess.run([*cli, "--out", str(out), "--resume"], capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert is_complete(zarr_out)

    def arrays(path):
        g = zarr.open_group(path, mode="r")
        return {k: np.asarray(v[...]) for k, v in g.members(max_depth=None) if hasattr(v, "shape")}

    a, b = arrays(zarr_out), arrays(tmp_path / "clean" / "big.ome.zarr")
    assert set(a) == set(b) and {"0", "labels/instances/0", "tiles/gates"} <= set(a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
