"""Pseudo-label QA and the unlabeled pool, without Qt: confidence on constructed cases,
rejected tiles leave the pool (and only they do), the trainer never samples them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_semimoe.core.active import pseudo_label_tiles
from napari_semimoe.core.data import Geometry
from napari_semimoe.core.inference import LoadedModel, PredictOptions, Predictor
from napari_semimoe.core.model import SemiMoE
from napari_semimoe.core.project import Project
from napari_semimoe.core.slide import Slide
from napari_semimoe.core.trainset import TRAINSET_FILE, load_trainset, parse_pool_name
from napari_semimoe.plugin.sample import sample_annotations, synthetic_he


@pytest.fixture
def predictor() -> Predictor:
    torch.manual_seed(0)
    m = LoadedModel(
        SemiMoE(4).eval(),
        Geometry(scale=1.0, tile=64),
        [0.7, 0.5, 0.7],
        [0.2, 0.2, 0.2],
        {},
        torch.device("cpu"),
    )
    return Predictor(m, PredictOptions(precision="fp32", threads=1))


def test_pseudo_labels_are_the_trainers_targets(predictor):
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    pls = pseudo_label_tiles(predictor, tiles, ["a", "b", "c"], batch=2)
    maps, _ = predictor.predict_batch(np.stack(tiles))
    assert [p.name for p in pls] == ["a", "b", "c"]
    for j, p in enumerate(pls):
        assert p.seg.dtype == np.uint8 and p.seg.shape == (64, 64)
        np.testing.assert_array_equal(p.seg, maps["prob"][j] >= 0.5)  # argmax of 2 classes
        np.testing.assert_array_equal(p.boundary, maps["boundary"][j] >= 0.5)
        assert p.sdf.min() >= -1 and p.sdf.max() <= 1
        assert 0 <= p.confidence <= 1


def test_confident_tile_ranks_above_ambiguous_one(predictor, monkeypatch):
    def fake(tiles):
        n, h, w = tiles.shape[:3]
        prob = np.empty((n, h, w), np.float32)
        prob[0] = np.where(np.arange(w) < w // 2, 0.99, 0.01)  # crisp
        prob[1] = 0.55  # the model cannot decide
        maps = {"prob": prob, "sdf": np.zeros_like(prob), "boundary": np.zeros_like(prob)}
        return maps, np.full((n, 3, 3), 1 / 3, np.float32)

    monkeypatch.setattr(predictor, "predict_batch", fake)
    crisp, unsure = pseudo_label_tiles(predictor, [np.zeros((32, 32, 3), np.uint8)] * 2, "ab")
    assert crisp.confidence > 0.9 > 0.1 > unsure.confidence
    assert crisp.components["gland_fraction"] == pytest.approx(0.5)


def test_cancel_returns_none(predictor):
    tiles = [np.zeros((32, 32, 3), np.uint8)] * 4
    assert pseudo_label_tiles(predictor, tiles, list("abcd"), cancel=lambda: True) is None


@pytest.fixture
def project(tmp_path: Path):
    image, glands = synthetic_he(768, seed=3)
    slide = Slide(Path("s"), [image], [1.0], None)
    proj = Project(tmp_path / "p")
    proj.state.scale, proj.state.tile = 2.0, 64
    e = proj.entry("s")
    proj.add_tile(e, 0, 0, 128, "train")
    ann = sample_annotations(glands)
    ann[128:] = 0
    ann[:, 128:] = 0
    ann[:64, :64] = 1  # at least one gland inside the tile
    return proj, e, slide, ann


def pool_boxes(ts, s=2.0, T=64):
    out = {}
    for n in ts.unlabeled_names:
        _, y, x = parse_pool_name(n)
        out[n] = (round(y * s), round(x * s), round(T * s))
    return out


def test_rejecting_a_tile_removes_it_and_keeps_the_rest_of_the_pool(project):
    proj, e, slide, ann = project
    ts = proj.build_training_set(lambda _: slide, lambda _: ann, max_unlabeled=12)
    assert len(ts.unlabeled_images) == 12
    before = pool_boxes(ts)
    victim = ts.unlabeled_names[5]
    y, x, side = before[victim]
    proj.add_tile(e, y, x, side, "rejected")
    ts2 = proj.build_training_set(lambda _: slide, lambda _: ann, max_unlabeled=12)
    after = pool_boxes(ts2)
    assert victim not in after
    assert len(after) == 12  # one new tile swapped in...
    assert len(set(before) & set(after)) >= 10  # ...the rest stays (no reshuffle)
    for yy, xx, ss in after.values():  # no pool tile covers most of the rejected one...
        oy = max(0, min(y + side, yy + ss) - max(y, yy))
        ox = max(0, min(x + side, xx + ss) - max(x, xx))
        assert oy * ox <= 0.5 * side * side
    # ...but its half-overlapping neighbours stay: one rejection drops one tile
    assert set(before) - set(after) == {victim}
    # saved for the training process, and the rejection survives reopening the project
    assert load_trainset(proj.root / TRAINSET_FILE).unlabeled_names == ts2.unlabeled_names
    assert [t.kind for t in Project(proj.root).state.images[0].tiles] == ["train", "rejected"]


def test_trainer_never_samples_a_rejected_tile(project, tmp_path, monkeypatch):
    from napari_semimoe.core import train as train_mod
    from napari_semimoe.core.train import TrainConfig, Trainer

    proj, e, slide, ann = project
    ts = proj.build_training_set(lambda _: slide, lambda _: ann, max_unlabeled=6)
    victim = ts.unlabeled_names[0]
    y, x, side = pool_boxes(ts)[victim]
    rejected_pixels = ts.unlabeled_images[0]
    proj.add_tile(e, y, x, side, "rejected")
    ts2 = proj.build_training_set(lambda _: slide, lambda _: ann, max_unlabeled=6)

    drawn: list[np.ndarray] = []
    real = train_mod.make_batch

    def spy(rng, images, masks, idx, *a, **kw):
        if masks is None:
            drawn.extend(images[i] for i in idx)
        return real(rng, images, masks, idx, *a, **kw)

    monkeypatch.setattr(train_mod, "make_batch", spy)
    cfg = TrainConfig(
        width=4,
        iterations=8,
        threads=1,
        precision="fp32",
        compile="off",
        unlabeled_batch=3,
        geometry=Geometry(scale=2.0, tile=64).to_dict(),
        checkpoint_every=100,
    )

    def hook(trainer, it):
        if it == 2:  # as the training process does when trainset.npz changes
            drawn.clear()
            trainer.replace_data(ts2)

    Trainer(cfg, ts, tmp_path / "run").run(hook=hook)
    assert len(drawn) == 6 * 3  # iterations 3..8 drew from the new pool only
    assert not any(np.array_equal(d, rejected_pixels) for d in drawn)
