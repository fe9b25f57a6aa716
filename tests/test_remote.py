"""Remote training: a real dask LocalCluster whose worker process has the GPU resource (on
CPU, as `dask worker ADDR --resources GPU=1` would), against local runs of the same seed."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch

from napari_semimoe.cli import main
from napari_semimoe.core import remote
from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.remote import RemoteTraining
from napari_semimoe.core.runfolder import RunFolder
from napari_semimoe.core.train import TrainConfig, Trainer, TrainingError
from test_train import config as train_config

distributed = pytest.importorskip("distributed")


def config(**kw) -> TrainConfig:
    """test_train's tiny run, on the CPU (the worker has a GPU *resource*, not a GPU)."""
    return train_config(**{"device": "cpu", **kw})


@pytest.fixture(scope="module")
def cluster():
    """One worker process with the GPU resource, shared by the module (start-up ~3 s)."""
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        resources={"GPU": 1},
        dashboard_address=":0",
    ) as c, distributed.Client(c) as client:  # fmt: skip
        # The worker imports torch and the trainer while the local run trains.
        warm = client.submit(exec, "import napari_semimoe.core.train", pure=False)
        yield client
        del warm


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same training, trained here: what the remote run must bring home, bit for bit."""
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.data import TrainingSet

    images, masks = synthetic_tiles(6, size=48, seed=1)
    data = TrainingSet(images[:3], masks[:3], images[3:])
    run = tmp_path_factory.mktemp("local") / "run"
    kinds: list[str] = []
    Trainer(config(), data, run).run(on_event=lambda e: kinds.append(e.kind))
    return data, run, kinds


def tensors(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoint.safetensors")[0]


def same_weights(a: Path, b: Path) -> bool:
    ta, tb = tensors(a), tensors(b)
    return set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)


def records(run: Path) -> list[dict]:
    """log.jsonl without the wall times."""
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("time")
        out.append(rec)
    return out


def train_remote(client, data, run: Path, cfg: TrainConfig, resume=False, **run_kw):
    events = []
    with RunFolder(run).lock(create=not resume) as folder:
        job = RemoteTraining(client, cfg, data, folder, resume=resume)
        on_event = run_kw.pop("on_event", None)

        def record(ev):
            events.append(ev)
            if on_event is not None:
                on_event(ev)

        result = job.run(on_event=record, **run_kw)
    return result, events


def test_remote_run_streams_events_and_brings_home_the_local_checkpoint(
    cluster, local_run, tmp_path
):
    data, local, local_kinds = local_run
    run = tmp_path / "remote"
    result, events = train_remote(cluster, data, run, config())
    assert result == "done"
    # The trainer's own events, in order, as a local run reports them to the CLI and plugin.
    assert [e.kind for e in events] == local_kinds
    its = [e for e in events if e.kind == "iteration"]
    assert [e.iteration for e in its] == [1, 2, 3, 4, 5, 6]
    assert all(e.losses["total"] > 0 and e.total == 6 for e in its)
    # The local folder holds the run's files, and the very weights of a local run.
    assert same_weights(run, local)
    assert records(run) == records(local)
    assert json.loads((run / "history.json").read_text())[-1]["iteration"] == 6
    cfg = json.loads((run / "config.json").read_text())
    assert cfg == json.loads((local / "config.json").read_text())
    assert not (run / ".lock").exists()
    assert not list(run.glob(".*.tmp"))


def test_pause_stop_and_resume_remotely(cluster, local_run, tmp_path):
    data, local, _ = local_run
    run = tmp_path / "remote"
    stop, pause = threading.Event(), threading.Event()
    pause.set()  # paused before the first step: the worker saves, then waits

    def on_event(ev):
        if ev.kind == "paused":  # the checkpoint of the pause has come home first
            assert RunFolder(run).checkpoint_iteration() == ev.iteration
            stop.set()
            pause.clear()

    result, events = train_remote(
        cluster, data, run, config(), stop=stop, pause=pause, on_event=on_event
    )
    assert result == "stopped"
    assert [e.kind for e in events] == ["start", "paused", "resumed", "stopped"]
    assert RunFolder(run).checkpoint_iteration() == 0

    # A resume from the local folder ships its checkpoint back out and ends on the weights
    # of the uninterrupted local run.
    result, events = train_remote(cluster, data, run, config(), resume=True)
    assert result == "done" and events[-1].iteration == 6
    assert same_weights(run, local)
    assert records(run) == records(local)


def test_new_tiles_reach_the_worker_and_a_stop_mid_run_keeps_its_checkpoint(
    cluster, local_run, tmp_path
):
    data, _, _ = local_run
    run = tmp_path / "remote"
    stop, want_new, messages = threading.Event(), threading.Event(), []
    fewer = type(data)(data.labeled_images[:2], data.labeled_masks[:2], data.unlabeled_images)

    def on_event(ev):
        if ev.kind == "iteration" and ev.iteration == 1:
            want_new.set()  # the user painted: the dock re-cut the training set
        if ev.kind == "checkpoint" and messages:
            stop.set()

    def reload():
        if want_new.is_set():
            want_new.clear()
            return fewer
        return None

    result, events = train_remote(
        cluster,
        data,
        run,
        config(iterations=400),
        stop=stop,
        on_event=on_event,
        reload=reload,
        on_message=lambda m: messages.append(m) if m["kind"] == "data" else None,
    )
    assert [m["message"] for m in messages] == ["training tiles updated"]
    stopped = events[-1]
    assert result == "stopped" and stopped.kind == "stopped" and 3 <= stopped.iteration < 400
    assert RunFolder(run).checkpoint_iteration() == stopped.iteration
    assert len(records(run)) == stopped.iteration


def test_only_a_runs_own_files_come_home(tmp_path):
    with RunFolder(tmp_path / "r").lock() as folder:
        for name in ("../x.json", "snapshots/../../x", "train.log", ".lock", "snapshots/a.bin"):
            with pytest.raises(ValueError, match="not a file of a run folder"):
                folder.write_file(name, b"{}")
        folder.write_file("snapshots/iter_000003.safetensors", b"x")
    assert (tmp_path / "r" / "snapshots" / "iter_000003.safetensors").read_bytes() == b"x"
    assert not (tmp_path / "x.json").exists()


def test_cli_trains_on_the_scheduler_and_says_when_no_worker_has_a_gpu(
    cluster, tiny_dataset, tmp_path, capsys, monkeypatch
):
    address = cluster.scheduler.address
    run = tmp_path / "run"
    common = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    args = ["train", "--data", str(tiny_dataset), "--iterations", "2", *common]
    code = main([*args, "--out", str(run), "--scheduler", address, "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {**json.loads(out), "result": "done", "iterations": 2}
    assert RunFolder(run).checkpoint_iteration() == 2
    assert json.loads((run / "config.json").read_text())["_data"] == str(tiny_dataset.resolve())
    assert json.loads((run / "split.json").read_text())["labeled"]

    # A scheduler without a GPU worker: one line that says how to start one, quickly.
    monkeypatch.setattr(remote, "WORKER_TIMEOUT", 0.5)
    monkeypatch.setattr(remote, "CONNECT_TIMEOUT", 1.0)
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=":0"
    ) as plain:  # fmt: skip
        code = main([*args, "--out", str(tmp_path / "no"), "--scheduler", plain.scheduler_address])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"napari-semimoe train: error: no worker with the GPU resource at "
        f"{plain.scheduler_address}: start one with "
        f"`dask worker {plain.scheduler_address} --resources GPU=1`"
    ]
    assert not (tmp_path / "no").exists()
    code = main([*args, "--out", str(tmp_path / "no"), "--scheduler", "tcp://127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the worker has a GPU here")
def test_bad_settings_on_the_worker_are_one_line(cluster, local_run, tmp_path):
    data, _, _ = local_run
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        train_remote(cluster, data, tmp_path / "r", config(device="cuda"))


class _Cutter:
    """The dock's cutter, without napari: the training set is written at once."""

    busy = False

    def __init__(self, path: Path, data) -> None:
        self.path, self.data = path, data

    def rebuild(self, then=None, failed=None, quiet=False) -> None:
        from napari_semimoe.core.trainset import save_trainset

        save_trainset(self.path, self.data)
        then(len(self.data.unlabeled_images))


