"""DCA: the log-gap split on hand-made pixel counts, label-split remapping, logit stitching,
DFAM attention, decoder parameter counts, and a tiny semi-supervised run that checkpoints
and predicts through the common trainer and predictor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_semimoe.cli import main
from napari_semimoe.core.bench import family_bench, synthetic_tiles
from napari_semimoe.core.classes import ClassTable, write_classes
from napari_semimoe.core.cohort import predict_slide
from napari_semimoe.core.data import Geometry, TrainingSet
from napari_semimoe.core.dca import (
    DECODER_BLOCKS,
    DCANet,
    Split,
    decoder_parameters,
    log_gap_split,
    parse_split_text,
    split_labels,
    stitch_logits,
    thirds_split,
)
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.families import get_family
from napari_semimoe.core.inference import PredictOptions, Predictor, load_model
from napari_semimoe.core.slide import open_slide
from napari_semimoe.core.tiff_writer import write_pyramid
from napari_semimoe.core.train import TrainConfig, Trainer


def _groups(s: Split):
    return s.head, s.medium, s.tail


def test_log_gap_three_groups_by_hand():
    # By id: V = 90, 1000, 10, 100 -> ranks 2, 4, 1, 3 (P 1000/1200, 100/1200, ...)
    s = log_gap_split([90, 1000, 10, 100])
    assert s.order == (2, 4, 1, 3)
    assert s.gaps == pytest.approx([math.log(10), math.log(100 / 90), math.log(9)])
    assert _groups(s) == ((2,), (4, 1), (3,))
    assert s.shares == pytest.approx([90 / 1200, 1000 / 1200, 10 / 1200, 100 / 1200])


def test_log_gap_two_classes_gives_head_and_tail():
    s = log_gap_split([10, 30])
    assert _groups(s) == ((2,), (), (1,)) and s.gaps == pytest.approx([math.log(3)])
    assert [g for g, _ in s.groups()] == ["head", "tail"]


def test_log_gap_ties():
    # Equal shares: the smaller id ranks first; the largest gap is last: no medium.
    assert _groups(log_gap_split([50, 50, 5])) == ((1, 2), (), (3,))
    # Equal gaps: argmax takes the first, so each group gets one class.
    assert _groups(log_gap_split([100, 10, 1])) == ((1,), (2,), (3,))


def test_log_gap_class_without_pixels_goes_to_the_tail():
    assert _groups(log_gap_split([100, 0, 10, 1])) == ((1,), (3,), (4, 2))
    assert _groups(log_gap_split([0, 5])) == ((2,), (), (1,))
    with pytest.raises(InputError, match="no foreground pixel"):
        log_gap_split([0, 0])
    with pytest.raises(InputError, match="at least 2"):
        log_gap_split([7])


def test_thirds_split_by_rank():
    # shares 50, 20, 15, 8, 5, 2 %: ranks cut 2 / 2 / 2 whatever the gaps
    s = thirds_split([8, 50, 2, 20, 5, 15])
    assert (s.head, s.medium, s.tail, s.source) == ((2, 4), (6, 1), (5, 3), "thirds")
    # seven classes: head and medium take the extra class; an empty class is ranked last
    s = thirds_split([40, 30, 10, 9, 6, 5, 0])
    assert (s.head, s.medium, s.tail) == ((1, 2, 3), (4, 5), (6, 7))
    # C = 2: head + tail, no medium
    s = thirds_split([1, 9])
    assert (s.head, s.medium, s.tail) == ((2,), (), (1,))


def test_user_split_is_checked():
    s = parse_split_text("2/ /1,3", 3)
    assert _groups(s) == ((2,), (), (1, 3)) and s.source == "user"
    for bad, words in (("1/2/2", "exactly once"), ("/1,2/3", "head and tail"), ("1/2", "e.g.")):
        with pytest.raises(InputError, match=words):
            parse_split_text(bad, 3)


def test_label_split_remaps_to_the_decoders_classes():
    y = torch.tensor([[[0, 1, 2, 3, -1]]])
    assert split_labels(y, (3, 1), 3).tolist() == [[[0, 2, 0, 1, -1]]]
    assert split_labels(y, (2,), 3).tolist() == [[[0, 0, 1, 0, -1]]]


def test_logit_stitching_background_mean_and_classes_from_their_decoder():
    head = torch.tensor([[0.0, 5.0]]).reshape(1, 2, 1, 1)  # bg, class 2
    tail = torch.tensor([[2.0, 1.0, 3.0]]).reshape(1, 3, 1, 1)  # bg, class 1, class 3
    out = stitch_logits([head, tail], [(2,), (1, 3)], 3)
    assert out.flatten().tolist() == [1.0, 1.0, 5.0, 3.0]
    assert int(out.argmax(1)) == 2


def test_decoder_parameter_counts_and_dfam_attention():
    split = Split((1,), (2,), (3,))
    net = DCANet(4, split, 3).eval()
    for g, blocks in DECODER_BLOCKS.items():
        got = sum(p.numel() for p in net.decoders[g].parameters())
        assert got == decoder_parameters(4, blocks, 2)
    sizes = [sum(p.numel() for p in net.decoders[g].parameters()) for g in DECODER_BLOCKS]
    assert sizes[0] < sizes[1] < sizes[2]
    assert net.decoders["head"].stages[0].block[0].dilation == (2, 2)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.attention.shape == (2, 3, 32, 32) and out.aggregated.shape == (2, 4, 32, 32)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(2, 32, 32))
    assert out.decoders["medium"].shape[1] == 2
    # The averaging ablation: A = 1/3 everywhere, no DFAM parameters, same decoders.
    avg = DCANet(4, split, 3, fusion="average").eval()
    assert sum(p.numel() for p in avg.dfam.parameters()) == 0
    assert sum(p.numel() for p in net.dfam.parameters()) > 0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = avg(x)
        feats = [torch.randn(1, 4, 8, 8) for _ in range(3)]
        up = torch.randn(1, 4, 8, 8)
        mixed, att = avg.dfam[0](feats, up)
    torch.testing.assert_close(a.attention, torch.full((1, 3, 32, 32), 1 / 3))
    torch.testing.assert_close(mixed, up + (feats[0] + feats[1] + feats[2]) / 3)
    with pytest.raises(ValueError, match="fusion"):
        DCANet(4, split, 3, fusion="max")
    # C = 2: no medium decoder, attention over two experts.
    two = DCANet(4, Split((1,), (), (2,)), 2)
    assert set(two.decoders) == {"head", "tail"} and two.dfam[-1].attn.out_channels == 2


THREE = ClassTable.from_names(["background", "benign", "malignant"]).to_list()


def _config(**kw):
    base = dict(
        family="dca",
        width=4,
        iterations=2,
        labeled_batch=1,
        unlabeled_batch=1,
        device="cpu",
        threads=1,
        checkpoint_every=2,
        geometry=Geometry(input_size=32).to_dict(),
        classes=THREE,
    )
    return TrainConfig(**base | kw)


def _data(seed=5):
    images, ids = synthetic_tiles(3, size=32, seed=seed)
    # class 1 large, class 2 one small gland: the log-gap puts 2 in the tail
    masks = [np.where(m == 1, 2, np.where(m > 1, 1, 0)).astype(np.uint8) for m in ids]
    return TrainingSet(images[:2], masks[:2], images[2:]), images


def test_dca_trains_checkpoints_and_predicts(tmp_path):
    data, images = _data()
    tr = Trainer(_config(), data, tmp_path / "run")
    tr.prefetch = False
    split = tr.config.dca_split
    assert split["source"] == "log-gap" and sorted(split["head"] + split["tail"]) == [1, 2]
    assert tr.run() == "done"
    keys = set(tr.history[-1]["losses"])
    assert {"sup_head", "sup_tail", "sup_aggregated", "unsup_aggregated"} <= keys
    loaded = load_model(tmp_path / "run")
    fam = loaded.family
    assert fam.name == "dca" and fam.split == {g: split[g] for g in ("head", "medium", "tail")}
    pred = Predictor(loaded, PredictOptions(experts=True)).predict_image(images[0])
    # The inference copy (batch norm folded, phase kernels) computes the same function.
    plain, fast = (
        Predictor(loaded, PredictOptions(precision="fp32", optimize=o)).predict_image(images[0])
        for o in (False, True)
    )
    np.testing.assert_allclose(plain["prob_2"], fast["prob_2"], atol=1e-4)
    maps = set(fam.output_maps()) | set(fam.output_maps(True))
    assert maps == {"prob", "prob_1", "prob_2", "decoder_head", "decoder_tail",
                    "attention_head", "attention_tail"}  # fmt: skip
    assert maps <= set(pred) and maps <= set(fam.styles()) and maps <= set(fam.layer_names())
    np.testing.assert_allclose(pred["attention_head"] + pred["attention_tail"], 1.0, atol=2e-2)
    assert pred["classes"].shape == images[0].shape[:2]
    assert fam.label_maps()["classes"][2] == "malignant"

    write_pyramid(tmp_path / "s.tif", images[0], levels=1, tile=16)
    with open_slide(tmp_path / "s.tif") as slide:
        written = predict_slide(Predictor(loaded), slide, tmp_path / "out", "s")
    assert {"mask", "prob", "prob_1", "prob_2", "instances", "classes"} <= set(written)

    assert tifffile.imread(written["classes"]).dtype == np.uint8


def test_dca_user_split_and_refusals(tmp_path):
    data, _ = _data(6)
    tr = Trainer(_config(dca_split={"head": [2], "tail": [1]}), data, tmp_path / "u")
    assert tr.config.dca_split["source"] == "user" and tr.config.dca_split["head"] == [2]
    tr.close()
    with pytest.raises(InputError, match="needs at least 2 foreground classes"):
        Trainer(_config(classes=None), data, tmp_path / "b")
    assert get_family("dca").split is None


def test_cli_trains_dca_and_evaluates_per_class(tmp_path, capsys):

    data, images = _data(7)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(root / "images" / f"t{i}.png")
        if i < 2:
            Image.fromarray(data.labeled_masks[i]).save(root / "masks" / f"t{i}.png")
    write_classes(root, ClassTable.from_names(["background", "benign", "malignant"]))
    common = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--family", "dca", "--iterations", "2"]
    assert main([*args, "--dca-split", "1//2", "--out", str(run), *common]) == 0
    _, err = capsys.readouterr()
    assert "DCA b=4, head [1] / medium [] / tail [2]" in err
    # The ablations: the thirds rule and averaging, stored in the run and used at load.
    abl = tmp_path / "abl"
    extra = ["--dca-split", "thirds", "--dca-fusion", "average"]
    assert main([*args, *extra, "--out", str(abl), *common]) == 0
    capsys.readouterr()
    cfg = json.loads((abl / "config.json").read_text())
    assert cfg["dca_split"]["source"] == "thirds" and cfg["dca_fusion"] == "average"
    assert cfg["lr"] == 0.05  # no --lr: DCA's own default (Semi-MoE's is 0.5)
    assert load_model(abl).model.dfam[0].fusion == "average"
    out_json = tmp_path / "m.json"
    assert main(["evaluate", str(run), "--data", str(root), "--json", str(out_json)]) == 0
    out, _ = capsys.readouterr()
    assert "malignant" in out and "tail mean" in out and "Object F1" in out
    m = json.loads(out_json.read_text())
    assert {"dice[benign]", "dice_head_mean", "dice_tail_mean", "dice_pooled"} <= set(m)
    assert m["split"] == {"head": [1], "medium": [], "tail": [2]}
    ev = ["evaluate", str(run), "--data", str(root), "--json", str(out_json)]
    assert main([*ev, "--split", "2//1"]) == 0
    capsys.readouterr()
    assert json.loads(out_json.read_text())["split"]["head"] == [2]
    # A binary data folder is refused for DCA in one line.
    (root / "classes.json").unlink()
    assert main([*args, "--out", str(tmp_path / "r2"), *common]) != 0
    _, err = capsys.readouterr()
    assert "needs at least 2 foreground classes" in err


def test_bench_family_reports_the_ratio():

    r = family_bench("dca", width=4, repeats=1, tile=32, device="cpu", log=lambda s: None)
    assert r["ratio_to_semimoe"] > 0 and r["ratio_to_semimoe_paired_median"] > 0
    assert r["parameters_dca"] < r["parameters_semimoe"]
