"""The project folder's annotation saving: off the UI thread, latest wins, never lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import tifffile

from napari_semimoe.core.project import BackgroundWriter, Project


def test_background_save_returns_at_once_and_the_latest_snapshot_lands(tmp_path, monkeypatch):
    import napari_semimoe.core.project as project_mod

    real = project_mod.write_tiff
    started = threading.Event()

    def slow_write(path, array, **kw):  # a slow disk
        started.set()
        time.sleep(0.3)
        real(path, array, **kw)

    monkeypatch.setattr(project_mod, "write_tiff", slow_write)
    p = Project(tmp_path)
    e = p.entry("slide")
    snaps = [np.full((64, 64), i, np.uint16) for i in range(1, 6)]
    t0 = time.perf_counter()
    for s in snaps:
        p.save_annotations(e, s, background=True)
    assert time.perf_counter() - t0 < 0.1  # the caller never waits for the disk
    started.wait(2)
    # Loading waits for the writes, and sees the last snapshot (older queued ones dropped).
    assert (p.load_annotations(e) == 5).all()
    assert not p.writer.busy


def test_a_synchronous_save_is_never_overtaken_by_an_older_background_one(tmp_path, monkeypatch):
    import napari_semimoe.core.project as project_mod

    real = project_mod.write_tiff

    def write(*a, **k):  # the background write is the slow one
        if threading.current_thread().name == "semimoe-writer":
            time.sleep(0.3)
        real(*a, **k)

    monkeypatch.setattr(project_mod, "write_tiff", write)
    p = Project(tmp_path)
    e = p.entry("slide")
    p.save_annotations(e, np.full((32, 32), 1, np.uint16), background=True)
    p.save_annotations(e, np.full((32, 32), 2, np.uint16))
    time.sleep(0.5)
    assert (tifffile.imread(p.annotations_path(e)) == 2).all()


def test_a_failed_background_write_is_reported():
    errors: list[str] = []
    w = BackgroundWriter(on_error=errors.append)

    def fail() -> None:
        raise OSError("No space left on device")

    w.submit("annotations/x.tif", fail)
    assert w.flush(5)
    assert errors and "No space left on device" in errors[0] and "x.tif" in errors[0]


def test_load_pool_reads_only_the_chosen_pool_tiles(tmp_path):
    from napari_semimoe.core.data import TrainingSet
    from napari_semimoe.core.trainset import load_pool, save_trainset

    img = lambda v: np.full((16, 16, 3), v, np.uint8)  # noqa: E731
    ts = TrainingSet(
        [img(1)],
        [np.zeros((16, 16), np.uint8)],
        [img(2), img(3), img(4)],
        ["a/tile-0"],
        ["a/pool-0-0", "b/pool-16-0", "a/pool-32-16"],
    )
    save_trainset(tmp_path / "trainset.npz", ts)
    pool = load_pool(tmp_path / "trainset.npz", lambda n: n.startswith("a/"))
    assert [n for n, _ in pool] == ["a/pool-0-0", "a/pool-32-16"]
    assert [int(im[0, 0, 0]) for _, im in pool] == [2, 4]  # the right images, in order


def _paint_forever(root, ready) -> None:  # the child: saves as napari's autosave does
    import napari_semimoe.core.project as P

    P.HISTORY_EVERY_S = 0.0  # a version at every save: kills land in history writes too
    p = P.Project(root)
    e = p.state.images[0]
    a = np.zeros((512, 512), np.uint16)  # ~ a few ms to compress: kills land mid-write
    ready.set()
    i = 0
    while True:
        i += 1
        a[:] = i
        a[i % 512] = np.arange(512)  # not uniform: something to compress
        p.save_annotations(e, a.copy(), background=True)
        if i % 7 == 0:
            p.keep_version(e, a.copy(), "before-accept")
        p.writer.flush()


def test_kill_during_annotation_writes_loses_nothing_saved(tmp_path):
    """kill -9 of the process saving annotations, 20 times at random moments (many land
    inside a write): the annotations and every kept version stay readable, each one whole
    (a single snapshot), and reopening the project leaves no temp file behind."""
    import multiprocessing as mp
    import os
    import random
    import signal

    from napari_semimoe.core.project import HISTORY_KEEP

    root = tmp_path / "p"
    p = Project(root)
    e = p.entry("slide")
    p.save_annotations(e, np.zeros((512, 512), np.uint16))
    ctx = mp.get_context("fork")  # no interpreter start-up per kill: 20 kills in seconds
    rng = random.Random(0)
    last = mid_write = 0
    for _ in range(20):
        ready = ctx.Event()
        child = ctx.Process(target=_paint_forever, args=(root, ready))
        child.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        mid_write += any(f.endswith(".tmp") for _, _, fs in os.walk(root) for f in fs)
        q = Project(root)
        a = q.load_annotations(q.state.images[0])
        i = int(np.median(a[:, 0]))
        rows = np.delete(np.arange(512), i % 512) if i else np.arange(512)
        assert (a[rows] == i).all()  # one whole snapshot
        assert not i or (a[i % 512] == np.arange(512)).all()
        last = max(last, i)
        vs = q.versions(q.state.images[0])
        assert 0 < len(vs) <= HISTORY_KEEP
        for v, _, _ in vs:
            assert q.load_version(q.state.images[0], v).shape == (512, 512)
        leftovers = [f for d, _, fs in os.walk(root) for f in fs if f.endswith(".tmp")]
        assert not leftovers, leftovers
    assert last > 0  # the children did save
    assert mid_write >= 5  # and many kills landed inside a write
