"""Model families: the registry, checkpoints naming their family (old ones load as
Semi-MoE), and a toy family that trains, checkpoints, predicts and opens in the reader
without any edit of the trainer, the predictor or the reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from napari_semimoe.core.bench import synthetic_tiles
from napari_semimoe.core.checkpoint import read_checkpoint, save_checkpoint
from napari_semimoe.core.cohort import predict_slide
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.errors import CheckpointError, InputError
from napari_semimoe.core.families import (
    Family,
    MapStyle,
    Task,
    families,
    get_family,
    register_family,
    softmax_foreground,
    unregister_family,
)
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.losses import seg_dice_loss
from napari_semimoe.core.slide import open_slide
from napari_semimoe.core.tiff_writer import write_pyramid
from napari_semimoe.core.train import TrainConfig, Trainer

# ----------------------------------------------------------------- the toy family (whole)


class TwoConv(nn.Module):
    """3x3 conv -> ReLU -> 1x1 conv to 2-class logits."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class ToyFamily(Family):
    name = "toy"
    width_tensor = "model.conv1.weight"
    mask_from = "toyprob"
    tasks = (
        Task(
            "fg",
            2,
            lambda mask, config: (np.asarray(mask) > 0).astype(np.uint8),
            seg_dice_loss,
            softmax_foreground,
            "toyprob",
            style=MapStyle("plasma", (0.0, 1.0), "translucent"),
        ),
    )

    def build(self, config) -> nn.Module:
        return TwoConv(config.width)


# ----------------------------------------------------------------- tests


@pytest.fixture
def toy():
    family = register_family(ToyFamily())
    yield family
    unregister_family("toy")


def test_toy_family_trains_checkpoints_predicts_and_opens(toy, tmp_path):
    images, masks = synthetic_tiles(4, size=48, seed=1)
    cfg = TrainConfig(
        family="toy",
        width=4,
        iterations=3,
        threads=1,
        precision="fp32",
        geometry=Geometry(input_size=32).to_dict(),
    )
    trainer = Trainer(cfg, TrainingSet(images[:2], masks[:2], images[2:]), tmp_path / "run")
    assert trainer.run() == "done"
    assert [r["iteration"] for r in trainer.history] == [1, 2, 3]
    assert set(trainer.history[-1]["losses"]) >= {"sup_fg", "total"}
    _, doc = read_checkpoint(tmp_path / "run")
    assert doc["meta"]["family"] == "toy"
    assert "width" not in doc["meta"] and doc["meta"]["config"]["width"] == 4  # stored once

    loaded = load_model(tmp_path / "run", device="cpu")
    assert loaded.family is toy and isinstance(loaded.model, TwoConv)
    p = Predictor(loaded, PredictOptions(precision="fp32", overlap=8))
    out = p.predict_image(images[0])
    assert out["toyprob"].shape == (48, 48) and 0 <= out["toyprob"].min() <= 1
    assert out["mask"].dtype == np.uint8 and out["instances"].shape == (48, 48)
    assert out["gates"].shape == (len(out["tiles"]), 0)  # this model has no gates

    write_pyramid(tmp_path / "s.tif", np.tile(images[0], (2, 2, 1)), levels=1, tile=16)
    with open_slide(tmp_path / "s.tif") as slide:
        written = predict_slide(p, slide, tmp_path / "out", "s")
    assert set(written) == {"mask", "toyprob", "instances", "gates"}

    from napari_semimoe.plugin.reader import prediction_key, read_slides

    assert prediction_key(written["toyprob"]) == "toyprob"
    ((data, meta, kind),) = read_slides(str(written["toyprob"]))
    assert kind == "image" and meta["colormap"] == "plasma" and meta["blending"] == "translucent"
    ((_, _, kind),) = read_slides(str(written["mask"]))
    assert kind == "labels"


def test_registry_refuses_duplicates_and_names_unknown_families(toy):
    assert families()[0] == "semimoe" and "toy" in families()
    with pytest.raises(ValueError, match="registered already"):
        register_family(ToyFamily())
    with pytest.raises(InputError, match="unknown model family 'nope'; known: semimoe, .*toy"):
        get_family("nope")


def _semimoe_checkpoint(path, width=4, **meta_changes):
    from napari_semimoe.core.model import SemiMoE

    meta = {
        "config": {"width": width},
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
        "geometry": {"scale": 1.0, "input_size": 32, "tile": 256},
        "width": width,
    }
    meta.update(meta_changes)
    save_checkpoint(path, SemiMoE(width), meta)
    return path