def test_the_train_panel_trains_on_the_cluster(qtbot, cluster, local_run, tmp_path):
    """Where: cluster (address) -> the Train page's training runs on the GPU worker, its
    child process the client: progress, chart and status as a local run, the checkpoint in
    the project's run folder. (The page without a napari viewer, to keep the test short.)"""
    from napari_semimoe.core.project import Project
    from napari_semimoe.core.trainset import TRAINSET_FILE
    from napari_semimoe.plugin.panels.train import TrainPanel
    from napari_semimoe.plugin.session import Session
    from test_session import FakeLayers

    data, _, _ = local_run
    session = Session(FakeLayers())
    session.set_project(Project(tmp_path / "proj"))
    session.train_geometry = Geometry(input_size=32)
    said: list[str] = []
    session.message.connect(said.append)
    panel = TrainPanel(session, _Cutter(session.project.root / TRAINSET_FILE, data))
    qtbot.addWidget(panel)
    panel.width_spin.setValue(4)
    panel.threads_spin.setValue(1)
    panel.precision_combo.setCurrentText("fp32")
    panel.device_combo.setCurrentText("cpu")
    panel.iter_spin.setValue(3)

    assert panel.where.scheduler() is None  # this computer, by default
    panel.where.use_cluster("")
    panel.start_training()
    assert panel.job is None and "scheduler address" in said[-1]
    panel.where.use_cluster(cluster.scheduler.address)
    panel.start_training()
    assert panel.job is not None and not panel.start_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.job.finished, timeout=120_000)
    assert panel.job.last["kind"] == "exit", panel.job.last
    qtbot.waitUntil(lambda: not panel._poll.isActive(), timeout=5000)
    assert panel.progress.value() == 3
    assert len(panel.chart.series["total"]) == 3
    assert panel.eta_label.text() == "training finished"
    assert any(m.startswith("semi-supervised") for m in said)  # the trainer's start line
    run = session.project.root / "runs" / "run-001"
    assert RunFolder(run).checkpoint_iteration() == 3
    assert len(records(run)) == 3
    panel.job.join(30)


# Last: the worker it kills is replaced by a fresh one, which imports torch again.
def test_a_lost_worker_is_one_line_and_the_last_checkpoint_stays(cluster, local_run, tmp_path):
    data, _, _ = local_run
    run = tmp_path / "remote"
    killed = []

    def on_event(ev):
        if ev.kind == "checkpoint" and not killed:
            killed.append(ev.iteration)
            # The worker process dies (as a node lost); the nanny starts a fresh one.
            with contextlib.suppress(Exception):  # the call dies with its worker
                cluster.run(os._exit, 1)

    with pytest.raises(TrainingError, match="was lost; the last checkpoint that came home") as ei:
        train_remote(cluster, data, run, config(iterations=400), on_event=on_event)
    assert "\n" not in str(ei.value)
    assert RunFolder(run).checkpoint_iteration() == killed[0] == 3
    assert same_weights(run, run)  # whole and readable
