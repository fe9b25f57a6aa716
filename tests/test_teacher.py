"""Issue 20's pseudo-label levers: the mean teacher and confidence masking (both off by
default: the paper's method), on hand-computed cases and in the trainer."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_semimoe.core.checkpoint import read_checkpoint
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.losses import pseudo_labels
from napari_semimoe.core.teacher import ema_update, make_teacher, saved_teacher, teacher_decay
from napari_semimoe.core.train import Trainer
from test_train import config, weights


def _logits(p: float) -> torch.Tensor:
    """Two-class logits whose softmax puts probability p on class 1."""
    return torch.tensor([0.0, math.log(p / (1 - p))])


def test_confidence_masks_unsure_pixels_per_task():
    # 1 x 1 x 3 pixels: seg probabilities of class 1: 0.95 (sure gland), 0.6 (unsure
    # gland), 0.02 (sure background); boundary sure except at the last pixel (0.55).
    seg = torch.stack([_logits(0.95), _logits(0.6), _logits(0.02)], dim=-1)[None, :, None, :]
    bnd = torch.stack([_logits(0.01), _logits(0.01), _logits(0.55)], dim=-1)[None, :, None, :]
    sdf = torch.tensor([0.5, 0.1, -0.7]).reshape(1, 1, 1, 3)
    gated = {"seg": seg, "sdf": sdf, "bnd": bnd}

    plain = pseudo_labels(gated)
    assert plain["seg"].tolist() == [[[1, 1, 0]]]
    assert plain["bnd"].tolist() == [[[0, 0, 1]]]
    assert torch.equal(plain["sdf"], torch.tanh(sdf))
    assert torch.equal(pseudo_labels(gated, 0.0)["seg"], plain["seg"])  # 0 = off

    pl = pseudo_labels(gated, 0.9)
    assert pl["seg"].tolist() == [[[1, -1, 0]]]  # -1: unknown, left out of the losses
    assert pl["bnd"].tolist() == [[[0, 0, -1]]]
    s = pl["sdf"][0, 0, 0]
    assert (
        s[0] == torch.tanh(sdf[0, 0, 0, 0])
        and math.isnan(s[1])
        and s[2] == torch.tanh(sdf[0, 0, 0, 2])
    )


def test_pseudo_labels_carry_no_gradient():
    sdf = torch.zeros(1, 1, 2, 2, requires_grad=True)
    gated = {"seg": torch.zeros(1, 2, 2, 2), "sdf": sdf, "bnd": torch.zeros(1, 2, 2, 2)}
    assert not pseudo_labels(gated)["sdf"].requires_grad


def test_ema_update_and_decay_by_hand():
    student, teacher_src = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher_src.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(7.0)
    teacher = make_teacher(teacher_src)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    ema_update(teacher, student, 0.75)
    assert teacher.weight.tolist() == [1.5, 1.5]  # 0.75 * 1 + 0.25 * 3
    assert teacher.running_mean.tolist() == [7.0, 7.0]  # buffers copied
    assert teacher_decay(0.99, 1) == pytest.approx(2 / 11)
    assert teacher_decay(0.99, 10_000) == 0.99


def test_trainer_teacher_follows_the_student_and_resumes_exactly(small_set, tmp_path):
    cfg = dict(ema_teacher=0.9, pseudo_confidence=0.6)
    tr = Trainer(config(iterations=1, **cfg), small_set, tmp_path / "one")
    before = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
    assert all(torch.equal(v, weights(tr)[k]) for k, v in before.items())  # starts equal
    tr.run()
    d = teacher_decay(0.9, 1)
    for k, v in tr.teacher.named_parameters():
        s = dict(tr.model.named_parameters())[k]
        torch.testing.assert_close(v, d * before[k] + (1 - d) * s.detach())

    # Saved with the checkpoint; a resumed run continues it bit for bit.
    full = Trainer(config(**cfg), small_set, tmp_path / "full")
    full.run()
    stop = threading.Event()
    part = Trainer(config(**cfg), small_set, tmp_path / "part")
    part.run(on_event=lambda ev: ev.iteration == 3 and stop.set(), stop=stop)
    assert part.iteration == 3
    resumed = Trainer(config(**cfg), small_set, tmp_path / "part", resume=True)
    resumed.run()
    tensors, _ = read_checkpoint(tmp_path / "part")
    saved = saved_teacher(tensors)
    assert saved and set(saved) == set(full.teacher.state_dict())
    for k, v in full.teacher.state_dict().items():
        torch.testing.assert_close(resumed.teacher.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(resumed)[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "path", [{}, {"batch_norm": "per-half"}, {"fast": False}], ids=["pooled", "per-half", "ref"]
)
def test_the_levers_change_the_training_and_the_default_is_the_paper(small_set, tmp_path, path):
    plain = Trainer(config(iterations=4, **path), small_set, tmp_path / "plain")
    assert plain.teacher is None
    plain.run()
    for i, cfg in enumerate([dict(ema_teacher=0.9), dict(pseudo_confidence=0.9)]):
        other = Trainer(config(iterations=4, **path, **cfg), small_set, tmp_path / f"lever{i}")
        other.run()
        assert any(not torch.equal(v, weights(other)[k]) for k, v in weights(plain).items())
    sup = Trainer(config(iterations=2, ema_teacher=0.9, supervised_only=True), small_set,
                  tmp_path / "sup")  # fmt: skip
    assert sup.teacher is None  # nothing to label: no teacher


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(ema_teacher=1.0), r"in \[0, 1\)"),
        (dict(pseudo_confidence=-0.1), r"in \[0, 1\)"),
        (dict(family="dca", ema_teacher=0.99), "family dca has its own"),
        (dict(ema_teacher=0.99, attribute_routing=True), "attribute-routing"),
    ],
)
def test_bad_lever_settings_are_one_line_errors(cfg, match):
    with pytest.raises(InputError, match=match):
        config(**cfg).validate()


def test_cli_records_the_levers_and_a_resume_keeps_them(tiny_dataset, tmp_path, capsys):
    from test_cli import _train, run

    rundir = tmp_path / "run"
    code, _, err = _train(
        capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "2",
        "--ema-teacher", "0.99", "--pseudo-confidence", "0.8",
    )  # fmt: skip
    assert code == 0, err
    cfg = read_checkpoint(rundir)[1]["meta"]["config"]
    assert cfg["ema_teacher"] == 0.99 and cfg["pseudo_confidence"] == 0.8
    assert saved_teacher(read_checkpoint(rundir)[0])
    code, _, err = run(capsys, "train", "--resume", str(rundir), "--iterations", "3",
                       "--ema-teacher", "0.9")  # fmt: skip
    assert code == 2 and "--ema-teacher" in err and "resumed run keeps" in err
    code, _, err = run(capsys, "train", "--data", str(tiny_dataset), "--out", str(tmp_path / "b"),
                       "--pseudo-confidence", "1.5")  # fmt: skip
    assert code == 2 and "--pseudo-confidence" in err and len(err.strip().splitlines()) == 1


def test_pseudo_label_view_shows_the_teacher_and_the_left_out_pixels(small_set, tmp_path):
    from napari_semimoe.core.active import pseudo_label_tiles
    from napari_semimoe.core.inference import PredictOptions, Predictor, load_model

    run = tmp_path / "r"
    tr = Trainer(config(iterations=3, ema_teacher=0.5, pseudo_confidence=0.97), small_set, run)
    tr.run()
    student, labeller = load_model(run, "cpu"), load_model(run, "cpu", weights="labeller")
    for k, v in tr.teacher.state_dict().items():
        assert torch.equal(labeller.model.state_dict()[k], v), k
    assert any(not torch.equal(v, labeller.model.state_dict()[k])
               for k, v in student.model.state_dict().items())  # fmt: skip
    tiles = [im[:32, :32] for im in small_set.unlabeled_images]
    pred = Predictor(labeller, PredictOptions(precision="fp32"))
    pls = pseudo_label_tiles(pred, tiles, [str(i) for i in range(len(tiles))])
    maps, _ = pred.predict_batch(np.stack(tiles))
    for j, pl in enumerate(pls):
        p = maps["prob"][j]
        assert np.array_equal(pl.unsure, (np.maximum(p, 1 - p) < 0.97).astype(np.uint8))
        assert pl.components["left_out"] == pytest.approx(pl.unsure.mean())
    plain = Trainer(config(iterations=1), small_set, tmp_path / "plain")
    plain.run()
    no_teacher = load_model(tmp_path / "plain", "cpu", weights="labeller")  # = the network
    pl = pseudo_label_tiles(Predictor(no_teacher), tiles[:1], ["a"])[0]
    assert pl.unsure is None and "left_out" not in pl.components
