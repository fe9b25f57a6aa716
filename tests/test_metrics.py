"""Metrics on hand-made label images with hand-computed numbers, plus a brute-force cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import directed_hausdorff
from skimage.measure import label

from napari_semimoe.core.errors import InputError
from napari_semimoe.core.metrics import (
    ObjectAccumulator,
    PixelAccumulator,
    dice_jaccard,
    evaluate_pairs,
    format_table,
    object_dice,
    object_f1,
    object_hausdorff,
    object_metrics,
)


def _canvas(shape=(30, 40)) -> np.ndarray:
    return np.zeros(shape, dtype=np.int32)


def _two_squares() -> np.ndarray:
    gt = _canvas()
    gt[2:12, 2:12] = 1
    gt[15:25, 20:30] = 2
    return gt


# ---------------------------------------------------------------- pixel metrics


def test_dice_jaccard_identical_disjoint_empty():
    gt = _two_squares()
    assert dice_jaccard(gt, gt) == (1.0, 1.0)
    assert dice_jaccard(np.roll(gt, 15, axis=1) * (gt == 0), gt) == (0.0, 0.0)
    assert dice_jaccard(_canvas(), _canvas()) == (1.0, 1.0)
    assert dice_jaccard(_canvas(), gt) == (0.0, 0.0)


def test_dice_jaccard_shifted_square():
    gt = _canvas()
    gt[5:15, 5:15] = 1
    pred = np.roll(gt, 3, axis=1)  # overlap 10 x 7 = 70 of 100 + 100
    assert dice_jaccard(pred, gt) == pytest.approx((140 / 200, 70 / 130), abs=1e-12)


def test_shape_mismatch_is_input_error():
    with pytest.raises(InputError):
        dice_jaccard(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError):
        object_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


# ---------------------------------------------------------------- object metrics, one image


def test_identical_labels_are_perfect_even_with_other_ids():
    gt = _two_squares()
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (2, 0, 0)
    assert st.f1 == 1.0
    assert st.dice == 1.0
    assert st.hausdorff == 0.0


def test_disjoint_square():
    gt = np.zeros((10, 30), dtype=np.int32)
    pred = gt.copy()
    gt[:, 0:10] = 1
    pred[:, 20:30] = 1
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (0, 1, 1)
    assert st.f1 == 0.0
    assert st.dice == 0.0
    assert st.hausdorff == 20.0  # nearest (only) object, 20 columns away


@pytest.mark.parametrize(("shift", "expected"), [((0, 3), 3.0), ((3, 4), 5.0), ((2, 0), 2.0)])
def test_shifted_square_hausdorff_is_shift_length(shift, expected):
    gt = _canvas()
    gt[5:15, 5:15] = 1
    pred = np.roll(gt, shift, axis=(0, 1))
    overlap = (10 - abs(shift[0])) * (10 - abs(shift[1]))
    st = object_metrics(pred, gt)
    assert st.hausdorff == pytest.approx(expected, abs=1e-12)
    assert st.dice == pytest.approx(2 * overlap / 200, abs=1e-12)
    assert st.tp == (1 if overlap > 50 else 0)


def test_over_segmentation_f1_dice_hausdorff():
    # One 10x20 GT (200 px) split into S1 = 10x12 (60 %) and S2 = 10x8 (40 %).
    gt = np.zeros((12, 22), dtype=np.int32)
    gt[1:11, 1:21] = 1
    pred = np.zeros_like(gt)
    pred[1:11, 1:13] = 1
    pred[1:11, 13:21] = 2
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (1, 1, 0)
    assert st.f1 == pytest.approx(2 / 3, abs=1e-12)
    # S side: 0.6 * Dice(G,S1)=0.75 + 0.4 * Dice(G,S2)=4/7; G side: Dice(G,S1) = 0.75.
    assert st.dice == pytest.approx(5 / 7, abs=1e-12)
    # H(G,S1) = 8 (col 20 -> col 12), H(G,S2) = 12 (col 1 -> col 13): (0.6*8 + 0.4*12 + 8)/2.
    assert st.hausdorff == pytest.approx(8.8, abs=1e-12)
    assert dice_jaccard(pred, gt) == (1.0, 1.0)


def test_even_split_gives_no_true_positive():
    # Each half covers exactly 50 % of the GT: not > 50 %, so both are FP (official code).
    gt = np.zeros((10, 20), dtype=np.int32)
    gt[:, :] = 1
    pred = np.ones_like(gt)
    pred[:, 10:] = 2
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (0, 2, 1)
    assert st.f1 == 0.0


def test_under_segmentation_one_pred_covering_two_gt():
    gt = np.zeros((10, 25), dtype=np.int32)
    gt[:, 0:10] = 1
    gt[:, 15:25] = 2
    pred = np.zeros_like(gt)
    pred[:, 0:25] = 1
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (1, 0, 1)
    assert st.f1 == pytest.approx(2 / 3, abs=1e-12)


def test_partial_cover_of_gt_is_fp_and_fn():
    gt = _canvas()
    gt[5:15, 5:15] = 1  # 100 px
    pred = _canvas()
    pred[5:9, 5:15] = 1  # 40 % of the GT
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (0, 1, 1)
    assert object_f1(pred, gt) == 0.0


def test_tp_threshold_is_relative_to_gt_area():
    # The prediction covers the whole GT but only a third of itself: still a TP (GlaS rule).
    gt = _canvas()
    gt[5:15, 10:20] = 1
    pred = _canvas()
    pred[5:15, 0:30] = 1
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (1, 0, 0)
    assert st.dice == pytest.approx(200 / 400, abs=1e-12)
    assert st.hausdorff == 10.0


def test_unmatched_object_uses_nearest_by_hausdorff():
    gt = np.zeros((20, 40), dtype=np.int32)
    gt[0:4, 0:4] = 1
    gt[0:4, 30:34] = 2
    pred = gt.copy()
    pred[0:2, 10:12] = 3  # touches no GT; nearest is G1 with H = |(3,0) - (1,10)| = sqrt(104)
    st = object_metrics(pred, gt)
    assert (st.tp, st.fp, st.fn) == (2, 1, 0)
    assert st.f1 == pytest.approx(0.8, abs=1e-12)
    assert st.dice == pytest.approx(17 / 18, abs=1e-12)
    assert st.hausdorff == pytest.approx(math.sqrt(104) / 18, abs=1e-12)


def test_hausdorff_uses_interior_pixels_not_only_contours():
    # Filled 11x11 square vs its 1-px outline: the centre is 5 px from the outline.
    gt = _canvas()
    gt[5:16, 5:16] = 1
    pred = gt.copy()
    pred[6:15, 6:15] = 0
    assert object_hausdorff(pred, gt) == 5.0


def test_empty_conventions():
    empty = _canvas()
    gt = _two_squares()
    both = object_metrics(empty, empty)
    assert (both.f1, both.dice, both.hausdorff) == (1.0, 1.0, 0.0)
    for pred, truth, counts in [(empty, gt, (0, 0, 2)), (gt, empty, (0, 2, 0))]:
        st = object_metrics(pred, truth)
        assert (st.tp, st.fp, st.fn) == counts
        assert st.f1 == 0.0
        assert object_dice(pred, truth) == 0.0
        assert math.isnan(st.hausdorff)


def test_brute_force_port_of_official_code_agrees():
    """Straight port of the official MATLAB algorithm (all-pairs, full pixel sets)."""

    def haus(a, b):
        pa, pb = np.argwhere(a), np.argwhere(b)
        return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])

    def partner(mask, other):
        vals = other[mask]
        vals = vals[vals > 0]
        return int(np.bincount(vals).argmax()) if vals.size else 0

    def reference(s_lab, g_lab):
        s_ids, g_ids = np.unique(s_lab)[1:], np.unique(g_lab)[1:]
        tp = 0
        for s in s_ids:
            g = partner(s_lab == s, g_lab)
            if g and np.sum((s_lab == s) & (g_lab == g)) / np.sum(g_lab == g) > 0.5:
                tp += 1
        dice = haus_total = 0.0
        for a_lab, b_lab, b_ids in [(s_lab, g_lab, g_ids), (g_lab, s_lab, s_ids)]:
            total = np.sum(a_lab > 0)
            for a in np.unique(a_lab)[1:]:
                am = a_lab == a
                b = partner(am, b_lab)
                w = am.sum() / total
                if b:
                    bm = b_lab == b
                    dice += w * 2 * np.sum(am & bm) / (am.sum() + bm.sum())
                    haus_total += w * haus(am, bm)
                else:
                    haus_total += w * min(haus(am, b_lab == c) for c in b_ids)
        return tp, len(s_ids) - tp, len(g_ids) - tp, dice / 2, haus_total / 2

    def rectangles(n):
        lab = np.zeros((48, 48), dtype=np.int32)
        for k in range(1, n + 1):
            r, c = rng.integers(0, 40, size=2)
            h, w = rng.integers(3, 12, size=2)
            lab[r : r + h, c : c + w] = k
        return lab

    def blobs():  # non-convex shapes with holes, several pieces per label
        lab = label(ndi.gaussian_filter(rng.random((48, 48)), 2.0) > 0.52)
        return (lab % 7) * (lab > 0)

    rng = np.random.default_rng(0)
    for trial in range(6):
        if trial < 3:
            g_lab, s_lab = rectangles(5), rectangles(6)
        else:
            g_lab, s_lab = blobs(), blobs()
        assert g_lab.max() > 1 and s_lab.max() > 1
        st = object_metrics(s_lab, g_lab)
        tp, fp, fn, dice, haus_val = reference(s_lab, g_lab)
        assert (st.tp, st.fp, st.fn) == (tp, fp, fn)
        assert st.dice == pytest.approx(dice, abs=1e-12)
        assert st.hausdorff == pytest.approx(haus_val, abs=1e-9)


# ---------------------------------------------------------------- dataset aggregation


def _two_image_case():
    """Image A: two 10x10 GT squares predicted exactly. Image B: a 2x2 GT and a 2x2 prediction
    10 px to the right (FP + FN, Dice 0, H 10)."""
    a = np.zeros((30, 40), dtype=np.int32)
    a[0:10, 0:10] = 1
    a[15:25, 20:30] = 2
    gt_b = np.zeros((30, 40), dtype=np.int32)
    gt_b[0:2, 0:2] = 1
    pred_b = np.zeros_like(gt_b)
    pred_b[0:2, 10:12] = 1
    return [(a, a), (pred_b, gt_b)]


def test_pooled_and_per_image_differ_pixels():
    acc = PixelAccumulator()
    for pred, gt in _two_image_case():
        acc.add(pred, gt)
    assert (acc.tp, acc.fp, acc.fn) == (200, 4, 4)
    assert acc.dice_pooled == pytest.approx(400 / 408, abs=1e-12)
    assert acc.jaccard_pooled == pytest.approx(200 / 208, abs=1e-12)
    s = acc.summary()
    assert s["dice_per_image_mean"] == 0.5
    assert s["dice_per_image_std"] == 0.5
    assert s["jaccard_per_image_mean"] == 0.5


def test_pooled_and_per_image_differ_objects():
    acc = ObjectAccumulator()
    for pred, gt in _two_image_case():
        acc.add(pred, gt)
    assert acc.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1), abs=1e-12)  # pooled TP2 FP1 FN1
    assert acc.dice == pytest.approx(200 / 204, abs=1e-12)
    assert acc.hausdorff == pytest.approx(40 / 204, abs=1e-12)  # only B's 4+4 px carry H = 10
    s = acc.summary()
    assert s["object_f1_per_image_mean"] == 0.5
    assert s["object_dice_per_image_mean"] == 0.5
    assert s["object_hausdorff_per_image_mean"] == 5.0
    assert (s["object_tp"], s["object_fp"], s["object_fn"]) == (2, 1, 1)


def test_evaluate_pairs_skips_undefined_hausdorff_and_counts_it():
    gt = _two_squares()
    pred_shift = np.roll(gt, 2, axis=1)  # each object H = 2
    pairs = [(gt, gt), (pred_shift, gt), (np.zeros_like(gt), gt)]
    m = evaluate_pairs(iter(pairs))
    assert m["n_images"] == 3
    assert m["object_hausdorff_undefined"] == 1
    assert m["object_hausdorff_per_image_mean"] == pytest.approx(1.0, abs=1e-12)
    assert m["object_hausdorff"] == pytest.approx(1.0, abs=1e-12)
    # Pixels pooled: TP 200 + 160, FP 40, FN 40 + 200.
    assert m["dice_pooled"] == pytest.approx(720 / (720 + 40 + 240), abs=1e-12)
    assert m["object_f1"] == pytest.approx(8 / (8 + 0 + 2), abs=1e-12)
    expected_keys = {
        "dice_pooled",
        "jaccard_pooled",
        "dice_per_image_mean",
        "dice_per_image_std",
        "jaccard_per_image_mean",
        "object_f1",
        "object_dice",
        "object_hausdorff",
        "n_images",
    }
    assert expected_keys <= m.keys()
    json.dumps(m)


def test_evaluate_pairs_empty_images_and_no_pairs():
    empty = _canvas()
    m = evaluate_pairs([(empty, empty)])
    assert m["dice_pooled"] == 1.0
    assert m["object_f1"] == 1.0
    assert m["object_dice"] == 1.0
    assert m["object_hausdorff"] == 0.0
    with pytest.raises(InputError):
        evaluate_pairs([])


def test_format_table():
    m = {
        "n_images": 2,
        "dice_pooled": 0.871234,
        "object_hausdorff": 45.678,
        "object_hausdorff_per_image_mean": math.nan,
    }
    lines = format_table(m).splitlines()
    assert lines[0].startswith("Metric")
    assert len({len(line) for line in lines}) == 1  # aligned
    assert lines[2].endswith(" 2")
    assert lines[3].startswith("Dice, pooled (%)") and lines[3].endswith("87.12")
    assert lines[4].endswith("45.7")
    assert lines[5].endswith("n/a")


# ----------------------------------------------------------------------------- binary masks


def _two_glands() -> np.ndarray:
    inst = np.zeros((64, 64), np.int32)
    inst[8:24, 8:28] = 1
    inst[36:56, 30:60] = 2
    return inst


def test_binary_mask_becomes_one_object_per_gland():
    from napari_semimoe.core.metrics import instances_from_mask

    for fg in (1, 255):
        labels, binary = instances_from_mask((_two_glands() > 0).astype(np.uint8) * fg)
        assert binary and labels.max() == 2
        assert object_f1(labels, _two_glands()) == 1.0
    inst, binary = instances_from_mask(_two_glands())
    assert not binary and (inst == _two_glands()).all()  # instance masks are kept as they are
    empty, binary = instances_from_mask(np.zeros((4, 4), np.uint8))
    assert not binary and not empty.any()


def test_evaluate_scores_binary_masks_per_gland_and_says_so(tmp_path, capsys, monkeypatch):
    """A perfect 2-gland prediction against a 0/255 mask is object F1 1.0 (it was 0.667:
    both glands of the mask were one object), and the output says how it was read."""
    import json

    from PIL import Image

    from napari_semimoe.cli import main
    from napari_semimoe.core.inference import Predictor
    from test_bad_inputs import write_ckpt

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(((_two_glands() > 0) * 255).astype(np.uint8)).save(data / "masks" / "a.png")
    run = tmp_path / "run"
    write_ckpt(run / "checkpoint.safetensors")
    monkeypatch.setattr(
        Predictor, "predict_image", lambda self, image: {"instances": _two_glands()}
    )
    code = main(["evaluate", str(run), "--data", str(data), "--json", str(tmp_path / "m.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["object_f1"] == 1.0 and metrics["object_dice"] == 1.0
    assert metrics["object_hausdorff"] == 0.0 and metrics["binary_masks"] == 1
    assert "1 mask was binary: glands = connected components" in err
    assert "Binary masks (glands = connected components)" in out
