"""The run folder: locked while written, cleaned of interrupted writes, never mixed, and
readable by colleagues; train's per-invocation options, signals and write failures."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import napari_semimoe.core.checkpoint as ck
from napari_semimoe.cli import main
from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.runfolder import RunFolder, RunFolderBusy
from napari_semimoe.core.train import TrainConfig, Trainer
from test_train import config as train_config

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]


def config(**kw) -> TrainConfig:
    """test_train's tiny config, saving every 2 iterations."""
    return train_config(**{"checkpoint_every": 2, **kw})


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def train(capsys, data: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "train", "--data", str(data), "--out", str(out), *TINY, *extra)


def one_line_error(err: str) -> str:
    """The last line of stderr (after the progress bars), checked to be a plain error."""
    assert "Traceback" not in err, err
    return err.strip().replace("\r", "\n").splitlines()[-1]


def log_iterations(run: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]


def temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("opt", "value"),
    [("--checkpoint-every", "0"), ("--checkpoint-every", "-3"), ("--snapshot-every", "-1")],
)
def test_degenerate_save_intervals_are_refused_up_front(tiny_dataset, tmp_path, capsys, opt, value):
    run = tmp_path / "run"
    code, _, err = train(capsys, tiny_dataset, run, "--iterations", "3", opt, value)
    assert code == 2
    line = one_line_error(err)
    assert opt in line and "must be" in line
    assert len(err.strip().splitlines()) == 1  # refused before any image was read
    assert not run.exists()
    with pytest.raises(InputError, match="checkpoint_every"):
        config(checkpoint_every=0).validate()


def test_resume_honours_per_invocation_options(tiny_dataset, tmp_path, capsys, monkeypatch):
    """--checkpoint-every, --snapshot-every and --compile apply to the invocation they are
    given to, --resume included (help and errors say so)."""
    run = tmp_path / "run"
    code, _, err = train(capsys, tiny_dataset, run, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    saved, compiled = [], []
    real_save = Trainer.save

    def spy_save(self):
        saved.append(self.iteration)
        real_save(self)

    monkeypatch.setattr(Trainer, "save", spy_save)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    code, _, err = cli(
        capsys,
        "train",
        "--resume",
        str(run),
        "--iterations",
        "6",
        "--checkpoint-every",
        "2",
        "--snapshot-every",
        "3",
        "--compile",
        "on",
    )
    assert code == 0, err
    assert saved == [4, 6]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "iter_000003.safetensors",
        "iter_000006.safetensors",
    ]
    assert compiled, "--compile on was ignored on --resume"


# ----------------------------------------------------------------------------- the lock


def _hold_lock(path: Path) -> subprocess.Popen:
    code = (
        "import sys, time\n"
        "from napari_semimoe.core.runfolder import RunFolder\n"
        "held = RunFolder(sys.argv[1]).lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=env)
    assert p.stdout.readline().strip() == b"locked"
    return p


def test_a_run_folder_has_one_writer_and_the_lock_dies_with_it(
    tiny_dataset, tmp_path, capsys, small_set
):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        t0 = time.monotonic()
        code, _, err = train(capsys, tiny_dataset, run, "--labeled", "2", "--iterations", "2")
        assert code == 2
        line = one_line_error(err)
        assert f"pid {holder.pid} on " in line and "another training" in line
        assert time.monotonic() - t0 < 5  # at once: no image read, nothing trained
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
        # The plugin's training process goes through the trainer: the same lock.
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid}"):
            Trainer(config(), small_set, run)
        code, _, err = cli(capsys, "train", "--resume", str(run), "--iterations", "4")
        assert code == 2 and f"pid {holder.pid}" in one_line_error(err)
    finally:
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait()
    code, _, err = train(capsys, tiny_dataset, run, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    assert not (run / ".lock").exists()  # a released lock leaves no file behind


def test_one_process_two_writers_and_clean_release(tmp_path):
    a, b = RunFolder(tmp_path / "r"), RunFolder(tmp_path / "r")
    with a:
        assert a.held and (tmp_path / "r" / ".lock").exists()
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            b.lock()
    assert not (tmp_path / "r").exists()  # made for nothing: gone again
    with b:
        pass
    with pytest.raises(InputError, match="no such run folder"):
        RunFolder(tmp_path / "missing").lock(create=False)


def test_temp_files_of_interrupted_writes_are_removed_and_only_ours(tmp_path):
    run = tmp_path / "r"
    (run / "snapshots").mkdir(parents=True)
    ours = [
        run / ".checkpoint.safetensors.ab12cd34.tmp",
        run / ".history.json.x_9k2mqz.tmp",  # mkstemp's names (older versions)
        run / "snapshots" / ".iter_000010.safetensors.0f0f0f0f.tmp",
    ]
    theirs = [
        run / ".notes.txt.ab12cd34.tmp",
        run / "results.tmp",
        run / "snapshots" / ".other.ab12cd34.tmp",
    ]
    for p in ours + theirs:
        p.write_bytes(b"half")
    folder = RunFolder(run)
    with pytest.raises(RuntimeError):
        folder.clean_temp_files()  # never without the lock: a writer may be mid-write
    with folder:
        pass
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)


