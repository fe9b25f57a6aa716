"""Uncertainty scores and active-labeling suggestions on constructed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_semimoe.cli import main
from napari_semimoe.core.uncertainty import (
    STRATEGIES,
    binary_entropy,
    gate_entropy,
    pixel_signals,
    score_tiles,
    suggest,
    uncertainty_map,
)


def confident_left_ambiguous_right(n: int = 128) -> dict[str, np.ndarray]:
    """Left half: crisp glands (p ~ 0/1, SDF sign and experts agree, boundary on the edges).
    Right half: p ~ 0.5, experts disagree, SDF says inside."""
    p = np.full((n, n), 0.01, np.float32)
    p[20:50, 10:50] = 0.99
    sdf = np.where(p > 0.5, 0.5, -0.5).astype(np.float32)
    from scipy import ndimage as ndi

    mask = p > 0.5
    bnd = (ndi.binary_dilation(mask, iterations=2) & ~mask).astype(np.float32)
    expert = p.copy()
    p[:, n // 2 :] = 0.5
    sdf[:, n // 2 :] = 0.6
    expert[:, n // 2 :] = 0.9
    bnd[:, n // 2 :] = 0.5
    return {"prob": p, "sdf": sdf, "boundary": bnd, "expert_prob": expert}


def test_entropy_values():
    np.testing.assert_allclose(binary_entropy(np.array([0.5, 0.0, 1.0])), [1, 0, 0], atol=1e-4)


def test_confident_region_scores_below_ambiguous_region():
    maps = confident_left_ambiguous_right()
    sig = pixel_signals(maps)
    for k, v in sig.items():
        assert v[:, 64:].mean() > v[:, :64].mean(), k
        assert v.min() >= 0 and v.max() <= 1, k
    u = uncertainty_map(maps)
    assert u[:, 64:].mean() > 3 * u[:, :64].mean()
    tiles = score_tiles(maps, 64, stride=64)
    left = [t for t in tiles if t.x == 0]
    right = [t for t in tiles if t.x == 64]
    assert min(t.score for t in right) > max(t.score for t in left)
    assert set(tiles[0].components) == set(sig)


def test_gate_entropy_and_tissue_filter():
    uniform = np.full((1, 3, 3), 1 / 3)
    onehot = np.zeros((1, 3, 3))
    onehot[:, :, 0] = 1
    assert gate_entropy(uniform)[0] == pytest.approx(1.0)
    assert gate_entropy(onehot)[0] == pytest.approx(0.0, abs=1e-6)
    maps = confident_left_ambiguous_right()
    tissue = np.zeros((128, 128), bool)
    tissue[:, :64] = True
    tiles = score_tiles(maps, 64, stride=64, tissue=tissue)
    assert {t.x for t in tiles} == {0}  # glass tiles are never candidates
    gates = np.stack([uniform[0], onehot[0]])
    gt = np.array([[0, 0, 64, 64], [64, 0, 64, 64]])
    tiles = score_tiles(maps, 64, stride=64, gates=gates, gate_tiles=gt)
    top = {(t.y, t.x): t.components["gate_entropy"] for t in tiles}
    assert top[(0, 0)] == pytest.approx(1.0) and top[(64, 0)] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_suggestions_avoid_labeled_tiles_and_spread_out(strategy):
    rng = np.random.default_rng(0)
    maps = {
        "prob": rng.uniform(0.3, 0.7, (256, 256)).astype(np.float32),
        "sdf": rng.uniform(-1, 1, (256, 256)).astype(np.float32),
        "boundary": rng.uniform(0, 1, (256, 256)).astype(np.float32),
    }
    maps["prob"][96:160, 96:160] = 0.5  # the most ambiguous spot is already labeled
    cands = score_tiles(maps, 32, stride=16)
    for c in cands:  # what the model sees in each tile: two kinds, so clusters matter
        c.embedding = np.array([c.x < 128, c.x >= 128, 0.0]) + rng.normal(0, 0.05, 3)
    labeled = [(96, 96, 64, 64)]
    picks = suggest(cands, 6, exclude=labeled, strategy=strategy)
    assert len(picks) == 6
    for p in picks:
        assert p.y >= 160 or p.y + 32 <= 96 or p.x >= 160 or p.x + 32 <= 96
    for i, a in enumerate(picks):
        for b in picks[i + 1 :]:
            assert np.hypot(a.y - b.y, a.x - b.x) >= 32
            assert abs(a.y - b.y) >= 32 or abs(a.x - b.x) >= 32  # no overlap
    assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)


def test_suggest_cli(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dataset),
                "--labeled",
                "2",
                "--iterations",
                "1",
                "--width",
                "4",
                "--tile",
                "32",
                "--threads",
                "1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    img = tiny_dataset / "images" / "img_5.png"
    assert (
        main(
            [
                "suggest",
                str(run),
                str(img),
                "--tile",
                "32",
                "--top",
                "3",
                "--exclude",
                "0,0,32,32",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "s.json").read_text())
    assert 1 <= len(doc["tiles"]) <= 3
    t = doc["tiles"][0]
    assert {"y", "x", "h", "w", "score", "components"} <= set(t)
    assert t["h"] == t["w"] == 32  # scale 1: square, in the image's pixels
    assert {"entropy", "disagreement", "sdf_consistency", "gate_entropy"} <= set(t["components"])
    assert not (t["y"] < 32 and t["x"] < 32)


def test_suggestions_cover_different_kinds_of_tissue():
    """Uncertainty alone would take the 3 most uncertain tiles, all of one kind (a cluster of
    near-identical embeddings); the diverse pick takes one per kind, still uncertain ones."""
    from napari_semimoe.core.uncertainty import TileScore

    rng = np.random.default_rng(0)
    kinds = np.eye(3)  # three kinds of tissue, as the model's pooled features see them
    cands = []
    for i in range(30):
        kind = 0 if i < 10 else (1 if i < 20 else 2)
        score = 0.9 - 0.01 * i if kind == 0 else 0.5 - 0.01 * (i % 10)
        emb = kinds[kind] + rng.normal(0, 0.01, 3)
        cands.append(TileScore(0, 100 * i, 10, score, embedding=emb))
    greedy = suggest([TileScore(c.y, c.x, c.size, c.score) for c in cands], 3)
    assert {c.x // 1000 for c in greedy} == {0}  # all from the first kind
    picks = suggest(cands, 3, prefilter=10, strategy="uncertain")
    assert sorted(c.x // 1000 for c in picks) == [0, 1, 2]  # one of each kind
    assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    assert all(p.score >= 0.4 for p in picks)  # uncertain ones, not the least uncertain


def test_coverage_strategy_labels_what_is_not_yet_covered():
    """Kind 0 is the most uncertain but already has a labeled tile: the coverage strategy
    spends the labels on the kinds nothing covers, each time on an uncertain tile that is
    typical of its kind rather than an outlier."""
    from napari_semimoe.core.uncertainty import TileScore

    rng = np.random.default_rng(0)
    kinds = np.eye(3)
    cands = []
    for i in range(30):
        kind = i // 10
        emb = kinds[kind] + rng.normal(0, 0.02, 3)
        score = (0.9 if kind == 0 else 0.5) - 0.01 * (i % 10)
        if i % 10 == 9:  # an outlier of its kind, the most uncertain of it
            emb = kinds[kind] + 0.6 * kinds[(kind + 1) % 3]
            score += 0.3
        cands.append(TileScore(0, 100 * i, 10, score, embedding=emb))
    labeled = [kinds[0] + rng.normal(0, 0.02, 3)]
    uncertain = suggest(cands, 2, prefilter=5, strategy="uncertain")
    assert {c.x // 1000 for c in uncertain} == {0}  # both from the covered kind
    picks = suggest(cands, 2, strategy="coverage", labeled=labeled)
    assert sorted(c.x // 1000 for c in picks) == [1, 2]
    assert all((c.x // 100) % 10 != 9 for c in picks)  # not the outliers
    assert all((c.x // 100) % 10 <= 4 for c in picks)  # the uncertain half of each kind
    # Without explicit embeddings, tiles overlapping the labeled boxes stand for them.
    boxed = suggest(cands, 2, strategy="coverage", exclude=[(0, 0, 10, 300)])
    assert sorted(c.x // 1000 for c in boxed) == [1, 2]
    with pytest.raises(ValueError, match="strategy"):
        suggest(cands, 2, strategy="nope")


def test_consistency_signals_are_shown_but_not_scored():
    """GlaS showed they mislead (docs/benchmarks.md): they must not move the score."""
    maps = confident_left_ambiguous_right(64)
    base = score_tiles(maps, 64, stride=64)[0]
    maps["sdf"] = -maps["sdf"]  # SDF now contradicts the segmentation everywhere
    flipped = score_tiles(maps, 64, stride=64)[0]
    assert flipped.components["sdf_consistency"] > base.components["sdf_consistency"]
    assert flipped.score == pytest.approx(base.score)


def test_a_target_class_ranks_where_that_class_is_unsure():
    """The ambiguous right half is where the gland/background call is unsure; the rare
    class 2 is unsure only in the confident left half: targeting it ranks the left first."""
    maps = confident_left_ambiguous_right()
    rare = np.zeros_like(maps["prob"])
    rare[:, :64] = 0.5  # the rare class: undecided on the left
    maps["prob_2"] = rare
    default = score_tiles(maps, 64, stride=64)
    assert max(default, key=lambda t: t.score).x == 64
    targeted = score_tiles(maps, 64, stride=64, target="prob_2")
    best = max(targeted, key=lambda t: t.score)
    assert best.x == 0 and best.score == pytest.approx(1.0, abs=1e-3)
    assert best.components["class_entropy"] == best.score and "entropy" in best.components


def test_a_model_without_sdf_and_boundary_can_target_a_class():
    """DCA writes prob and the class probabilities only: its suggestions target a class."""
    from napari_semimoe.core.uncertainty import supports, supports_class_target

    maps = confident_left_ambiguous_right()
    maps = {"prob": maps["prob"], "prob_1": np.where(maps["prob"] > 0.9, 0.5, 0.0)}
    assert not supports(maps) and supports_class_target(maps, 1)
    assert not supports_class_target(maps, 2)
    assert set(pixel_signals(maps)) == {"entropy", "disagreement"}
    tiles = score_tiles(maps, 64, stride=64, target="prob_1")
    best = max(tiles, key=lambda t: t.score)
    assert (best.y, best.x) == (0, 0)  # where class 1 is undecided (the left's gland)
