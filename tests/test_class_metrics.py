"""Per-class Dice / IoU, their means and head / medium / tail means, by hand; and
``evaluate_folder`` on a multi-class data folder (union-foreground + per-class metrics)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_semimoe.core.classes import ClassTable, write_classes
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.evaluate import evaluate_folder
from napari_semimoe.core.metrics import ClassAccumulator, format_class_table, format_table

NAMES = ("background", "a", "b", "c")


def test_per_class_dice_iou_pooled_by_hand():
    acc = ClassAccumulator(NAMES)
    gt1 = np.array([[0, 1, 1, 2]])
    pr1 = np.array([[0, 1, 2, 2]])
    gt2 = np.array([[0, 0, -1, 1]])  # -1: unknown, not scored
    pr2 = np.array([[1, 0, 3, 1]])
    acc.add(pr1, gt1)
    acc.add(pr2, gt2)
    # class 1: tp 2, fp 1, fn 1 -> Dice 4/6, IoU 2/4; class 2: tp 1, fp 1, fn 0 -> 2/3, 1/2
    # background: tp 2, fp 0, fn 1 -> 4/5, 2/3; class 3: never present -> NaN
    m = acc.summary({"head": [1], "medium": [], "tail": [2, 3]})
    assert m["dice[a]"] == pytest.approx(4 / 6) and m["iou[a]"] == pytest.approx(0.5)
    assert m["dice[b]"] == pytest.approx(2 / 3) and m["iou[b]"] == pytest.approx(0.5)
    assert m["dice[background]"] == pytest.approx(0.8)
    assert math.isnan(m["dice[c]"])
    assert m["dice_mean_classes"] == pytest.approx((4 / 6 + 2 / 3) / 2)
    assert m["dice_head_mean"] == pytest.approx(4 / 6)
    assert m["dice_tail_mean"] == pytest.approx(2 / 3)  # NaN class skipped
    assert "dice_medium_mean" not in m  # an empty group has no mean
    table = format_class_table(m, NAMES, {"head": [1], "tail": [2, 3]})
    assert "66.67" in table and "tail" in table and "n/a" in table
    assert "dice[a]" not in format_table(m | {"n_images": 2})


def _folder(tmp_path, gts):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, g in enumerate(gts):
        Image.fromarray(np.full((*g.shape, 3), 128, np.uint8)).save(root / "images" / f"i{i}.png")
        Image.fromarray(g.astype(np.uint8)).save(root / "masks" / f"i{i}.png")
    return root


class _Stub:
    """A predictor whose class map is given (evaluate needs only predict_image + family)."""

    def __init__(self, preds, table, split=None):
        self.family = SimpleNamespace(classes=table, split=split)
        self.preds = iter(preds)

    def predict_image(self, image):
        cls = next(self.preds)
        return {"classes": cls, "instances": ndi.label(cls > 0)[0]}


def test_evaluate_folder_multiclass_by_hand(tmp_path):
    table = ClassTable.from_names(["background", "benign", "malignant"])
    gt = np.zeros((8, 8), np.uint8)
    gt[1:4, 1:4] = 1
    gt[5:8, 5:8] = 2
    pred = gt.copy()
    pred[5:8, 5:8] = 1  # right place, wrong class
    root = _folder(tmp_path, [gt])
    write_classes(root, table)
    m = evaluate_folder(_Stub([pred], table, {"head": [1], "tail": [2]}), root, hausdorff=False)
    # Union foreground is perfect (pixels and objects); per class it is not.
    assert m["dice_pooled"] == 1.0 and m["object_f1"] == 1.0
    assert m["dice[benign]"] == pytest.approx(2 * 9 / (2 * 9 + 9))
    assert m["dice[malignant]"] == 0.0
    assert m["dice_head_mean"] == pytest.approx(2 / 3) and m["dice_tail_mean"] == 0.0
    assert m["classes"] == list(table.names) and m["split"]["medium"] == []


def test_evaluate_refuses_a_data_folder_of_other_classes(tmp_path):
    table = ClassTable.from_names(["background", "benign", "malignant"])
    root = _folder(tmp_path, [np.zeros((4, 4), np.uint8)])
    with pytest.raises(InputError, match="2 classes but the data folder has no classes.json"):
        evaluate_folder(_Stub([np.zeros((4, 4), np.uint8)], table), root)
