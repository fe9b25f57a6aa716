"""Issue 20's prediction levers (off by default): test-time flips, hole filling and the
smallest object kept, on hand-made masks and through the predictor and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_semimoe.core.errors import InputError
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.inference.predictor import TTA_FLIPS, postprocess_mask
from test_trust_widget import tiny_checkpoint  # noqa: F401


def test_postprocess_fills_enclosed_holes_and_drops_small_components():
    m = np.zeros((10, 12), np.uint8)
    m[1:6, 1:6] = 1
    m[3, 3] = 0  # a hole inside a gland: filled
    m[0:3, 9:12] = 1
    m[0, 10] = 0  # a notch open to the image edge: not a hole
    m[8, 1] = m[9, 2] = 1  # two px touching diagonally: one 8-connected object of 2
    m[8, 8] = 1  # a lone px

    assert np.array_equal(postprocess_mask(m, False, 0), m)  # off: unchanged
    filled = postprocess_mask(m, True, 0)
    assert filled[3, 3] == 1 and filled[0, 10] == 0
    assert int(filled.sum()) == int(m.sum()) + 1
    small = postprocess_mask(m, False, 2)
    assert small[8, 8] == 0 and small[8, 1] == small[9, 2] == 1  # 2 px kept at min 2
    smaller = postprocess_mask(m, False, 3)
    assert smaller[8, 1] == smaller[9, 2] == 0 and smaller[1:6, 1:6].sum() == 24
    assert postprocess_mask(m, False, 3).dtype == np.uint8


def test_tta_is_the_mean_over_the_four_flips(tiny_checkpoint):  # noqa: F811
    loaded = load_model(tiny_checkpoint, "cpu")
    plain = Predictor(loaded, PredictOptions(precision="fp32", optimize=False, fast=False))
    tta = Predictor(loaded, PredictOptions(precision="fp32", optimize=False, fast=False,
                                           tta="flips"))  # fmt: skip
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    got, gates = tta.predict_batch(tiles)
    axes = {(): (), (-1,): (2,), (-2,): (1,), (-2, -1): (1, 2)}  # tensor dims -> NHWC axes
    want = {k: np.zeros_like(v) for k, v in got.items()}
    want_gates = np.zeros_like(gates)
    for dims in TTA_FLIPS:
        a = axes[dims]
        maps, g = plain.predict_batch(np.ascontiguousarray(np.flip(tiles, a) if a else tiles))
        for k, v in maps.items():  # (N, H, W) maps: H and W on the same axes as the tiles'
            want[k] += (np.flip(v, a) if a else v) / 4
        want_gates += g / 4
    for k in got:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=k)
    np.testing.assert_allclose(gates, want_gates, atol=1e-5)
    one, _ = plain.predict_batch(tiles)
    assert any(not np.allclose(one[k], got[k]) for k in got)  # flips change the maps


def test_predict_image_applies_the_mask_options(tiny_checkpoint):  # noqa: F811
    loaded = load_model(tiny_checkpoint, "cpu")
    img = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    base = Predictor(loaded, PredictOptions(threshold=0.3)).predict_image(img)
    post = Predictor(loaded, PredictOptions(threshold=0.3, fill_holes=True, min_object=8))
    out = post.predict_image(img)
    # scale 4: 8 working px = 128 native px
    assert np.array_equal(out["mask"], postprocess_mask(base["mask"], True, 8 * 16))
    with pytest.raises(InputError, match="tta must be off or flips"):
        Predictor(loaded, PredictOptions(tta="rot90"))
    with pytest.raises(InputError, match="min_object"):
        Predictor(loaded, PredictOptions(min_object=-1))


def test_cli_evaluate_with_the_levers(tiny_dataset, tmp_path, capsys):
    from test_cli import _train, run

    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    out = tmp_path / "m.json"
    code, _, err = run(capsys, "evaluate", str(rundir), "--data", str(tiny_dataset),
                       "--threads", "1", "--tta", "flips", "--fill-holes", "--min-object", "4",
                       "--json", str(out))  # fmt: skip
    assert code == 0, err
    assert "dice_pooled" in json.loads(out.read_text())
    code, _, err = run(capsys, "evaluate", str(rundir), "--data", str(tiny_dataset),
                       "--tta", "rot")  # fmt: skip
    assert code == 2 and "--tta" in err
