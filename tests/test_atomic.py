"""The one atomic-write helper: whole file or the old one, the user's umask, durable
renames, and a clean-up that removes only our dead writers' temp files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_semimoe.core import atomic
from napari_semimoe.core.atomic import (
    TEMP_PATTERN,
    atomic_open,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temps,
    temp_name,
)
from napari_semimoe.core.checkpoint import save_checkpoint
from napari_semimoe.core.tiff_writer import write_tiff


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_get_the_users_umask_whoever_creates_them(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_open(tmp_path / "b.npz") as fh:
        np.savez(fh, a=np.arange(3))

    with atomic_path(tmp_path / "c.bin") as tmp:  # a writer that makes its own 0600 file
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"c")
        os.close(fd)
    write_tiff(tmp_path / "d.tif", np.zeros((4, 4), np.uint8))
    save_checkpoint(tmp_path / "e.safetensors", torch.nn.Linear(2, 2), {"x": 1})
    for name in ("a.txt", "b.npz", "c.bin", "d.tif", "e.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    assert np.load(tmp_path / "b.npz")["a"].tolist() == [0, 1, 2]
    assert (tmp_path / "c.bin").read_bytes() == b"c"
    assert temps(tmp_path) == []


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
    target = tmp_path / "config.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(error), atomic_open(target, "w") as fh:
        fh.write('{"v": 2, "half')
        fh.flush()
        assert len(temps(tmp_path)) == 1  # the half-written file is a temp, not the target
        raise error("disk full")
    assert target.read_text() == '{\n "v": 1\n}'
    assert temps(tmp_path) == []


def test_a_writer_failing_inside_a_library_keeps_the_old_tiff(tmp_path):
    target = tmp_path / "mask.tif"
    write_tiff(target, np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError):
        write_tiff(target, np.zeros((8, 8), np.complex64), compression="nonsense")
    assert int(np.asarray(__import__("tifffile").imread(target)).sum()) == 64
    assert temps(tmp_path) == []


def test_the_file_and_its_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd):
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def spy_replace(a, b):
        calls.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert calls == ["file", "rename", "dir"]
    calls.clear()
    write_tiff(tmp_path / "m.tif", np.zeros((4, 4), np.uint8))  # wrote without fsync before
    assert calls == ["file", "rename", "dir"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_clean_up_removes_only_our_dead_writers_temps(tmp_path):
    dead = _dead_pid()
    ours_dead = [
        tmp_path / f".project.json.{dead}.0a1b2c3d.tmp",
        tmp_path / f".img.tif.{dead}.ffffffff.tmp",
    ]
    kept = [
        tmp_path / f".project.json.{os.getpid()}.0a1b2c3d.tmp",  # alive: maybe mid-write
        tmp_path / ".project.json.ab12cd34.tmp",  # no pid: whose it is cannot be known
        tmp_path / f".notes.{dead}.XYZ.tmp",
        tmp_path / "results.tmp",
        tmp_path / "project.json",
    ]
    for p in ours_dead + kept:
        p.write_bytes(b"half")
    (tmp_path / f".dir.{dead}.00000000.tmp").mkdir()  # not a file: not ours
    (tmp_path / "sub").mkdir()
    below = tmp_path / "sub" / f".x.{dead}.00000000.tmp"
    below.write_bytes(b"")
    gone = remove_stale_temps(tmp_path, names=lambda n: n != "img.tif")
    assert gone == [ours_dead[0]]
    assert sorted(remove_stale_temps(tmp_path)) == [ours_dead[1]]
    assert all(p.exists() for p in kept) and below.exists()
    assert (tmp_path / f".dir.{dead}.00000000.tmp").is_dir()
    assert remove_stale_temps(tmp_path / "missing") == []


def test_temp_names_are_the_one_pattern(tmp_path):
    m = TEMP_PATTERN.match(temp_name(tmp_path / "checkpoint.safetensors").name)
    assert m and m["name"] == "checkpoint.safetensors" and int(m["pid"]) == os.getpid()
    assert atomic.writer_alive(os.getpid(), tmp_path)
    assert not atomic.writer_alive(_dead_pid(), tmp_path)


def test_atomic_open_refuses_appending(tmp_path):
    with pytest.raises(ValueError, match="whole files"), atomic_open(tmp_path / "x", "ab"):
        pass
