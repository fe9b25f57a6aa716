"""Fault injection: ``kill -9`` of the CLI's training at random moments and in the middle of
checkpoint and snapshot writes, each followed by ``train --resume``. At the end the weights
equal, bit for bit, those of a run that was never interrupted; every checkpoint, snapshot
and JSON file loads at every kill; no temp file is left.

Each training is a new process running the CLI's ``main()``: forked, to keep the test fast,
from a process that has imported torch once (importing it takes seconds; the kills would
spend most of the test in imports). A process can be told to pause a moment inside each
atomic write (after the temp file is written, before it is renamed), which makes the kills
aimed at writes land there.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.runfolder import RunFolder

SRC = str(Path(__file__).resolve().parents[1] / "src")
KILLS = 24
ITERATIONS = 40

#: Reads one job (JSON) a line; forks a child that runs the CLI on it and says
#: "pid N", then "exit RC" once the child has ended (RC < 0: killed by that signal).
FORKER = r"""
import json, os, stat, sys, time
import torch._dynamo  # what the optimiser's construction imports: slow, done once here
import napari_semimoe.cli as cli
import napari_semimoe.core.data, napari_semimoe.core.train

print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        if job["pause"]:
            fsync = os.fsync

            def paused_fsync(fd):  # a temp file written, not yet renamed: a kill now leaves it
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    time.sleep(job["pause"])
                fsync(fd)

            os.fsync = paused_fsync
        try:
            rc = cli.main(job["argv"])
        except BaseException:
            import traceback
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    print(f"pid {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
"""


class Forker:
    def __init__(self) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", FORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=SRC),
            text=True,
        )
        assert self.p.stdout.readline().strip() == "ready"

    def start(self, argv: list[str], log: Path, pause: float = 0.0) -> Child:
        self.p.stdin.write(json.dumps({"argv": argv, "log": str(log), "pause": pause}) + "\n")
        self.p.stdin.flush()
        word, pid = self.p.stdout.readline().split()
        assert word == "pid"
        return Child(self, int(pid), log)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(30)


class Child:
    def __init__(self, forker: Forker, pid: int, log: Path) -> None:
        self.forker, self.pid, self.log = forker, pid, log
        self.rc: int | None = None

    def running(self) -> bool:
        """Whether the child still runs (reads its end from the forker without blocking)."""
        if self.rc is None:
            with contextlib.suppress(ChildProcessError, OSError):
                os.kill(self.pid, 0)
                # A zombie still answers kill(0): ask the process table.
                state = Path(f"/proc/{self.pid}/stat").read_text().split()[2]
                if state != "Z":
                    return True
            self._reap()
        return False

    def _reap(self) -> None:
        if self.rc is None:
            word, rc = self.forker.p.stdout.readline().split()
            assert word == "exit"
            self.rc = int(rc)

    def finish(self) -> None:
        self._reap()
        assert self.rc == 0, self.log.read_text()[-3000:]

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self._reap()
        assert self.rc == -signal.SIGKILL, self.log.read_text()[-3000:]


def temps(run: Path) -> list[Path]:
    found = []
    for folder in (run, run / "snapshots"):
        with contextlib.suppress(FileNotFoundError):
            found += [folder / e.name for e in os.scandir(folder) if e.name.endswith(".tmp")]
    return found


def last_logged(run: Path) -> int:
    """The last iteration in log.jsonl (0 if none yet)."""
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["iteration"]) if lines else 0
    except (FileNotFoundError, ValueError, KeyError):
        return 0  # being replaced, or its last line being written


def records(path: Path) -> list[dict]:
    text = path.read_text()
    return (
        json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines()]
    )


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def check_nothing_corrupt(run: Path) -> None:
    """Every file the run holds loads (the atomic writes' promise, checked after a kill)."""
    if (run / "checkpoint.safetensors").exists():
        read_checkpoint(run)
    for snap in (run / "snapshots").glob("*.safetensors"):
        read_checkpoint(snap)
    for name in ("config.json", "split.json", "history.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_kill_9_at_random_moments_then_resume_trains_the_same_weights(tiny_dataset, tmp_path):
    rng = random.Random(14)
    # Per invocation (--resume takes them too); frequent writes, to be killed in.
    common = ["--threads", "1", "--device", "cpu", "--checkpoint-every", "2"]
    common += ["--snapshot-every", "3"]
    fresh = ["train", "--data", str(tiny_dataset), "--labeled", "2", "--iterations"]
    fresh += [str(ITERATIONS), "--width", "4", "--input-size", "32", *common]
    ref, run = tmp_path / "ref", tmp_path / "run"
    forker = Forker()
    logs = iter(tmp_path / f"child{i}.log" for i in range(1000))
    # The uninterrupted run, with the same seed and settings.
    forker.start([*fresh, "--out", str(ref)], next(logs)).finish()

    kills: list[dict] = []
    t0 = time.monotonic()
    while len(kills) < KILLS:
        rf = RunFolder(run)
        if rf.has_checkpoint():
            argv = ["train", "--resume", str(run), *common]
        else:  # killed before its first checkpoint: start it again
            argv = [*fresh, "--out", str(run)]
        before = {p.name for p in temps(run)}  # a killed child's, until the next one locks
        child = forker.start(argv, next(logs), pause=0.08)
        aim = ("random", "checkpoint", "snapshot")[len(kills) % 3]
        target = {"checkpoint": ".checkpoint.safetensors.", "snapshot": ".iter_"}.get(aim)
        nth, seen = rng.randint(1, 2), set()
        # Random kills: in the start-up, or some iterations into the training (counted, so
        # that a faster machine does not train further between kills), at a random moment.
        start = rf.checkpoint_iteration() or 0
        steps = rng.choice([None, 1, 2, 3])
        wait = rng.uniform(0.0, 0.4) if target is None and steps is None else 60
        deadline = time.monotonic() + wait
        while child.running() and time.monotonic() < deadline:
            if target is not None:
                seen |= {p.name for p in temps(run) if p.name.startswith(target)} - before
                if len(seen) >= nth:
                    break
            elif steps is not None and last_logged(run) >= start + steps:
                time.sleep(rng.uniform(0.0, 0.05))
                break
            time.sleep(0.002)
        if not child.running():  # it finished before the kill: no more kills to make
            child.finish()
            break
        child.kill()
        left = [p.name for p in temps(run) if p.name not in before]
        check_nothing_corrupt(run)
        kills.append({"aim": aim, "left": left, "checkpoint": rf.checkpoint_iteration()})
    else:
        forker.start(["train", "--resume", str(run), *common], next(logs)).finish()
    forker.close()
    elapsed = time.monotonic() - t0

    during = [k for k in kills if k["left"]]
    in_ckpt = [k for k in kills if any(".checkpoint.safetensors." in s for s in k["left"])]
    in_snap = [k for k in kills if any(s.startswith(".iter_") for s in k["left"])]
    print(
        f"\nfault test: {len(kills)} kills in {elapsed:.0f} s; {len(during)} during a write "
        f"({len(in_ckpt)} of the checkpoint, {len(in_snap)} of a snapshot), "
        f"{sum(1 for k in kills if k['checkpoint'] is None)} before the first checkpoint; "
        f"checkpoints at the kills: {[k['checkpoint'] for k in kills]}"
    )
    assert len(kills) >= 20, "the run finished before enough kills were made"
    assert len(in_ckpt) >= 3 and len(in_snap) >= 3

    # The interrupted run is the uninterrupted one, bit for bit ...
    final, expected = model_tensors(run), model_tensors(ref)
    assert final.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(final[k], v), k
    # ... and so is each snapshot, those rewritten after a kill included.
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == sorted(p.name for p in (ref / "snapshots").iterdir())
    assert len(snaps) == ITERATIONS // 3
    for s in snaps:
        a, b = model_tensors(run / "snapshots" / s), model_tensors(ref / "snapshots" / s)
        assert all(torch.equal(a[k], b[k]) for k in b), s
    # The records hold every iteration once, with the uninterrupted run's losses.
    for name in ("history.json", "log.jsonl"):
        recs, ref_recs = records(run / name), records(ref / name)
        assert [r["iteration"] for r in recs] == list(range(1, ITERATIONS + 1)), name
        assert [r["losses"] for r in recs] == [r["losses"] for r in ref_recs], name
    check_nothing_corrupt(run)
    assert temps(run) == []
    assert not (run / ".lock").exists()
