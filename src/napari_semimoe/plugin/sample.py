"""The samples: real H&E (six EBHI-Seg biopsies, three of them annotated; CC BY 4.0, shipped
in ``sample_data/`` with its attribution) that a pathologist sees first, and a generated
H&E-like slide with two annotated training tiles that tests and benchmarks use (no data, any
size). Each opens as the slide, its annotations (Labels) and its training tiles (Shapes), so
a project adopts them as if they had been painted."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
from scipy import ndimage as ndi

from .layers import LABELS_LAYER, TILE_STYLE, TILES_LAYER

SAMPLE_SIZE = 1536
SAMPLE_SCALE = 2.0  # working scale used by the sample: glands ~ 40-80 px at working scale
SAMPLE_TILES = ((128, 160), (832, 928))  # level-0 (y, x) of two 512 px training tiles
TILE_NATIVE = 512


def synthetic_he(size: int = SAMPLE_SIZE, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 H&E-like image and its gland instance mask (uint16)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    # Tissue region: a large blob; outside is glass.
    tissue = ndi.gaussian_filter(rng.random((size // 16, size // 16)), 3)
    tissue = np.kron(tissue, np.ones((16, 16)))[:size, :size]
    tissue = ndi.gaussian_filter(tissue, 8) > np.quantile(tissue, 0.25)
    glands = np.zeros((size, size), np.uint16)
    lumen = np.zeros((size, size), bool)
    k = 0
    for _ in range(400):
        cy, cx = rng.integers(60, size - 60, 2)
        if not tissue[cy, cx]:
            continue
        ry, rx = rng.uniform(35, 85), rng.uniform(35, 85)
        th = rng.uniform(0, np.pi)
        dy, dx = (
            yy[cy - 100 : cy + 100, cx - 100 : cx + 100] - cy,
            xx[cy - 100 : cy + 100, cx - 100 : cx + 100] - cx,
        )
        u = (dy * np.cos(th) + dx * np.sin(th)) / ry
        v = (-dy * np.sin(th) + dx * np.cos(th)) / rx
        wobble = 1 + 0.08 * np.sin(5 * np.arctan2(u, v) + rng.uniform(0, 6))
        inside = (u**2 + v**2) < wobble**2
        sl = (slice(cy - 100, cy + 100), slice(cx - 100, cx + 100))
        if (glands[sl][inside] > 0).any() or not tissue[sl][inside].all():
            continue
        k += 1
        glands[sl][inside] = k
        lumen[sl] |= (u**2 + v**2) < (0.45 * wobble) ** 2
    fg = glands > 0
    # Colours: stroma pink, gland epithelium purple, lumen pale, nuclei dark dots, glass white.
    img = np.empty((size, size, 3), np.float32)
    img[:] = (245, 243, 246)
    stroma = np.array([232, 170, 205], np.float32)
    epi = np.array([170, 90, 170], np.float32)
    lum = np.array([240, 225, 240], np.float32)
    img[tissue] = stroma
    img[fg] = epi
    img[lumen & fg] = lum
    nuclei = (rng.random((size, size)) < 0.004) & tissue
    nuclei = ndi.binary_dilation(nuclei, iterations=2)
    ring = fg & ~lumen & ndi.binary_dilation(lumen, iterations=12)
    nuclei |= ring & (rng.random((size, size)) < 0.02)
    img[nuclei] = img[nuclei] * 0.45 + np.array([60, 20, 110]) * 0.55
    texture = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)[..., None] * 18
    img = ndi.gaussian_filter(img + texture * tissue[..., None], (1.0, 1.0, 0))
    return np.clip(img, 0, 255).astype(np.uint8), glands


def sample_annotations(mask: np.ndarray) -> np.ndarray:
    """Annotations as a user would have painted them: only inside the training tiles."""
    ann = np.zeros_like(mask)
    for y, x in SAMPLE_TILES:
        sl = (slice(y, y + TILE_NATIVE), slice(x, x + TILE_NATIVE))
        ann[sl] = mask[sl]
    return ann


#: The real sample's layer names (the slide's is what the project calls the image).
REAL_SAMPLE_NAME = "EBHI-Seg colon biopsies"
CATEGORIES_LAYER = "diagnostic categories"
#: EBHI-Seg is at 400x: glands are 50-200 px wide at full resolution, the model's range.
REAL_SAMPLE_SCALE = 1.0


def real_sample() -> tuple[np.ndarray, np.ndarray, dict]:
    """(RGB mosaic, gland mask as bool, the mosaic's description) from the package data."""
    from PIL import Image

    files = resources.files(__package__) / "sample_data"
    with (files / "ebhi_mosaic.png").open("rb") as f:
        image = np.asarray(Image.open(f).convert("RGB"))
    with (files / "ebhi_glands.png").open("rb") as f:
        glands = np.asarray(Image.open(f).convert("L")) > 127
    doc = json.loads((files / "ebhi_sample.json").read_text())
    return image, glands, doc


def make_real_sample_data():
    """npe2 sample-data provider: six real biopsies, the three annotated ones as training
    tiles with their expert glands (one id per connected gland), and each category's name."""
    image, glands, doc = real_sample()
    ann = np.zeros(glands.shape, np.uint16)
    rects, points, names = [], [], []
    for im in doc["images"]:
        y, x, n = im["y"], im["x"], im["size"]
        points.append((y - 4, x))  # the name sits in the glass above the image
        names.append(im["category"])
        if not im["annotated"]:
            continue
        sl = (slice(y, y + n), slice(x, x + n))
        ids, _ = ndi.label(glands[sl])
        ann[sl] = np.where(ids > 0, ids + ann.max(), 0)
        rects.append(np.array([[y, x], [y, x + n], [y + n, x + n], [y + n, x]], float))
    meta = {"semimoe_sample": "ebhi", "semimoe_scale": REAL_SAMPLE_SCALE}
    return [
        (image, {"name": REAL_SAMPLE_NAME, "rgb": True, "metadata": meta}, "image"),
        (ann, {"name": LABELS_LAYER, "opacity": 0.5}, "labels"),
        (rects, {"name": TILES_LAYER, "shape_type": "rectangle", **TILE_STYLE}, "shapes"),
        (
            np.asarray(points, float),
            {
                "name": CATEGORIES_LAYER,
                "size": 0,
                "features": {"category": names},
                "text": {
                    "string": "{category}",
                    "size": 10,
                    "color": "black",
                    "anchor": "upper_left",
                },
            },
            "points",
        ),
    ]


def make_sample_data():
    """npe2 sample-data provider: slide, annotations (Labels) and training tiles (Shapes)."""
    image, mask = synthetic_he()
    ann = sample_annotations(mask)
    rects = [
        np.array(
            [
                [y, x],
                [y, x + TILE_NATIVE],
                [y + TILE_NATIVE, x + TILE_NATIVE],
                [y + TILE_NATIVE, x],
            ],
            float,
        )
        for y, x in SAMPLE_TILES
    ]
    meta = {"semimoe_sample": True, "semimoe_scale": SAMPLE_SCALE}
    return [
        (image, {"name": "sample H&E slide", "rgb": True, "metadata": meta}, "image"),
        (ann, {"name": "annotations", "opacity": 0.5}, "labels"),
        (
            rects,
            {
                "name": "training tiles",
                "shape_type": "rectangle",
                "edge_color": "yellow",
                "face_color": "transparent",
                "edge_width": 6,
            },
            "shapes",
        ),
    ]