def test_old_checkpoint_without_family_loads_as_semimoe(tmp_path):
    # saved the old way: width twice, no family
    path = _semimoe_checkpoint(tmp_path / "old.safetensors")
    _, doc = read_checkpoint(path)
    assert "family" not in doc["meta"]
    loaded = load_model(path, device="cpu")
    assert loaded.family.name == "semimoe" and loaded.meta["family"] == "semimoe"
    assert loaded.meta["width"] == 4


def test_checkpoint_of_unknown_family_is_one_line(tmp_path):
    path = _semimoe_checkpoint(tmp_path / "x.safetensors", family="dca-future")
    with pytest.raises(CheckpointError, match="unknown model family 'dca-future'; known: ") as e:
        load_model(path, device="cpu")
    assert "\n" not in str(e.value)


def test_semimoe_tasks_are_the_one_vocabulary():
    f = get_family("semimoe")
    assert f.task_names() == ("seg", "sdf", "bnd")  # logits, targets, losses, tensors
    assert f.output_maps() == ("prob", "sdf", "boundary")  # file and layer names, as before
    assert f.output_maps(True) == ("expert_prob", "expert_sdf", "expert_boundary")
    assert f.fills() == {
        "prob": 0.0,
        "sdf": -1.0,
        "boundary": 0.0,
        "expert_prob": 0.0,
        "expert_sdf": -1.0,
        "expert_boundary": 0.0,
    }


def test_summary_family(capsys):
    from napari_semimoe.cli import main

    assert main(["summary", "--family", "semimoe", "--width", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "semimoe" and out["width"] == 4 and out["total"] > 0
    assert main(["summary", "--family", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown model family 'nope'; known: semimoe" in err


class ToyWithPenalty(ToyFamily):
    """The toy family plus an extra loss term (as a load-balancing term would be added)."""

    name = "toy-penalty"

    def loss_terms(self, model, sup, uns, lam, config, extras=None):
        assert set(extras) == {"logits"}  # what the pass saw reaches the family
        terms = super().loss_terms(model, sup, uns, lam, config, extras)
        terms["penalty"] = 100.0 + 0 * model.conv1.weight.sum()
        return terms


def test_a_family_adds_loss_terms_without_a_trainer_edit(tmp_path):
    register_family(ToyWithPenalty())
    try:
        images, masks = synthetic_tiles(2, size=32, seed=2)
        totals = {}
        for name in ("toy-penalty", "semimoe"):
            cfg = TrainConfig(
                family=name,
                width=4,
                iterations=1,
                threads=1,
                precision="fp32",
                supervised_only=True,
                geometry=Geometry(input_size=32).to_dict(),
            )
            tr = Trainer(cfg, TrainingSet(images, masks, []), tmp_path / name)
            tr.run()
            totals[name] = tr.history[-1]["losses"]
        toy = totals["toy-penalty"]
        assert toy["total"] == pytest.approx(toy["sup_fg"] + 100.0, rel=1e-6)
        assert "s_seg" in totals["semimoe"] and "s_fg" not in toy  # no learnt task weights
    finally:
        unregister_family("toy-penalty")


def test_layer_names_come_from_the_tasks(toy):
    assert get_family("semimoe").layer_names() == {  # plain words (issue 19)
        "instances": "Semi-MoE predicted glands",
        "prob": "Semi-MoE gland probability",
        "sdf": "Semi-MoE distance to gland edge",
        "boundary": "Semi-MoE gland edges",
        "gates": "Semi-MoE expert weights",
        "expert_prob": "Expert: segmentation",
        "expert_sdf": "Expert: distance map",
        "expert_boundary": "Expert: boundary",
    }
    assert toy.layer_names()["toyprob"] == "toy toyprob"


def test_train_family_from_the_cli_trains_that_family(toy, tiny_dataset, tmp_path, capsys):
    """`train --family NAME` builds the registered family; its checkpoint names it, predict
    opens it by that name; an unknown family is one line before any image is read."""
    from napari_semimoe.cli import main

    run = tmp_path / "run"
    tiny = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    args = ["train", "--data", str(tiny_dataset), "--iterations", "2", *tiny]
    assert main([*args, "--family", "toy", "--out", str(run)]) == 0
    capsys.readouterr()
    assert load_model(run).meta["family"] == "toy"
    assert main([*args, "--family", "nope", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model family 'nope'" in err[0]
    assert not (tmp_path / "r2").exists()
