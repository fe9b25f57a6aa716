"""Stain: HED-space jitter (augmentation) and Macenko normalisation to a reference image.

Both work in optical density OD = -log10((I + 1) / 256) (Beer-Lambert: OD is linear in the
stain amounts). HED jitter follows Tellez et al. 2018: each haematoxylin / eosin / DAB
channel of skimage's colour deconvolution becomes h * (1 + a) + b, a, b ~ U(-s, s).
Macenko (2009): the two stain vectors are the extreme angles of the tissue's OD in the
plane of its two main directions; concentrations are scaled so that their 99th percentile
matches the reference's. Own implementation (about 40 lines of numpy) instead of
torchstain: the same algorithm without a dependency or a torch-version coupling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import hed2rgb, rgb2hed

from .errors import InputError

#: skimage's ``rgb2hed`` divides the natural-log optical density by -ln(1e-6)
_SKIMAGE_OD = -float(np.log(1e-6))


def hed_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.05) -> np.ndarray:
    """uint8 RGB -> uint8 RGB with each HED channel scaled by 1 + U(-s, s) and shifted by
    U(-s, s) in optical density (natural log, Tellez's units); ``strength`` 0 returns the
    image unchanged. Draws 6 numbers from ``rng`` (reproducible with a seeded generator).

    skimage's HED is that optical density divided by -ln(1e-6) = 13.8, so the shift is
    scaled down by it: a shift of s in skimage's units is 13.8x Tellez's and at 0.05
    moved an H&E tile by 25-75 grey levels (measured), several times a real lab-to-lab
    difference, and cost a GlaS-trained model 20-40 Dice points."""
    if strength <= 0:
        return image
    a = rng.uniform(-strength, strength, 3)
    b = rng.uniform(-strength, strength, 3) / _SKIMAGE_OD
    hed = rgb2hed(image)
    rgb = hed2rgb(hed * (1 + a) + b)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def optical_density(image: np.ndarray) -> np.ndarray:
    return -np.log10((image.astype(np.float64) + 1.0) / 256.0)


@dataclass(frozen=True)
class StainBasis:
    """Macenko's two stain OD vectors (columns of ``vectors``, haematoxylin first) and the
    99th-percentile concentrations of the image they came from."""

    vectors: np.ndarray  # (3, 2)
    max_concentration: np.ndarray  # (2,)

    def to_dict(self) -> dict:
        return {
            "vectors": np.asarray(self.vectors, float).tolist(),
            "max_concentration": np.asarray(self.max_concentration, float).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StainBasis:
        """A stored basis, checked (a run's config is user-editable)."""
        try:
            v = np.asarray(d["vectors"], np.float64)
            c = np.asarray(d["max_concentration"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise InputError(
                "stain reference: expected vectors (3x2) and max_concentration (2)"
            ) from None
        if (
            v.shape != (3, 2)
            or c.shape != (2,)
            or not (np.isfinite(v).all() and np.isfinite(c).all())
        ):
            raise InputError("stain reference: expected vectors (3x2) and max_concentration (2)")
        return cls(v, c)


def macenko_basis(image: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> StainBasis:
    """The stain basis of an RGB image: OD pixels above ``beta`` (tissue), their plane of
    largest variance, the ``alpha`` / 100 - ``alpha`` percentile angles in it."""
    od = optical_density(image).reshape(-1, 3)
    tissue = od[(od > beta).all(1)]
    if len(tissue) < 10:
        raise InputError("stain normalisation: the image has (almost) no tissue")
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]  # the two largest
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1, v2 = (v1 if v1.sum() >= 0 else -v1), (v2 if v2.sum() >= 0 else -v2)
    # Haematoxylin is the bluer one: more OD in red (absorbs red) than eosin.
    vectors = np.stack([v1, v2], 1) if v1[0] > v2[0] else np.stack([v2, v1], 1)
    conc = _concentrations(od, vectors)
    return StainBasis(vectors, np.percentile(conc, 99, axis=0))


def _concentrations(od: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    c, *_ = np.linalg.lstsq(vectors, od.T, rcond=None)
    return c.T  # (n, 2)


def macenko_normalise(
    image: np.ndarray, reference: StainBasis, beta: float = 0.15, alpha: float = 1.0
) -> np.ndarray:
    """``image`` (uint8 RGB) re-stained with ``reference``'s stain vectors and concentration
    scale (:func:`macenko_basis` of a reference image)."""
    return macenko_apply(image, macenko_basis(image, beta, alpha), reference)


def macenko_apply(image: np.ndarray, own: StainBasis, reference: StainBasis) -> np.ndarray:
    """``image`` re-stained from its stain basis ``own`` (e.g. its whole slide's, so that
    every tile of a slide is mapped alike) to ``reference``'s."""
    od = optical_density(image).reshape(-1, 3)
    conc = _concentrations(od, own.vectors)
    conc *= reference.max_concentration / np.maximum(own.max_concentration, 1e-8)
    out = 256.0 * 10.0 ** (-(conc @ reference.vectors.T)) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(image.shape)


def normalise_or_keep(
    image: np.ndarray, reference: StainBasis, own: StainBasis | None = None
) -> np.ndarray:
    """Stain normalisation as preprocessing: with ``own`` (the slide's basis) or the image's
    own; an image with (almost) no tissue has no basis and is left as it is (glass)."""
    if own is None:
        try:
            own = macenko_basis(image)
        except InputError:
            return image
    return macenko_apply(image, own, reference)


def reference_of(path) -> StainBasis:
    """The stain basis of a reference image file (``train --stain-normalise``)."""
    from .slide import read_image

    image = read_image(path)
    try:
        return macenko_basis(image)
    except InputError:
        raise InputError(f"{path}: the stain reference image has (almost) no tissue") from None
