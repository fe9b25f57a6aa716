"""Trainer: reproducibility, checkpoints (atomic, code-free), resume, pause/stop, events."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.errors import CheckpointError, InputError
from napari_semimoe.core.train import TrainConfig, Trainer, TrainingError


def config(**kw) -> TrainConfig:
    base = dict(
        width=4,
        iterations=6,
        geometry=Geometry(input_size=32).to_dict(),
        compile="off",
        checkpoint_every=3,
        precision="fp32",
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(tr: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tr.model.state_dict().items()}


# CPU runs repeat bit for bit as they are; a GPU run needs deterministic kernels (checked
# where a GPU is present: CI has none).
DEVICES = [pytest.param({"device": "cpu"}, id="cpu")]
if torch.cuda.is_available():
    DEVICES.append(pytest.param({"device": "cuda", "deterministic": True}, id="cuda"))


@pytest.mark.parametrize("dev", DEVICES)
def test_same_seed_same_run(small_set, tmp_path, dev):
    # Both built before either runs: each run keeps its own RNG (gate dropout), on a GPU too.
    a = Trainer(config(**dev), small_set, tmp_path / "a")
    b = Trainer(config(**dev), small_set, tmp_path / "b")
    a.run()
    b.run()
    for k, v in weights(a).items():
        assert torch.equal(v, weights(b)[k]), k
    c = Trainer(config(seed=1, **dev), small_set, tmp_path / "c")
    c.run()
    assert any(not torch.equal(v, weights(c)[k]) for k, v in weights(a).items())


@pytest.mark.parametrize("dev", DEVICES)
def test_resume_continues_the_same_run(small_set, tmp_path, dev):
    full = Trainer(config(**dev), small_set, tmp_path / "full")
    full.run()
    stop = threading.Event()
    part = Trainer(config(**dev), small_set, tmp_path / "part")

    def stop_after_3(ev):
        if ev.kind == "iteration" and ev.iteration == 3:
            stop.set()

    assert part.run(on_event=stop_after_3, stop=stop) == "stopped"
    assert part.iteration == 3
    resumed = Trainer(config(**dev), small_set, tmp_path / "part", resume=True)
    assert resumed.iteration == 3
    assert resumed.run() == "done"
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(resumed)[k], v, rtol=1e-5, atol=1e-6)
    hist = json.loads((tmp_path / "part" / "history.json").read_text())
    assert [h["iteration"] for h in hist] == list(range(1, 7))


def test_checkpoint_has_no_pickle_and_reloads(small_set, tmp_path):
    tr = Trainer(config(iterations=3), small_set, tmp_path / "r")
    tr.run()
    path = tmp_path / "r" / "checkpoint.safetensors"
    raw = path.read_bytes()
    assert b"\x80\x04" not in raw[:64] and raw[8:9] == b"{"  # safetensors header, not pickle
    tensors, doc = read_checkpoint(tmp_path / "r")
    meta = doc["meta"]
    assert meta["state"]["iteration"] == 3
    assert meta["config"]["width"] == 4 and len(meta["mean"]) == 3
    assert any(k.startswith("optim.sgd.") for k in tensors)
    assert not list((tmp_path / "r").glob(".*.tmp"))  # no temp file left behind


def test_crash_while_saving_keeps_last_good_checkpoint(small_set, tmp_path, monkeypatch):
    tr = Trainer(config(iterations=3, checkpoint_every=3), small_set, tmp_path / "r")
    tr.run()
    before = (tmp_path / "r" / "checkpoint.safetensors").read_bytes()

    import napari_semimoe.core.checkpoint as ck

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    tr2 = Trainer(config(iterations=6, checkpoint_every=3), small_set, tmp_path / "r", resume=True)
    with pytest.raises(TrainingError, match="disk full.*last good checkpoint.*iteration 3"):
        tr2.run()
    assert (tmp_path / "r" / "checkpoint.safetensors").read_bytes() == before
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, small_set):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable"):
        Trainer(config(), small_set, tmp_path / "r", resume=True)
    with pytest.raises(CheckpointError, match="no such run folder"):
        Trainer(config(), small_set, tmp_path / "nothing", resume=True)


def test_pause_saves_and_resumes(small_set, tmp_path):
    pause, stop = threading.Event(), threading.Event()
    kinds = []

    def on_event(ev):
        kinds.append(ev.kind)
        if ev.kind == "iteration" and ev.iteration == 2:
            pause.set()
            threading.Timer(0.3, pause.clear).start()

    tr = Trainer(config(iterations=4), small_set, tmp_path / "r")
    assert tr.run(on_event=on_event, pause=pause, stop=stop) == "done"
    assert kinds.index("paused") < kinds.index("resumed")
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("iteration") == 4


def test_events_carry_losses_eta_and_schedule(small_set, tmp_path):
    events = []
    Trainer(config(iterations=4, warmup=2), small_set, tmp_path / "r").run(on_event=events.append)
    its = [e for e in events if e.kind == "iteration"]
    assert [e.iteration for e in its] == [1, 2, 3, 4]
    for key in ("sup_seg", "sup_sdf", "sup_bnd", "unsup_seg", "unsup_sdf", "unsup_bnd", "total"):
        assert np.isfinite(its[-1].losses[key]), key
    assert its[0].lr == pytest.approx(0.25) and its[1].lr == pytest.approx(0.5)
    assert its[-1].lam == pytest.approx(0.5)
    assert its[-1].eta == pytest.approx(0.0) and its[0].eta > 0
    assert len(its[-1].s) == 3
    d = its[-1].to_dict()
    assert json.loads(json.dumps(d))["iteration"] == 4


def test_supervised_only_ignores_unlabeled(small_set, tmp_path):
    events = []
    tr = Trainer(config(iterations=2, supervised_only=True), small_set, tmp_path / "r")
    tr.run(on_event=events.append)
    last = [e for e in events if e.kind == "iteration"][-1]
    assert "unsup_seg" not in last.losses and last.lam == 0.0


def test_fast_and_reference_paths_agree_in_fp32(small_set, tmp_path):
    """Batched one-pass training (the fast path) computes the same loss as upstream's order."""
    a = Trainer(config(iterations=1, fast=True), small_set, tmp_path / "a")
    b = Trainer(config(iterations=1, fast=False), small_set, tmp_path / "b")
    a.model.eval(), b.model.eval()  # eval BN so both see identical normalisation
    b.model.load_state_dict(a.model.state_dict())
    xl, y, xu = a._batches()
    a.model.train(False), b.model.train(False)
    ta, sa, ua = a._fast_pass(xl, y, xu, 0.3)
    tb, sb, ub = b._reference_pass(xl, y, xu, 0.3)
    assert float(ta) == pytest.approx(float(tb), rel=1e-4)
    ga = a.model.experts["seg"].head.weight.grad
    gb = b.model.experts["seg"].head.weight.grad
    torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-5)