# ----------------------------------------------------------------------------- snapshots, log


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs (no except clause catches it)."""


def test_a_snapshot_cut_short_is_written_again_on_resume(small_set, tmp_path, monkeypatch):
    run = tmp_path / "r"
    real = Trainer._snapshot

    def dies_in_snapshot_4(self):
        if self.iteration == 4:  # leave what a kill leaves: a partial temp file
            (run / "snapshots" / ".iter_000004.safetensors.dead0000.tmp").write_bytes(b"ha")
            raise _Killed
        real(self)

    monkeypatch.setattr(Trainer, "_snapshot", dies_in_snapshot_4)
    tr = Trainer(config(snapshot_every=2), small_set, run)
    with pytest.raises(_Killed):
        tr.run()
    tr.close()
    # The checkpoint does not run ahead of a snapshot that is not on disk.
    assert read_checkpoint(run)[1]["meta"]["state"]["iteration"] == 2
    monkeypatch.setattr(Trainer, "_snapshot", real)
    resumed = Trainer(config(snapshot_every=2), small_set, run, resume=True)
    assert resumed.run() == "done"
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == [f"iter_00000{i}.safetensors" for i in (2, 4, 6)]
    for s in snaps:
        assert read_checkpoint(run / "snapshots" / s)[1]["meta"]["state"]["iteration"] > 0
    assert temp_files(run) == []


def test_no_duplicate_log_records_after_a_failed_save(small_set, tmp_path, monkeypatch):
    run = tmp_path / "r"
    real = ck.save_file
    calls = []

    def full_on_second_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", full_on_second_save)
    with pytest.raises(Exception, match="iteration 4"):
        Trainer(config(), small_set, run).run()
    assert log_iterations(run) == [1, 2, 3, 4]  # written as they happened
    monkeypatch.setattr(ck, "save_file", real)
    Trainer(config(), small_set, run, resume=True).run()
    assert log_iterations(run) == [1, 2, 3, 4, 5, 6]
    hist = json.loads((run / "history.json").read_text())
    assert [h["iteration"] for h in hist] == [1, 2, 3, 4, 5, 6]


def test_a_fresh_start_does_not_append_to_a_failed_start(small_set, tmp_path):
    """A folder whose first start never saved a checkpoint starts over, unmixed."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "log.jsonl").write_text('{"iteration": 1, "losses": {}}\n{"iteration": 2,')
    Trainer(config(iterations=2), small_set, run).run()
    assert log_iterations(run) == [1, 2]
    with pytest.raises(InputError, match="already holds a run"):
        Trainer(config(iterations=2), small_set, run)


def test_run_files_follow_the_umask(small_set, tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(config(iterations=2, snapshot_every=2), small_set, tmp_path / "r").run()
    finally:
        os.umask(old)
    run = tmp_path / "r"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "checkpoint.safetensors",
        "config.json",
        "history.json",
        "log.jsonl",
        "iter_000002.safetensors",
    }
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o644, p.name  # mkstemp made them 0600


# ----------------------------------------------------------------------------- failures


