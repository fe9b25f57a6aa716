"""Stain augmentation (HED jitter: in range, reproducible) and Macenko normalisation on
images made from known stain vectors (Beer-Lambert), so the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_semimoe.core.errors import InputError
from napari_semimoe.core.stain import hed_jitter, macenko_basis, macenko_normalise

H = np.array([0.65, 0.70, 0.29])  # Ruifrok & Johnston's haematoxylin OD vector
E = np.array([0.07, 0.99, 0.11])  # and eosin


def _stained(h_vec, e_vec, scale=1.0, seed=0, n=48):
    """An image whose pixels are mixtures of two stains, concentrations known."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1.5, (n * n, 2)) * scale
    c[rng.random(n * n) < 0.5, 1] *= 0.1  # some nuclei-rich, some eosin-rich pixels
    c[rng.random(n * n) < 0.5, 0] *= 0.1
    v = np.stack([h_vec / np.linalg.norm(h_vec), e_vec / np.linalg.norm(e_vec)], 1)
    od = c @ v.T
    img = np.clip(np.rint(256 * 10 ** (-od) - 1), 0, 255).astype(np.uint8)
    return img.reshape(n, n, 3), v


def test_hed_jitter_stays_in_range_and_repeats_with_a_seed():
    img, _ = _stained(H, E)
    a = hed_jitter(img, np.random.default_rng(3), 0.05)
    b = hed_jitter(img, np.random.default_rng(3), 0.05)
    c = hed_jitter(img, np.random.default_rng(4), 0.05)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0 < np.abs(a.astype(int) - img).mean() < 10  # changed, still the same image
    assert hed_jitter(img, np.random.default_rng(3), 0.0) is img
    # The strongest setting stays in range too.
    assert hed_jitter(img, np.random.default_rng(0), 1.0).dtype == np.uint8


class _Fixed:
    """An rng whose two uniform draws are given: scale offsets a, then shifts b."""

    def __init__(self, a, b):
        self.draws = [np.asarray(a, float), np.asarray(b, float)]

    def uniform(self, lo, hi, n):
        return self.draws.pop(0)


def test_hed_jitter_shift_is_in_optical_density():
    """Hand-computed: a white pixel (no stain) given a haematoxylin shift of 0.1 OD
    (natural log, Tellez's units) becomes 255 exp(-0.1 h) with h skimage's unit
    haematoxylin vector (0.65, 0.70, 0.29): (239, 238, 248). In skimage's own HED units
    (13.8x larger) the same shift would give (104, 96, 180): the bug that made a light
    jitter darker than any real lab difference."""
    white = np.full((2, 2, 3), 255, np.uint8)
    out = hed_jitter(white, _Fixed([0, 0, 0], [0.1, 0, 0]), 0.1)
    h = np.array([0.65, 0.70, 0.29])
    assert np.abs(out[0, 0].astype(int) - np.rint(255 * np.exp(-0.1 * h))).max() <= 1


def test_light_and_strong_jitter_move_colours_by_realistic_amounts():
    """Light (0.05) a few grey levels, strong (0.2) about a lab-to-lab difference (the
    Macenko test's two stainings differ by 15): mean |change| over 20 seeded draws."""
    img, _ = _stained(H, E)

    def change(s):
        rng = np.random.default_rng(0)
        return np.mean([np.abs(hed_jitter(img, rng, s).astype(int) - img).mean()
                        for _ in range(20)])  # fmt: skip

    light, strong = change(0.05), change(0.2)
    assert 1 < light < 8 and 8 < strong < 25, (light, strong)


def test_macenko_finds_the_stain_vectors_it_was_made_from():
    img, v = _stained(H, E)
    basis = macenko_basis(img)
    # Haematoxylin first; each recovered vector within ~5 degrees of the true one.
    for k in range(2):
        cos = float(basis.vectors[:, k] @ v[:, k])
        assert cos > np.cos(np.radians(5)), (k, basis.vectors[:, k], v[:, k])


def test_macenko_normalises_one_stain_to_another():
    # Same tissue (concentrations), two labs' stains; normalising lab B's image to lab A's
    # reference brings it close to lab A's image.
    h_b, e_b = np.array([0.55, 0.75, 0.37]), np.array([0.20, 0.95, 0.25])
    img_a, _ = _stained(H, E, seed=1)
    img_b, _ = _stained(h_b, e_b, scale=0.8, seed=1)
    ref = macenko_basis(img_a)
    out = macenko_normalise(img_b, ref)
    before = np.abs(img_b.astype(int) - img_a).mean()
    after = np.abs(out.astype(int) - img_a).mean()
    assert out.shape == img_b.shape and out.dtype == np.uint8
    assert after < 0.35 * before, (before, after)
    # An image normalised to its own basis barely changes.
    assert np.abs(macenko_normalise(img_a, ref).astype(int) - img_a).mean() < 3


