"""Sparse painting in the core: unknown mask pixels (-1) are left out of every supervised
target and loss, and a mask without them gives exactly today's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.morphology import disk
from skimage.segmentation import find_boundaries
from torch.nn import functional as F

from napari_semimoe.core.data import augment, load_training_set, make_batch, scan_folder
from napari_semimoe.core.families import get_family
from napari_semimoe.core.losses import boundary_dice_loss, sdf_loss, seg_dice_loss
from napari_semimoe.core.targets import (
    IGNORE,
    UNKNOWN,
    boundary_band,
    make_targets,
    signed_distance,
    with_unknown,
)

# ----------------------------------------------------------------------------- hand-computed


def test_masked_seg_dice_by_hand():
    # Logits 0 -> p = 0.5 for both classes. Pixel 1 is a gland, pixel 2 unknown.
    # class 0: inter 0, denom 0.25 + 0 -> 1 - 1/1.25 = 0.2
    # class 1: inter 0.5, denom 0.25 + 1 -> 1 - 2/2.25 = 1/9
    logits = torch.zeros(1, 2, 1, 2)
    loss = seg_dice_loss(logits, torch.tensor([[[1, IGNORE]]]))
    assert loss.item() == pytest.approx((0.2 + 1 / 9) / 2, abs=1e-6)
    # Same as the one known pixel alone; counting the unknown one as background differs.
    assert loss.item() == pytest.approx(
        seg_dice_loss(logits[..., :1], torch.tensor([[[1]]])).item()
    )
    assert seg_dice_loss(logits, torch.tensor([[[1, 0]]])).item() != pytest.approx(loss.item())


def test_masked_boundary_dice_by_hand():
    # class 0: tp 0, fp 0.5, fn 0 -> ~1;  class 1: tp 0.5, fp 0, fn 0.5 -> 1 - 1/1.5 = 1/3
    loss = boundary_dice_loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[1, IGNORE]]]))
    assert loss.item() == pytest.approx((1 + 1 / 3) / 2, abs=1e-6)


def test_masked_sdf_mse_by_hand():
    # tanh(0) = 0; known targets 0.5 and -1 -> (0.25 + 1) / 2, the NaN pixel left out.
    target = torch.tensor([[[[0.5, float("nan"), -1.0]]]])
    assert sdf_loss(torch.zeros(1, 1, 1, 3), target).item() == pytest.approx(0.625)


def test_unknown_pixels_get_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    sdf_logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    t = torch.randint(0, 2, (2, 8, 8))
    t[:, :, 5:] = IGNORE
    y = torch.rand(2, 1, 8, 8)
    y[..., 5:] = float("nan")
    (seg_dice_loss(logits, t) + boundary_dice_loss(logits, t) + sdf_loss(sdf_logits, y)).backward()
    assert logits.grad[..., 5:].abs().max() == 0 and logits.grad[..., :5].abs().max() > 0
    assert sdf_logits.grad[..., 5:].abs().max() == 0 and sdf_logits.grad[..., :5].abs().max() > 0


# ----------------------------------------------------------------------------- unchanged


def _old_seg_dice(logits, target, smooth=1.0):
    p = torch.softmax(logits.float(), dim=1)
    t = F.one_hot((target > 0).long(), num_classes=2).permute(0, 3, 1, 2).float()
    inter = (p * t).sum(dim=(2, 3))
    denom = (p * p).sum(dim=(2, 3)) + (t * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def _old_bnd_dice(logits, target, eps=1e-8):
    p = torch.softmax(logits.float(), dim=1)
    t = F.one_hot((target > 0).long(), num_classes=2).permute(0, 3, 1, 2).float()
    tp = (p * t).sum(dim=(2, 3))
    fp = (p * (1 - t)).sum(dim=(2, 3))
    fn = ((1 - p) * t).sum(dim=(2, 3))
    return (1.0 - (2.0 * tp + eps) / (2.0 * tp + fp + fn + eps)).mean()


def _old_sdf(mask):
    fg = np.asarray(mask) > 0
    d_in = ndi.distance_transform_edt(fg)
    d_out = ndi.distance_transform_edt(~fg)
    sdf = d_in / d_in.max() - d_out / d_out.max()
    sdf[find_boundaries(fg, mode="inner")] = 0.0
    return sdf.astype(np.float32)


def _old_band(mask):
    fg = np.asarray(mask) > 0
    return (ndi.binary_dilation(fg, structure=disk(2).astype(bool)) & ~fg).astype(np.uint8)


def _two_glands(dtype=np.uint8) -> np.ndarray:
    m = np.zeros((32, 32), dtype)
    m[4:12, 4:14] = 1
    m[18:28, 16:26] = 2
    return m


def test_without_unknown_pixels_targets_and_losses_are_exactly_todays():
    m = _two_glands()
    for mask in (m, m.astype(np.int32)):  # a signed mask without -1 is no different
        t = make_targets(mask)
        assert t["seg"].dtype == np.uint8 and np.array_equal(t["seg"], (m > 0).astype(np.uint8))
        assert np.array_equal(t["sdf"], _old_sdf(m))
        assert t["bnd"].dtype == np.uint8 and np.array_equal(t["bnd"], _old_band(m))
    torch.manual_seed(1)
    logits, s = torch.randn(2, 2, 32, 32), torch.randn(2, 1, 32, 32)
    tgt = torch.from_numpy(np.stack([m, m[::-1]]).astype(np.int64))
    assert torch.equal(seg_dice_loss(logits, tgt), _old_seg_dice(logits, tgt))
    assert torch.equal(boundary_dice_loss(logits, tgt), _old_bnd_dice(logits, tgt))
    y = torch.from_numpy(np.stack([_old_sdf(m)] * 2)[:, None])
    assert torch.equal(sdf_loss(s, y), F.mse_loss(torch.tanh(s), y))


# ----------------------------------------------------------------------------- targets


def _sparse() -> tuple[np.ndarray, np.ndarray]:
    """Gland 1 painted with a 3 px ring of background; the rest (with gland 2) unknown."""
    full = _two_glands(np.int32)
    ring = ndi.binary_dilation(full == 1, iterations=3)
    sparse = np.full(full.shape, UNKNOWN, np.int32)
    sparse[ring] = 0
    sparse[full == 1] = 1
    return full, sparse


def test_targets_ignore_what_the_user_did_not_paint():
    full, sparse = _sparse()
    unknown = sparse == UNKNOWN
    t = make_targets(sparse)
    assert np.array_equal(t["seg"][unknown], np.full(unknown.sum(), IGNORE))
    assert np.array_equal(t["seg"][~unknown], (sparse[~unknown] > 0).astype(np.int16))
    # SDF inside the painted gland is exact; outside only where no hidden gland can be nearer.
    sdf = signed_distance(sparse)
    gland = full == 1
    d_in = ndi.distance_transform_edt(gland)
    assert np.allclose(
        sdf[gland & ~find_boundaries(gland, mode="inner")],
        (d_in / d_in.max())[gland & ~find_boundaries(gland, mode="inner")],
    )
    assert np.isnan(sdf[unknown]).all()
    known_bg = ~np.isnan(sdf) & (sparse == 0)
    assert known_bg.any() and (sdf[known_bg] < 0).all() and sdf[known_bg].min() == -1.0
    d_gland = ndi.distance_transform_edt(~gland)
    d_unknown = ndi.distance_transform_edt(~unknown)
    assert np.array_equal(known_bg, (sparse == 0) & (d_gland <= d_unknown))
    # Boundary: the band around the painted gland is 1, anything else near unknown ignored.
    b = boundary_band(sparse)
    assert np.array_equal(b == 1, _old_band(gland) == 1)
    far = ~ndi.binary_dilation(unknown, structure=disk(2).astype(bool))
    assert (b[far & (b != 1)] == 0).all() and (b[unknown & (_old_band(gland) == 0)] == IGNORE).all()
    # The family's targets (what the trainer uses) are the same.
    fam = get_family("semimoe").targets(sparse, type("C", (), {"per_instance_boundary": False}))
    for k in ("seg", "bnd"):
        assert np.array_equal(fam[k], t[k])
    assert np.array_equal(np.isnan(fam["sdf"]), np.isnan(t["sdf"]))


def test_augmentation_keeps_unknown_pixels_nearest():
    _, sparse = _sparse()
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 3), np.uint8)
    for _ in range(20):
        _, m = augment(rng, image, sparse, 24, crop_p=1.0)
        assert m.dtype == np.int32 and set(np.unique(m)) <= {UNKNOWN, 0, 1}
        assert (m == UNKNOWN).any()
    _, y = make_batch(rng, [image], [sparse], [0, 0], 24, (0.5,) * 3, (0.2,) * 3)
    seg = get_family("semimoe").task("seg").collate(y["seg"])
    assert seg.dtype == np.int64 and (seg == IGNORE).any() and set(np.unique(seg)) <= {-1, 0, 1}


# ----------------------------------------------------------------------------- data folders


def test_unknown_value_of_a_data_folder(tiny_dataset: Path, tmp_path: Path, capsys):
    from PIL import Image

    from napari_semimoe.cli import main
    from napari_semimoe.core.data import Geometry

    mpath = tiny_dataset / "masks" / "img_0.png"
    m = np.array(Image.open(mpath))
    m[:, 40:] = 255  # right half unpainted
    Image.fromarray(m).save(mpath)
    assert np.array_equal(with_unknown(m, 255) == UNKNOWN, m == 255)
    items = scan_folder(tiny_dataset)
    labeled = [it for it in items if it.mask_path is not None]
    g = Geometry(input_size=32, tile=32)
    known = load_training_set(labeled, [], g)
    assert known.labeled_masks[0].max() == 255  # without the option 255 is a gland id
    ts = load_training_set(labeled, [], g, unknown_value=255)
    assert (ts.labeled_masks[0] == UNKNOWN).any() and not (ts.labeled_masks[1] < 0).any()
    out = tmp_path / "run"
    rc = main(
        ["train", "--data", str(tiny_dataset), "--out", str(out), "--width", "4"]
        + ["--input-size", "32", "--threads", "1", "--iterations", "2", "--unknown-value", "255"]
    )
    capsys.readouterr()
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["unknown_value"] == 255
    rc = main(["train", "--resume", str(out), "--iterations", "3", "--unknown-value", "7"])
    assert rc == 2 and "--unknown-value" in capsys.readouterr().err


# ----------------------------------------------------------------------------- project tiles


def test_tile_choice_and_background_brush_in_the_project(tmp_path: Path):
    from napari_semimoe.core.errors import InputError
    from napari_semimoe.core.project import Project
    from napari_semimoe.core.sparse import (
        BACKGROUND_LABEL,
        gland_like_unpainted,
        next_label,
        resolve_unpainted,
        training_mask,
    )

    # A project written before sparse painting: its tiles load as "background".
    old = {
        "scale": 1.0,
        "tile": 64,
        "images": [
            {
                "name": "a",
                "id": "i1",
                "tiles": [{"y": 0, "x": 0, "h": 64, "w": 64, "kind": "train", "id": "t1"}],
            }
        ],
    }
    (tmp_path / "project.json").write_text(json.dumps(old))
    p = Project(tmp_path)
    (tile,) = p.state.images[0].tiles
    assert tile.unpainted == "background"
    tile.unpainted = "unknown"
    p.save()
    assert Project(tmp_path).state.images[0].tiles[0].unpainted == "unknown"
    old["images"][0]["tiles"][0]["unpainted"] = "maybe"
    (tmp_path / "project.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="unpainted 'maybe'"):
        Project(tmp_path)
    # The background brush: "auto" follows it; it is 0 in the cut; it is never a gland id.
    crop = np.zeros((6, 6), np.uint16)
    crop[1:3, 1:3] = 4
    assert resolve_unpainted("auto", crop) == "background"
    assert training_mask(crop, "background") is crop  # unchanged, as before
    crop[5, :] = BACKGROUND_LABEL
    assert resolve_unpainted("auto", crop) == "unknown"
    m = training_mask(crop, "unknown")
    assert (m[5] == 0).all() and (m[1:3, 1:3] == 4).all() and (m[0] == UNKNOWN).all()
    assert (training_mask(crop, "background")[5] == 0).all()
    assert next_label(crop) == 5 and next_label(np.zeros((2, 2), np.uint16)) == 1
    # The warning's colour rule: an unpainted dark blob like the painted one is counted.
    image = np.full((48, 48, 3), 230, np.uint8)
    image[5:15, 5:15] = image[30:40, 30:40] = (90, 40, 120)
    labels = np.zeros((48, 48), np.uint16)
    labels[5:15, 5:15] = 1
    assert gland_like_unpainted(image, labels) == 1
    labels[30:40, 30:40] = 2
    assert gland_like_unpainted(image, labels) == 0


def test_a_moved_tile_keeps_its_unpainted_choice(tmp_path: Path):
    from napari_semimoe.core.project import Project
    from napari_semimoe.plugin.common import rect
    from napari_semimoe.plugin.session import Session

    class Layers:
        rects: list = []

        def labels(self, create=False):
            return None

        def tile_rects(self):
            return self.rects

    s = Session(Layers())
    p = Project(tmp_path / "proj")
    s.set_project(p)
    s.set_entry(p.entry("slide"))
    s.layers.rects = [rect(0, 0, 32, 32), rect(100, 100, 32, 32)]
    s.sync_tiles()
    s.entry.train_tiles()[0].unpainted = "unknown"
    s.layers.rects = [rect(4, 6, 32, 32), rect(100, 100, 32, 32), rect(300, 0, 8, 8)]
    s.sync_tiles()  # the first tile moved: a new tile, with the choice it had
    assert [t.unpainted for t in s.entry.train_tiles()] == ["unknown", "auto", "auto"]
    assert Project(p.root).state.images[0].tiles[0].unpainted == "unknown"
