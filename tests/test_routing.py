"""dMoE attribute routing: routers share the experts, unknown or new attributes use the
"any" router, and attributes.csv is read with one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_semimoe.core.attributes import attributes_of, read_attributes, seen_values
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.families.moek import MoEK
from napari_semimoe.core.routing import ANY, AttributeMoE, assign_routes


def _block():
    torch.manual_seed(0)
    return AttributeMoE(8, ["glas", "ebhi"], n_experts=4, k=2)


def test_unknown_and_new_attributes_use_the_any_router():
    b = _block()
    assert b.routers == ["glas", "ebhi", ANY]
    assert b.route("glas") == 0 and b.route("ebhi") == 1
    assert b.route(None) == 2 and b.route("new-site") == 2
    assert assign_routes(["ebhi", None, "x"], b).tolist() == [1, 2, 2]
    hidden = assign_routes(["glas"] * 1000, b, np.random.default_rng(0), any_fraction=0.1)
    assert 60 < int((hidden == 2).sum()) < 140  # ~10 % trained as "any"
    again = assign_routes(["glas"] * 1000, b, np.random.default_rng(0), any_fraction=0.1)
    assert torch.equal(hidden, again)


def test_routers_share_the_experts_and_only_the_own_router_learns():
    b = _block().eval()
    h = torch.randn(2, 8, 4, 4)
    out_a = b(h, torch.tensor([0, 0]))
    out_b = b(h, torch.tensor([1, 1]))
    out_none = b(h, None)
    assert out_a.shape == h.shape
    assert not torch.allclose(out_a, out_b)  # other router, other weights
    assert torch.allclose(out_none, b(h, torch.tensor([2, 2])))
    g = b.gates(h, torch.tensor([0, 1]))
    assert ((g > 0).sum(-1) == 2).all()  # top-2 of 4 per pixel
    out_a.sum().backward()
    # The experts are shared: the same parameters get the gradient whichever router chose
    # them; the routers' weights are per attribute, only router 0 learnt from this image.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.experts.parameters())
    assert b.w.grad[0].abs().sum() > 0
    assert b.w.grad[1].abs().sum() == 0 and b.w.grad[2].abs().sum() == 0
    n_expert_params = sum(p.numel() for p in b.experts.parameters())
    assert n_expert_params == 4 * (8 * 32 + 32 + 32 * 8 + 8)  # 4 experts, not 4 per router


def test_moek_with_attribute_routing_uses_any_when_the_attribute_is_missing():
    torch.manual_seed(0)
    m = MoEK(4, n_experts=2, attribute_values=["glas", "ebhi"]).eval()
    x = torch.randn(2, 3, 32, 32)
    routes = m.route(["glas", "unseen"])
    assert routes.tolist() == [0, 2]
    same = m(x, torch.tensor([2, 2])).gated
    assert torch.allclose(m(x).gated, same)  # no attribute: the "any" router
    assert not torch.allclose(m(x, torch.tensor([0, 0])).gated, same)
    assert MoEK(4, n_experts=2).route(["glas"]) is None  # without routing


def test_attributes_csv(tmp_path):
    p = tmp_path / "attributes.csv"
    p.write_text("name,attribute\ntrain_1.bmp,glas\nebhi_3,ebhi\nx_9,\n")
    table = read_attributes(p)
    assert table == {"train_1": "glas", "ebhi_3": "ebhi"}
    assert attributes_of(["train_1", "x_9", "other"], table) == ["glas", None, None]
    assert seen_values(attributes_of(["ebhi_3", "train_1", "x_9"], table)) == ["ebhi", "glas"]
    for text, words in [
        ("image,site\na,b\n", "first line must be 'name,attribute'"),
        ("name,attribute\na,b,c\n", "line 2: expected 2 columns"),
        ("name,attribute\na,b\na.png,c\n", "line 3: image 'a.png' is listed twice"),
        ("name,attribute\n,b\n", "line 2: empty image name"),
    ]:
        p.write_text(text)
        with pytest.raises(InputError, match=words) as e:
            read_attributes(p)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="no such attributes file"):
        read_attributes(tmp_path / "missing.csv")


def test_the_trainer_routes_each_image_through_its_attributes_router(tmp_path):
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.train import TrainConfig, Trainer

    images, masks = synthetic_tiles(3, size=32, seed=2)
    data = TrainingSet(
        images[:2], masks[:2], images[2:], labeled_attributes=["a", "a"],
        unlabeled_attributes=[None],
    )  # fmt: skip
    cfg = TrainConfig(
        family="moe-k", width=4, experts=2, iterations=2, threads=1, precision="fp32",
        attribute_routing=True, attribute_values=["a", "b"], any_fraction=0.0,
        geometry=Geometry(input_size=32).to_dict(),
    )  # fmt: skip
    tr = Trainer(cfg, data, tmp_path / "run")
    block = tr.model.routing.blocks["4"]
    w0 = block.w.detach().clone()
    assert tr.run() == "done"
    w1, w0 = block.w.detach().flatten(1).double(), w0.flatten(1).double()
    # What is left of each router's change once the weight decay (a shrink along w0) is
    # taken out: "a" (labeled) and "any" (the unknown unlabeled image) learnt, "b" (no
    # image) did not.
    shrink = (w1 * w0).sum(1, keepdim=True) / (w0 * w0).sum(1, keepdim=True)
    learnt = (w1 - shrink * w0).norm(dim=1)
    assert learnt[1] < 1e-6 and learnt[0] > 1e-3 and learnt[2] > 1e-3, learnt


@pytest.mark.parametrize("family", ["semimoe", "dca"])
def test_attribute_routing_is_an_option_of_every_family(tmp_path, family):
    """Semi-MoE's three experts and DCA's encoder get the same shared dMoE blocks; the
    trainer's routes reach them, and a model without routing is today's, weight for weight."""
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.classes import ClassTable
    from napari_semimoe.core.data import Geometry, TrainingSet
    from napari_semimoe.core.families import get_family
    from napari_semimoe.core.routing import routing_of, set_routes
    from napari_semimoe.core.train import TrainConfig, Trainer

    images, masks = synthetic_tiles(3, size=32, seed=4)
    kw = {}
    if family == "dca":
        kw = {"classes": ClassTable.from_names(["background", "a", "b"]).to_list()}
        masks = [np.where(m == 1, 2, np.where(m > 1, 1, 0)).astype(np.uint8) for m in masks]
    data = TrainingSet(
        images[:2], masks[:2], images[2:], labeled_attributes=["a", "b"],
        unlabeled_attributes=["a"],
    )  # fmt: skip
    cfg = TrainConfig(
        family=family, width=4, iterations=2, threads=1, precision="fp32",
        attribute_routing=True, attribute_values=["a", "b"], any_fraction=0.0,
        geometry=Geometry(input_size=32).to_dict(), **kw,
    )  # fmt: skip
    tr = Trainer(cfg, data, tmp_path / "run")
    r = routing_of(tr.model)
    assert r is not None and r.routers == ["a", "b", ANY]
    before = {k: v.detach().clone() for k, v in r.named_parameters()}
    assert tr.run() == "done"
    assert any(not torch.equal(before[k], v) for k, v in r.named_parameters())
    # The routes change the output; no route is the "any" router.
    model = tr.model.eval()
    x = torch.randn(1, 3, 32, 32)
    fam = get_family(family).configure(tr.config)
    outs = {}
    with torch.no_grad():
        for route in (0, 1, None, 2):
            set_routes(model, route)
            outs[route] = fam.infer(model, x, False, False).maps["prob"]
    assert not torch.allclose(outs[0], outs[1])
    torch.testing.assert_close(outs[None], outs[2])
    # Without routing: no routing module, so weights drawn as before the option existed.
    plain = TrainConfig(**{**cfg.__dict__, "attribute_routing": False})
    assert routing_of(get_family(family).configure(plain).build(plain)) is None
    tr.close()


def test_semimoe_routing_refuses_the_split_passes():
    from napari_semimoe.core.train import TrainConfig

    for kw in ({"fast": False}, {"batch_norm": "per-half"}):
        with pytest.raises(InputError, match="one pooled pass"):
            TrainConfig(attribute_routing=True, **kw).validate()
    TrainConfig(attribute_routing=True).validate()  # the default pooled pass: fine


def test_cli_attributes_train_predict_evaluate(tmp_path, capsys):
    """--attributes in train (routers per seen value), predict (an unseen value uses "any"
    and says so) and evaluate (per-attribute Dice / IoU, ES-Dice / ES-IoU)."""
    import json

    from PIL import Image

    from napari_semimoe.cli import main
    from napari_semimoe.core.bench import synthetic_tiles
    from napari_semimoe.core.inference import load_model
    from napari_semimoe.core.routing import routing_of

    images, masks = synthetic_tiles(4, size=32, seed=3)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (im, m) in enumerate(zip(images, masks)):
        Image.fromarray(im).save(root / "images" / f"t{i}.png")
        Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"t{i}.png")
    csv = tmp_path / "attributes.csv"
    csv.write_text("name,attribute\nt0.png,glas\nt1,glas\nt2,ebhi\nt3,\n")
    run = tmp_path / "run"
    common = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    args = ["train", "--data", str(root), "--family", "moe-k", "--experts", "2"]
    args += ["--iterations", "2", "--labeled", "2", "--attributes", str(csv)]
    assert main([*args, "--attribute-routing", "--out", str(run), *common]) == 0
    capsys.readouterr()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["attribute_values"] == ["ebhi", "glas"]
    assert cfg["attributes"] == {"t0": "glas", "t1": "glas", "t2": "ebhi"}
    assert routing_of(load_model(run).model).routers == ["ebhi", "glas", ANY]

    out = tmp_path / "out"
    pred = ["predict", str(run), str(root / "images" / "t3.png"), "--out", str(out)]
    assert main([*pred, "--attribute", "new-lab", "--threads", "1"]) == 0
    _, err = capsys.readouterr()
    assert "t3: attribute 'new-lab' was not seen in training; the 'any' router is used" in err

    js = tmp_path / "m.json"
    ev = ["evaluate", str(run), "--data", str(root), "--attributes", str(csv)]
    assert main([*ev, "--json", str(js), "--threads", "1"]) == 0
    text, _ = capsys.readouterr()
    assert "equity-scaled (ES)" in text and "ebhi" in text
    eq = json.loads(js.read_text())["equity"]
    assert eq["images_per_attribute"] == {"ebhi": 1, "glas": 2}
    assert eq["unknown_attribute_images"] == 1
    d = eq["dice_per_attribute"]
    expect = eq["dice"] / (1 + abs(eq["dice"] - d["ebhi"]) + abs(eq["dice"] - d["glas"]))
    assert math.isclose(eq["es_dice"], expect, rel_tol=1e-9)
    # A model without routing: the attributes are only for the metrics, and it says so.
    plain = tmp_path / "plain"
    assert main([*args, "--out", str(plain), *common]) == 0
    capsys.readouterr()
    assert main(["predict", str(plain), str(root / "images" / "t3.png"), "--out",
                 str(tmp_path / "o2"), "--attribute", "glas", "--threads", "1"]) == 0  # fmt: skip
    _, err = capsys.readouterr()
    assert "no attribute routing" in err