def test_disk_full_names_the_last_good_checkpoint(tiny_dataset, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real = ck.save_file
    calls = []

    def full(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) >= limit[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tensors, path, metadata=metadata)

    limit = [2]
    monkeypatch.setattr(ck, "save_file", full)
    args = ("--labeled", "2", "--iterations", "6", "--checkpoint-every", "2")
    code, out, err = train(capsys, tiny_dataset, run, *args)
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "No space left on device" in line and "at iteration 4" in line
    assert f"{run / 'checkpoint.safetensors'} (iteration 2), was kept" in line
    assert read_checkpoint(run)[1]["meta"]["state"]["iteration"] == 2
    assert temp_files(run) == []

    calls.clear()
    limit[0] = 1
    code, _, err = train(capsys, tiny_dataset, tmp_path / "run2", *args)
    line = one_line_error(err)
    assert code == 2 and "no checkpoint had been saved yet" in line
    assert "last good" not in line


def test_supervised_only_for_want_of_unlabeled_images_is_said(tiny_dataset, tmp_path, capsys):
    for name in ("img_4.png", "img_5.png"):  # the images without masks
        (tiny_dataset / "images" / name).unlink()
    code, _, err = train(capsys, tiny_dataset, tmp_path / "run", "--iterations", "3")
    assert code == 0, err
    assert "warning: no unlabeled images: this run trains supervised only" in err
    assert "lam=" not in err  # no λ rising on the progress bar
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(h["losses"]["lambda"] == 0 for h in hist)


def test_ctrl_c_during_start_up_is_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    import napari_semimoe.core.data as data

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_training_set", interrupted)
    run = tmp_path / "run"
    code, out, err = train(capsys, tiny_dataset, run, "--labeled", "2", "--iterations", "2")
    assert code == 130 and out == ""
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "napari-semimoe train: interrupted before training started; no checkpoint was saved"
    )
    assert not run.exists()


def test_sigterm_stops_with_a_checkpoint_like_ctrl_c(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-c", "import sys; from napari_semimoe.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "train", "--data", str(tiny_dataset), "--out",
           str(run), "--labeled", "2", "--iterations", "100000", "--checkpoint-every", "1000",
           *TINY]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "SIGTERM: stopping after this iteration" in err
    assert f"checkpoint saved in {run}" in err
    done = json.loads(out)["iterations"]
    assert done >= 1 and read_checkpoint(run)[1]["meta"]["state"]["iteration"] == done
    assert log_iterations(run) == list(range(1, done + 1))


def test_ctrl_c_while_the_cli_starts_is_one_line(capsys, monkeypatch):
    """Ctrl-C while torch is being imported (before a command runs): no traceback."""
    import napari_semimoe.cli.app as cli_mod

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "build_parser", interrupted)
    code, out, err = cli(capsys, "train", "--help")
    assert code == 130 and out == ""
    assert err.strip() == "napari-semimoe: interrupted"


# ----------------------------------------------------------------------------- train.log


def test_whoever_holds_the_folder_logs_failures_with_tracebacks_to_train_log(
    small_set, tmp_path, monkeypatch
):
    """The plugin's training process goes through the same RunFolder: a failure inside the
    trainer ends in RUN/train.log with its traceback; a user mistake in a folder that holds
    no run leaves neither log nor folder behind."""

    def broken(self):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Trainer, "step", broken)
    run = tmp_path / "r"
    with pytest.raises(ZeroDivisionError), RunFolder(run) as folder:
        Trainer(config(), small_set, folder).run()
    text = (run / "train.log").read_text()
    assert "failed: ZeroDivisionError: division by zero" in text
    assert "Traceback (most recent call last)" in text and "in broken" in text
    for mistake, kept in ((InputError("bad tile"), False), (RuntimeError("bug"), True)):
        new = tmp_path / f"new-{kept}"
        with pytest.raises(type(mistake)), RunFolder(new):
            raise mistake
        assert new.exists() is kept
        if kept:
            assert sorted(p.name for p in new.iterdir()) == ["train.log"]
            assert "RuntimeError: bug" in (new / "train.log").read_text()


def test_a_split_that_cannot_be_recovered_is_one_error_naming_it(small_set, tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "r"
    Trainer(config(iterations=2), small_set, run).run()
    tensors, doc = read_checkpoint(run)
    del doc["meta"]["labeled_names"]  # a checkpoint that does not list its labeled images
    save_file(tensors, str(run / "checkpoint.safetensors"), metadata={"json": json.dumps(doc)})
    (run / "split.json").write_text("{")
    with pytest.raises(InputError) as err:
        RunFolder(run).plan_resume(iterations=4, data=tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{run / 'split.json'} is damaged (")
    assert "does not list its labeled images; the run cannot be resumed" in msg
    assert "\n" not in msg
