"""ES-Dice / ES-IoU on cases computed by hand."""

from __future__ import annotations

import pytest

from napari_semimoe.core.equity import equity_report, equity_scaled, per_attribute


def test_equal_groups_leave_the_score_unchanged():
    assert equity_scaled(0.8, {"a": 0.8, "b": 0.8}) == pytest.approx(0.8)
    assert equity_scaled(0.8, {}) == pytest.approx(0.8)


def test_hand_computed_case():
    # Dice per image: site A 0.9, 0.7 (mean 0.8); site B 0.5; one unknown 0.9.
    dice = [0.9, 0.7, 0.5, 0.9]
    iou = [0.8, 0.6, 0.3, 0.8]
    attrs = ["A", "A", "B", None]
    assert per_attribute(dice, attrs) == pytest.approx({"A": 0.8, "B": 0.5})
    r = equity_report({"dice": dice, "iou": iou}, attrs)
    # all = 3.0 / 4 = 0.75; Δ = |0.75 - 0.8| + |0.75 - 0.5| = 0.30; ES = 0.75 / 1.30
    assert r["dice"] == pytest.approx(0.75)
    assert r["es_dice"] == pytest.approx(0.75 / 1.30)
    # IoU: all = 2.5 / 4 = 0.625; A 0.7, B 0.3; Δ = 0.075 + 0.325 = 0.4; ES = 0.625 / 1.4
    assert r["es_iou"] == pytest.approx(0.625 / 1.4)
    assert r["images_per_attribute"] == {"A": 2, "B": 1}
    assert r["unknown_attribute_images"] == 1
    with pytest.raises(ValueError, match="3 scores but 2 attributes"):
        per_attribute([1, 2, 3], ["a", "b"])
