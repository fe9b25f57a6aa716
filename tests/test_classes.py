"""Class tables (classes.json), multi-class targets and losses on hand-computed cases, and a
C = 1 table training exactly as a binary project."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from napari_semimoe.core.bench import synthetic_tiles
from napari_semimoe.core.classes import ClassTable, pixel_counts, read_classes, write_classes
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.families import get_family
from napari_semimoe.core.inference import Predictor, load_model
from napari_semimoe.core.losses import dice_ce_loss, seg_dice_loss
from napari_semimoe.core.targets import boundary_band, class_target, signed_distance
from napari_semimoe.core.train import TrainConfig, Trainer

THREE = ClassTable.from_names(["background", "benign", "malignant"])
ONE = ClassTable.from_names(["background", "gland"])


def test_read_classes_absent_is_binary_and_round_trip(tmp_path):
    assert read_classes(tmp_path) is None
    write_classes(tmp_path, THREE)
    table = read_classes(tmp_path)
    assert table == THREE and table.n_foreground == 2 and table.multiclass
    assert table.colours[0] == "#000000" and len(set(table.colours)) == 3


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"classes": [{"id": 0}, {"id": 2}]}, "without gaps"),
        ({"classes": [{"id": 0}, {"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}, "twice"),
        ({"classes": [{"id": 0}, {"id": 1, "colour": "red"}]}, "#rrggbb"),
        ({"classes": [{"id": 0}]}, "at least"),
        ({"classes": [{"id": "0"}, {"id": 1}]}, "integer"),
    ],
)
def test_bad_classes_json_is_one_line(tmp_path, doc, words):
    (tmp_path / "classes.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_classes(tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_mask_values_outside_the_table_are_refused():
    THREE.check_mask(np.array([[0, 1, 2, -1]]), "m")
    with pytest.raises(InputError, match="value 3 is no class id"):
        THREE.check_mask(np.array([[0, 3]]), "mask a.png")


def test_pixel_counts_skip_background_and_unknown():
    masks = [np.array([[0, 1, 1, 2]]), np.array([[-1, 2, 0, 0]])]
    assert pixel_counts(masks, 3).tolist() == [2, 2, 0]


def test_multiclass_targets_by_hand():
    m = np.zeros((5, 8), np.int16)
    m[1:4, 1:4] = 1
    m[1:4, 4:7] = 2  # touching class 1 along column 3|4
    m[0, 0] = -1
    t = class_target(m)
    assert t.dtype == np.int16 and t[0, 0] == -1 and t[2, 2] == 1 and t[2, 5] == 2
    band = boundary_band(m, per_instance=True)
    # Between the two classes: the touching columns of both are boundary (within 2 px).
    assert band[2, 3] == 1 and band[2, 4] == 1 and band[2, 2] == 1
    # The SDF is the union foreground's: no zero line between the classes.
    sdf = signed_distance(np.clip(m, 0, None))
    assert sdf[2, 3] > 0 and sdf[2, 4] > 0


def test_multiclass_dice_and_ce_uniform_by_hand():
    target = torch.tensor([[[0, 1, 2, 2]]])  # N = 4 pixels, n_k = 1, 1, 2
    logits = torch.zeros(1, 3, 1, 4)  # p = 1/3 everywhere
    n, counts = 4, (1, 1, 2)
    want = 1 - np.mean([(2 * c / 3 + 1) / (n / 9 + c + 1) for c in counts])
    assert float(seg_dice_loss(logits, target)) == pytest.approx(want, rel=1e-6)
    assert float(dice_ce_loss(logits, target)) == pytest.approx(want + math.log(3), rel=1e-6)
    # An absent class keeps its channel (smoothed): 3 channels, a target of 0/1 only.
    t01 = torch.tensor([[[0, 1, 1, 0]]])
    want01 = 1 - np.mean([(2 * c / 3 + 1) / (n / 9 + c + 1) for c in (2, 2, 0)])
    assert float(seg_dice_loss(logits, t01)) == pytest.approx(want01, rel=1e-6)
    # Ignored pixels drop out of both terms.
    tig = torch.tensor([[[0, 1, -1, -1]]])
    w2 = 1 - np.mean([(2 * c / 3 + 1) / (2 / 9 + c + 1) for c in (1, 1, 0)])
    assert float(dice_ce_loss(logits, tig)) == pytest.approx(w2 + math.log(3), rel=1e-6)


def _tiny(tmp_path, name, classes, masks, images, iterations=2):
    cfg = TrainConfig(
        width=4,
        iterations=iterations,
        labeled_batch=1,
        unlabeled_batch=1,
        device="cpu",
        threads=1,
        checkpoint_every=iterations,
        geometry=Geometry(input_size=32).to_dict(),
        classes=classes,
    )
    tr = Trainer(cfg, TrainingSet(images[:2], masks[:2], images[2:]), tmp_path / name)
    tr.prefetch = False
    return tr


def test_c1_table_reproduces_the_binary_losses(tmp_path):
    images, masks = synthetic_tiles(3, size=32, seed=3)
    one = ClassTable.from_names(["background", "gland"]).to_list()
    runs = [_tiny(tmp_path, n, c, masks, images) for n, c in (("bin", None), ("c1", one))]
    assert runs[1].family is get_family("semimoe")
    a, b = ([tr.step() for _ in range(2)] for tr in runs)
    assert a == b  # every logged loss equal, bit for bit
    for tr in runs:
        tr.close()


def test_multiclass_semimoe_trains_and_predicts_a_class_map(tmp_path):
    images, ids = synthetic_tiles(3, size=32, seed=4)
    masks = [np.where(m > 0, (m - 1) % 2 + 1, 0).astype(np.uint8) for m in ids]
    tr = _tiny(tmp_path, "mc", THREE.to_list(), masks, images)
    assert tr.model.experts["seg"].head.out_channels == 3
    assert tr.model.mgp.heads["seg"].out_channels == 3
    tr.run()
    loaded = load_model(tmp_path / "mc")
    assert loaded.family.classes == THREE
    out = Predictor(loaded).predict_image(images[0])
    assert {"prob", "prob_1", "prob_2", "sdf", "boundary", "classes"} <= set(out)
    total = (1 - out["prob"]) + out["prob_1"] + out["prob_2"]
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    assert out["classes"].dtype == np.uint8 and out["classes"].max() <= 2
    assert loaded.family.label_maps()["classes"] == {0: "background", 1: "benign", 2: "malignant"}


def test_labeled_choice_covers_every_class(tmp_path):
    """10 % labels, per class: a rare class (one image of 20) is always labeled, whatever
    the seed; binary selection is unchanged by the class-aware path."""
    from PIL import Image

    from napari_semimoe.core.data import choose_labeled, scan_folder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(20):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"i{i:02d}.png")
        m = np.zeros((8, 8), np.uint8)
        m[:4] = 1
        if i == 13:
            m[:4] = 2  # the only image with class 2 (and without class 1)
        Image.fromarray(m).save(tmp_path / "masks" / f"i{i:02d}.png")
    items = scan_folder(tmp_path)
    hit = 0
    for seed in range(6):
        labeled, unlabeled = choose_labeled(items, 2, seed=seed, classes=THREE)
        names = [it.name for it in labeled]
        assert len(labeled) == 2 and "i13" in names and len(unlabeled) == 18
        plain, _ = choose_labeled(items, 2, seed=seed)
        one, _ = choose_labeled(items, 2, seed=seed, classes=ONE)  # C = 1: the binary draw
        assert [it.name for it in one] == [it.name for it in plain]
        hit += "i13" in [it.name for it in plain]
    assert hit < 6  # without the table the rare image is not always drawn
    # One labeled image asked for but two needed to cover both classes: two, with a warning.
    labeled, _ = choose_labeled(items, 1, seed=0, classes=THREE)
    assert len(labeled) == 2