def test_divergence_stops_with_clear_message(small_set, tmp_path):
    """The message says what is true: no checkpoint yet, or which one was kept."""
    tr = Trainer(config(iterations=3, lr=1e30), small_set, tmp_path / "r")
    with pytest.raises(TrainingError, match="no checkpoint had been saved yet") as e:
        tr.run()
    assert "last good checkpoint" not in str(e.value)

    def diverge_after_2(trainer, it):
        if it == 2:
            trainer.config.lr = 1e30

    tr = Trainer(config(iterations=6, checkpoint_every=1), small_set, tmp_path / "r2")
    kept = r"last good checkpoint, .*\(iteration [2-5]\), was kept"
    with pytest.raises(TrainingError, match=kept):
        tr.run(hook=diverge_after_2)
    assert read_checkpoint(tmp_path / "r2")[1]["meta"]["state"]["iteration"] == tr.saved_iteration


def test_bad_settings_and_data():
    with pytest.raises(InputError):
        config(width=5).validate()
    with pytest.raises(InputError):
        config(iterations=0).validate()
    with pytest.raises(InputError, match="annotate at least one"):
        TrainingSet([], [], [])
    im = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InputError, match="mask of"):
        TrainingSet([im], [np.zeros((9, 10), np.uint8)])


def test_replace_data_between_iterations(small_set, tmp_path):
    """The plugin swaps the tile pools while training runs (tiles added / rejected)."""
    seen = []

    def hook(trainer, it):
        if it == 2:
            trainer.replace_data(
                TrainingSet(small_set.labeled_images[:1], small_set.labeled_masks[:1], [])
            )
        seen.append((len(trainer.data.labeled_images), len(trainer.data.unlabeled_images)))

    events = []
    Trainer(config(iterations=4), small_set, tmp_path / "r").run(on_event=events.append, hook=hook)
    assert seen == [(3, 3), (3, 3), (1, 0), (1, 0)]
    last = [e for e in events if e.kind == "iteration"][-1]
    assert "unsup_seg" not in last.losses  # no unlabeled tile left


def test_batches_drawn_ahead_do_not_change_the_run(small_set, tmp_path):
    """The next batch is built in a thread during each iteration; a pool change in between
    discards it and rewinds the draws, so the run is the one a plain loop would train."""

    def hook(trainer, it):
        if it == 2:
            trainer.replace_data(
                TrainingSet(small_set.labeled_images[:2], small_set.labeled_masks[:2], [])
            )

    runs = {}
    for prefetch in (True, False):
        tr = Trainer(config(), small_set, tmp_path / str(prefetch))
        tr.prefetch = prefetch
        tr.run(hook=hook)
        runs[prefetch] = tr
    assert runs[True]._loader is not None and runs[False]._loader is None
    for k, v in weights(runs[False]).items():
        assert torch.equal(weights(runs[True])[k], v), k


def test_halves_side_by_side_match_one_after_the_other(small_set, tmp_path):
    """Per-half batch norm: on >= 2 threads the halves run on two threads, each with its
    own batch-norm buffers; weights, BN running statistics and losses must match running
    them in sequence (upstream's order), and repeat exactly with the same seed."""
    runs = {}
    for name, parallel in (("seq", False), ("par", True), ("par2", True)):
        tr = Trainer(
            config(iterations=4, threads=2, batch_norm="per-half", device="cpu"),
            small_set,
            tmp_path / name,
        )
        tr.parallel_halves = parallel
        events = []
        tr.run(on_event=events.append)
        assert tr.halves_side_by_side == parallel
        runs[name] = (weights(tr), [e.losses for e in events if e.kind == "iteration"])
    seq, par, par2 = (runs[k][0] for k in ("seq", "par", "par2"))
    assert any("running_mean" in k for k in seq)
    for k, v in seq.items():
        if v.is_floating_point():
            torch.testing.assert_close(par[k], v, rtol=1e-4, atol=1e-5, msg=k)
        else:  # num_batches_tracked: two updates per iteration, as upstream's two passes
            assert torch.equal(par[k], v) and int(v) == 8, k
        assert torch.equal(par[k], par2[k]), k
    for la, lb in zip(runs["seq"][1], runs["par"][1]):
        for k in la:
            assert lb[k] == pytest.approx(la[k], rel=1e-4, abs=1e-6), k