def test_macenko_refuses_an_image_without_tissue():
    with pytest.raises(InputError, match="no tissue"):
        macenko_basis(np.full((16, 16, 3), 250, np.uint8))


def test_stain_jitter_is_a_training_setting(tmp_path):
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.data import Geometry, TrainingSet, make_batch
    from napari_semimoe.core.train import TrainConfig, Trainer

    images, masks = synthetic_tiles(2, size=32, seed=1)
    args = (images, masks, [0, 1], 32, [0.5] * 3, [0.2] * 3)
    plain, _ = make_batch(np.random.default_rng(0), *args)
    jitter = lambda rng, t: hed_jitter(t, rng, 0.1)  # noqa: E731
    a, _ = make_batch(np.random.default_rng(0), *args, colour=jitter)
    b, _ = make_batch(np.random.default_rng(0), *args, colour=jitter)
    assert np.array_equal(a, b) and not np.array_equal(a, plain)
    cfg = TrainConfig(
        width=4, family="moe-k", experts=2, iterations=1, threads=1, precision="fp32",
        stain_jitter=0.05, geometry=Geometry(input_size=32).to_dict(),
    )  # fmt: skip
    tr = Trainer(cfg, TrainingSet(images, masks, []), tmp_path / "run")
    assert tr._colour() is not None and tr.run() == "done"


def test_stain_normalisation_as_a_run_setting(tmp_path, capsys):
    """train --stain-normalise stores the reference's basis; the trainer re-stains its
    images; the predictor maps lab B's image to the reference, so its prediction is (almost)
    that of lab A's image of the same tissue, and a slide's tiles share the slide's basis."""
    import json

    from PIL import Image

    from napari_semimoe.cli import main
    from napari_semimoe.core.inference import Predictor, load_model

    h_b, e_b = np.array([0.55, 0.75, 0.37]), np.array([0.20, 0.95, 0.25])
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        img, _ = _stained(H, E, seed=i, n=64)
        Image.fromarray(img).save(root / "images" / f"a{i}.png")
        m = np.zeros((64, 64), np.uint8)
        m[8:30, 10:40] = 1
        Image.fromarray(m).save(root / "masks" / f"a{i}.png")
    ref_path = root / "images" / "a0.png"
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--iterations", "2", "--width", "4"]
    args += ["--input-size", "32", "--threads", "1", "--precision", "fp32"]
    assert main([*args, "--stain-normalise", str(ref_path), "--out", str(run)]) == 0
    capsys.readouterr()
    ref = json.loads((run / "config.json").read_text())["stain_reference"]
    assert ref["image"] == "a0.png" and np.array(ref["vectors"]).shape == (3, 2)

    img_a, _ = _stained(H, E, seed=5, n=64)
    img_b, _ = _stained(h_b, e_b, scale=0.8, seed=5, n=64)
    p = Predictor(load_model(run))
    assert p.stain_reference is not None
    seen = []
    restain = p._restain
    p._restain = lambda tiles: seen.append(restain(tiles)) or seen[-1]
    p.predict_image(img_b)
    p.predict_image(img_a)
    # What the network saw of lab B's image is lab A's image (both mapped to a0's stain).
    before = np.abs(img_b[::2, ::2].astype(int) - img_a[::2, ::2]).mean()
    after = np.abs(seen[0].astype(int) - seen[1]).mean()
    assert after < 0.65 * before, (before, after)  # 15.0 -> 8.1 grey levels here
    # A slide's tiles are all mapped from the slide's basis, not each their own.
    p.use_stain(macenko_basis(img_b).to_dict())
    half = restain(img_b[None, :32])[0]
    np.testing.assert_array_equal(half, restain(img_b[None])[0][:32])
    p.use_stain(None)
    # A glass-only image has no basis: predicted as it is, no error.
    p.predict_image(np.full((32, 32, 3), 245, np.uint8))
    # A damaged reference in a run's config: one line.
    with pytest.raises(InputError, match="stain reference"):
        from napari_semimoe.core.stain import StainBasis

        StainBasis.from_dict({"vectors": [[1, 2]], "max_concentration": [1, 1]})
