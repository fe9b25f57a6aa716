"""Image, mask and whole-slide I/O: small tiles and pyramidal TIFF slides behind one lazy API.

Everything the model sees goes through :func:`to_rgb_uint8`, so RGBA, 16-bit and planar
inputs behave the same on every path. Slides are opened lazily (tifffile + zarr) so a
50,000 px pyramid opens in well under a second and only the tiles a region needs are decoded.
User mistakes (missing, unsupported, corrupt, grayscale files, mismatched masks) raise
:class:`~napari_semimoe.core.errors.InputError` with one line that names the file.
Writing lives in :mod:`.tiff_writer`.

Over 500 lines because reading is one trust boundary: the path checks, the PIL and TIFF
decoders (CMYK, planar, pyramids, damaged or decompression-bomb headers) and the lazy
:class:`Slide` share the same one-line errors and size limits (tests monkeypatch
``MAX_PIXELS`` and ``TISSUE_LEVEL_SIZE`` here), so splitting them would scatter the checks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError
from .instances import drop_small

log = logging.getLogger(__name__)

#: Suffixes read by :func:`read_image` / :func:`open_slide` (longest match wins).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
    ".btf",
    ".tf8",
    ".svs",
    ".ndpi",
    ".scn",
    ".bif",
    ".qptiff",
)
#: Largest image :func:`read_image` loads whole (768 MiB as RGB); bigger ones go through slides.
MAX_PIXELS = 2**28
#: Long side of the level :func:`tissue_mask` works on.
TISSUE_LEVEL_SIZE = 2048
#: Largest TIFF tile or strip decoded at once: any region of a slide stored in bigger chunks
#: (one 10 GB strip) would decode the whole chunk.
MAX_CHUNK_BYTES = 2**30
#: Declared pixel bytes per stored byte above which a TIFF cannot hold the image it declares
#: (deflate peaks near 1000:1, JPEG lower): a header that promises 60000^2 px in 500 bytes.
MAX_COMPRESSION = 100_000

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_UNIT_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


# --------------------------------------------------------------------------- conversions


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``array`` as a contiguous HxWx3 uint8 RGB image.

    Accepts HxWx3, HxWx4 (composited over white, as glass is white), CxHxW with C = 3/4,
    leading length-1 axes, integer types (scaled by the dtype's range) and floats in [0, 1]
    or [0, 255]. Grayscale and stacks are refused: the model is trained on RGB H&E.
    """
    a = np.asarray(array)
    shape = a.shape
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] not in (1, 2, 3, 4) and a.shape[0] in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar CxHxW
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 2)):
        raise InputError(
            f"{name} is a single-channel (grayscale) image (shape {shape}); "
            "an RGB H&E image is needed"
        )
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise InputError(
            f"{name} has shape {shape}, which is not one 2-D RGB image; "
            "save a single RGB image (height x width x 3)"
        )
    if a.dtype == np.uint8:
        rgb = a[..., :3]
        if a.shape[-1] == 3:
            return np.ascontiguousarray(rgb)
        alpha = a[..., 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        f = a.astype(np.float32) / 255.0
    else:
        f = _to_unit_float(a, name)
        if f.shape[-1] == 3:
            return (f * 255.0 + 0.5).astype(np.uint8)
    comp = f[..., :3] * f[..., 3:4] + (1.0 - f[..., 3:4])
    return (np.clip(comp, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _to_unit_float(a: np.ndarray, name: str) -> np.ndarray:
    """Scale any numeric dtype to float32 in [0, 1]."""
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a.astype(np.float32) / float(np.iinfo(a.dtype).max), 0.0, 1.0)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(f)))
        if bad:
            log.warning(
                "%s: %d pixel value%s NaN or infinite; read as black (NaN, -inf) or white (+inf)",
                name,
                bad,
                " is" if bad == 1 else "s are",
            )
            f = np.nan_to_num(f, nan=0.0, posinf=1.0, neginf=0.0)
        if f.size and f.max() > 1.0:
            f = f / 255.0
        return np.clip(f, 0.0, 1.0)
    raise InputError(f"{name} has unsupported pixel type {a.dtype}; save it as 8-bit RGB")


# --------------------------------------------------------------------------- path checks


def _check_path(path: str | os.PathLike[str]) -> Path:
    """Resolve ``path`` and refuse missing files and unsupported suffixes up front."""
    p = Path(path).expanduser()
    lname = p.name.lower()
    if not any(lname.endswith(s) for s in SUPPORTED_SUFFIXES):
        raise InputError(
            f"{p.name}: unsupported file type '{''.join(p.suffixes[-2:]) or 'none'}'; "
            f"use one of {' '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        st = p.stat()
    except PermissionError:
        raise _denied(p) from None
    except OSError:
        raise InputError(f"{p}: file not found; check the path") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: is not a file; give the path of an image file")
    if not os.access(p, os.R_OK):
        raise _denied(p)
    return p


def _denied(p: Path) -> InputError:
    """Not readable for lack of permission: said as such, not as "no such file"."""
    return InputError(
        f"{p}: permission denied; the file exists but this user may not read it "
        "(check its permissions and those of its folders)"
    )


def _is_tiff(p: Path) -> bool:
    """Sniff the header so a TIFF named .svs/.ndpi (or mis-named) goes to tifffile."""
    try:
        with open(p, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except PermissionError:
        raise _denied(p) from None
    except OSError as exc:
        raise _unreadable(p, exc) from None


def _unreadable(p: Path, exc: BaseException) -> InputError:
    if isinstance(exc, ModuleNotFoundError) and exc.name:  # a broken install, not the file
        return InputError(
            f"{p.name}: reading it needs the Python package {exc.name!r}, which is not "
            f"installed; install it (pip install {exc.name.split('.')[0]}) and try again"
        )
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return _denied(p)
    if isinstance(exc, MemoryError):
        return InputError(f"{p.name}: not enough memory to decode it; open it as a slide")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(
        f"{p.name}: could not read the image ({reason}); the file is damaged, truncated "
        "or not an image of its type; re-export it"
    )


def _too_big(p: Path, h: int = 0, w: int = 0) -> InputError:
    size = f"{w}x{h} px, " if h and w else ""
    return InputError(
        f"{p.name} is {size}too large to load whole; open it as a slide "
        "(open_slide / the slide option) to read it tile by tile"
    )


# --------------------------------------------------------------------------- PIL formats


def _pil_open(p: Path) -> Any:
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size is checked here, against MAX_PIXELS
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(p)
    except Image.DecompressionBombError:
        raise _too_big(p) from None
    except Exception as exc:
        raise _unreadable(p, exc) from None
    w, h = img.size
    if h * w > MAX_PIXELS:
        img.close()
        raise _too_big(p, h, w)
    return img


def _pil_array(img: Any, p: Path, *, mask: bool) -> np.ndarray:
    """Decode a PIL image; palette images keep their indices for masks, colours for images."""
    keep = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"}
    try:
        if mask and img.mode in ("P", "PA"):
            return np.asarray(img)[..., 0] if img.mode == "PA" else np.asarray(img)
        if img.mode not in keep:
            has_alpha = "transparency" in img.info or img.mode.endswith("A")
            img = img.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(img)
    except Exception as exc:
        raise _unreadable(p, exc) from None


def _pil_mpp(img: Any) -> float | None:
    dpi = img.info.get("dpi")
    if not dpi:
        return None
    try:
        return _plausible_mpp(25400.0 / float(dpi[0]))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _plausible_mpp(mpp: float) -> float | None:
    """Resolution tags often hold screen defaults (72/96/300 dpi); keep microscope-like values."""
    return mpp if 0.01 <= mpp <= 20.0 else None


# --------------------------------------------------------------------------- TIFF slides


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """(..., 4) CMYK -> (..., 3) uint8 RGB as PIL converts it: R = (1 - C)(1 - K) etc.
    (K is black ink, not alpha); 8-bit values are rounded exactly as PIL does."""
    a = np.asarray(cmyk)
    if a.dtype == np.uint8:
        nk = 255 - a[..., 3:4].astype(np.int32)
        t = a[..., :3].astype(np.int32) * nk + 128
        return (nk - (((t >> 8) + t) >> 8)).astype(np.uint8)
    f = _to_unit_float(a, "CMYK image")
    rgb = (1.0 - f[..., :3]) * (1.0 - f[..., 3:4])
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _yxc_key(key: Any) -> tuple[Any, Any, Any]:
    """A numpy index of a (y, x, c) view as three parts (Ellipsis and missing axes filled)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (3 - len(key))
    return key[0], key[1], key[2]


class _CMYKasRGB:
    """Read-only (H, W, 3) uint8 RGB view of a CMYK level, converting only what is indexed."""

    def __init__(self, array: Any) -> None:
        self._a = array
        h, w = array.shape[:2]
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        ky, kx, kc = _yxc_key(key)
        return cmyk_to_rgb(np.asarray(self._a[ky, kx]))[..., kc]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _check_tiff_data(series: Any, p: Path) -> None:
    """Refuse a TIFF whose header promises more than the file holds, before anything is
    allocated for it: chunks past the end of the file, no chunk at all, a level in one
    chunk too big to decode, or far fewer bytes than any compression could yield."""
    size = p.stat().st_size
    for k, lvl in enumerate(series.levels):
        for page in lvl.pages:
            if page is None or not hasattr(page, "dataoffsets"):
                continue
            h, w = int(page.imagelength), int(page.imagewidth)
            what = f"{p.name} declares a {w}x{h} px image" + (f" (level {k})" if k else "")
            offsets = np.asarray(page.dataoffsets, np.int64)
            counts = np.asarray(page.databytecounts, np.int64)
            stored = counts > 0
            if not stored.any():
                raise InputError(f"{what} but holds no image data; the file is damaged or empty")
            if np.any(offsets[stored] + counts[stored] > size):
                missing = int(np.count_nonzero(offsets[stored] + counts[stored] > size))
                raise InputError(
                    f"{what} but is truncated ({missing} of {counts.size} tiles or strips end "
                    f"past its {size} bytes); re-export or copy it again"
                )
            chunk = math.prod(page.chunks) * page.dtype.itemsize
            if chunk > MAX_CHUNK_BYTES:
                raise InputError(
                    f"{what} stored in chunks of {_gb(chunk)} that would be decoded whole for "
                    "any region; re-save it tiled (e.g. 512 px tiles)"
                )
            declared = h * w * (page.samplesperpixel or 1) * page.dtype.itemsize
            if declared > MAX_COMPRESSION * int(counts.sum()):
                raise InputError(
                    f"{what} ({_gb(declared)}) but holds only {int(counts.sum())} bytes of "
                    "image data; the file is damaged or its header is wrong"
                )


class _ChannelsLast:
    """Read-only view of a planar (C, H, W) level as (H, W, C), decoding only what is indexed."""

    def __init__(self, array: Any) -> None:
        self._a = array
        c, h, w = array.shape
        self.shape = (h, w, c)
        self.dtype = array.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        ky, kx, kc = _yxc_key(key)
        out = np.asarray(self._a[kc, ky, kx])
        kept = [d for d, k in zip("cyx", (kc, ky, kx)) if not isinstance(k, (int, np.integer))]
        order = [kept.index(d) for d in "yxc" if d in kept]
        return out.transpose(order)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


def _tiff_levels(tf: Any, p: Path) -> tuple[list[Any], Any]:
    """Lazy zarr arrays for every pyramid level of the first series, as (H, W, C)."""
    import zarr

    if not tf.series:
        raise InputError(f"{p.name}: the TIFF holds no image; re-export it")
    series = tf.series[0]
    axes = series.axes
    shape = series.shape
    extra = [(a, n) for a, n in zip(axes, shape) if a not in "YXSC" and n > 1]
    if extra:
        raise InputError(
            f"{p.name} holds a stack (axes {axes}, shape {shape}), not one RGB image; "
            "export a single 2-D RGB image"
        )
    chan = [a for a in axes if a in "SC"]
    nchan = shape[axes.index(chan[0])] if chan else 1
    if nchan < 3:
        raise InputError(
            f"{p.name} is a single-channel (grayscale) image; an RGB H&E image is needed"
        )
    if nchan > 4 or len(chan) > 1:
        raise InputError(f"{p.name} has {nchan} channels (axes {axes}); an RGB H&E image is needed")
    page = series.keyframe
    cmyk = nchan == 4 and int(getattr(page, "photometric", 0)) == 5  # SEPARATED
    if cmyk:
        inkset = page.tags.get("InkSet")
        if inkset is not None and int(inkset.value) != 1:
            raise InputError(f"{p.name} holds 4 ink channels that are not CMYK; export it as RGB")
    _check_tiff_data(series, p)
    store = series.aszarr(multiscales=True)
    group = zarr.open(store, mode="r")
    arrays = [group[str(i)] for i in range(len(series.levels))]
    core = "".join(a for a in axes if a in "YXSC")
    if core in ("SYX", "CYX"):
        arrays = [_ChannelsLast(_squeezed(a, axes)) for a in arrays]
    elif core not in ("YXS", "YXC"):
        store.close()
        raise InputError(f"{p.name}: unsupported axis order {axes}; save it as RGB (YXS)")
    else:
        arrays = [_squeezed(a, axes) if a.ndim != 3 else a for a in arrays]
    if cmyk:  # K is black ink: read as alpha, every colour would be wrong
        arrays = [_CMYKasRGB(a) for a in arrays]
    try:
        np.asarray(arrays[0][:1, :1])  # the first tile decodes, or the file is refused now
    except Exception as exc:
        store.close()
        raise _unreadable(p, exc) from None
    return arrays, store


def _squeezed(a: Any, axes: str) -> Any:
    """Drop length-1 non-image axes that tifffile kept (e.g. a T=1, Z=1 OME series)."""
    if a.ndim == 3:
        return a
    if isinstance(a, np.ndarray):
        return a.reshape([n for ax, n in zip(axes, a.shape) if ax in "YXSC"])
    return _Indexed(a, tuple(0 if ax not in "YXSC" else slice(None) for ax in axes))


class _Indexed:
    """View of a zarr array with fixed integer indices on its leading length-1 axes."""

    def __init__(self, array: Any, base: tuple[Any, ...]) -> None:
        self._a = array
        self._base = base
        self.shape = tuple(n for n, b in zip(array.shape, base) if not isinstance(b, int))
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = list(key if isinstance(key, tuple) else (key,))
        full = [
            b if isinstance(b, int) else (key.pop(0) if key else slice(None)) for b in self._base
        ]
        return np.asarray(self._a[tuple(full)])


def _tiff_mpp(tf: Any) -> float | None:
    """Level-0 microns per pixel from OME-XML, the Aperio description, or resolution tags."""
    try:
        if tf.is_ome and tf.ome_metadata:
            for el in ET.fromstring(tf.ome_metadata).iter():
                if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                    unit = el.get("PhysicalSizeXUnit", "µm")
                    mpp = float(el.get("PhysicalSizeX")) * _UNIT_UM.get(unit, 1.0)
                    return mpp if mpp > 0 else None
        page = tf.series[0].keyframe
        m = re.search(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)", page.description or "")
        if m and float(m.group(1)) > 0:
            return float(m.group(1))
        xres = page.tags.get("XResolution")
        unit = page.tags.get("ResolutionUnit")
        if xres is None or unit is None or int(unit.value) not in (2, 3):
            return None
        num, den = xres.value
        if num <= 0 or den <= 0:
            return None
        um_per_unit = 25400.0 if int(unit.value) == 2 else 10000.0
        return _plausible_mpp(um_per_unit * den / num)
    except Exception:  # metadata is optional; a malformed tag must not stop reading
        return None


# --------------------------------------------------------------------------- Slide


@dataclass
class Slide:
    """A lazily read (pyramidal) RGB image; level 0 is full resolution.

    ``levels`` are array-likes indexable as ``level[y0:y1, x0:x1] -> (h, w, C)`` (zarr
    arrays for TIFF, numpy for small formats) and can be handed to napari as a multiscale
    image. Use as a context manager, or call :meth:`close`, to release the file.
    """

    path: Path
    levels: list[Any]
    downsamples: list[float]
    mpp: float | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    #: The tissue mask of the ~2048 px level (:func:`tissue_mask`), once computed.
    _tissue_small: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_array(
        cls, image: np.ndarray, path: str | os.PathLike[str] = "<array>", mpp: float | None = None
    ) -> Slide:
        """Single-level slide over an in-memory image (e.g. a napari layer)."""
        rgb = to_rgb_uint8(image, name=str(path))
        return cls(Path(path), [rgb], [1.0], mpp)

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width)."""
        return self.level_shape(0)

    def level_shape(self, level: int) -> tuple[int, int]:
        """(height, width) of ``level``."""
        s = self.levels[level].shape
        return int(s[0]), int(s[1])

    def best_level(self, downsample: float) -> int:
        """Coarsest level that is still at least as fine as ``downsample``.

        Allows 1 % slack because level sizes are rounded (an SVS "4x" level is often 4.0003x),
        and reading a 4x finer level for that would cost 16x the I/O.
        """
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= downsample * 1.01 + 1e-6 and d >= self.downsamples[best]:
                best = i
        return best

    def _level_factors(self, level: int) -> tuple[float, float]:
        h0, w0 = self.shape
        h, w = self.level_shape(level)
        return h0 / h, w0 / w

    def read_region(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray:
        """(h, w, 3) uint8 at ``level``'s pixel coordinates; outside the image is white glass."""
        y, x, h, w = int(y), int(x), int(h), int(w)
        if h <= 0 or w <= 0:
            raise ValueError(f"read_region needs a positive size, got {h}x{w}")
        H, W = self.level_shape(level)
        y0, y1, x0, x1 = max(y, 0), min(y + h, H), max(x, 0), min(x + w, W)
        out = np.full((h, w, 3), 255, np.uint8)
        if y1 <= y0 or x1 <= x0:
            return out
        try:
            data = np.asarray(self.levels[level][y0:y1, x0:x1])
        except InputError:
            raise
        except Exception as exc:
            raise _unreadable(self.path, exc) from None
        out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb_uint8(data, self.path.name)
        return out

    def read_scaled(self, y: int, x: int, h: int, w: int, scale: float) -> np.ndarray:
        """(h, w, 3) uint8 region in working-scale coordinates (level 0 shrunk by ``scale``).

        Reads only the needed window of the best level, then anti-aliases (Gaussian, sigma
        (f - 1) / 2 as skimage.transform.resize) and resamples bilinearly on pixel centres,
        so tiles of a large image stitch without seams or shifts.
        """
        if scale < 1.0 - 1e-9:
            raise ValueError(f"scale must be >= 1, got {scale}")
        level = self.best_level(scale)
        dy, dx = self._level_factors(level)
        fy, fx = scale / dy, scale / dx  # level pixels per working pixel
        if abs(fy - 1.0) < 1e-6 and abs(fx - 1.0) < 1e-6:
            return self.read_region(y, x, h, w, level)
        sy, sx = max(0.0, (fy - 1.0) / 2.0), max(0.0, (fx - 1.0) / 2.0)
        cy0, cx0 = (y + 0.5) * fy - 0.5, (x + 0.5) * fx - 0.5  # centre of output pixel 0
        cy1, cx1 = (y + h - 0.5) * fy - 0.5, (x + w - 0.5) * fx - 0.5
        my, mx = 2 + math.ceil(4 * sy), 2 + math.ceil(4 * sx)
        ay, ax = math.floor(cy0) - my, math.floor(cx0) - mx
        crop = self.read_region(
            ay, ax, math.ceil(cy1) + my + 1 - ay, math.ceil(cx1) + mx + 1 - ax, level
        ).astype(np.float32)
        if sy > 0 or sx > 0:
            crop = ndi.gaussian_filter(crop, (sy, sx, 0), mode="nearest")
        out = ndi.affine_transform(
            crop,
            np.array([fy, fx, 1.0]),
            offset=(cy0 - ay, cx0 - ax, 0.0),
            output_shape=(h, w, 3),
            order=1,
            mode="nearest",
        )
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _read_level_small(self, level: int, target: int) -> np.ndarray:
        """Whole ``level`` with a stride so its long side is about ``target`` (no pyramid case)."""
        h, w = self.level_shape(level)
        step = max(1, max(h, w) // max(1, target))
        try:
            data = np.asarray(self.levels[level][::step, ::step])
        except Exception as exc:
            raise _unreadable(self.path, exc) from None
        return to_rgb_uint8(data, self.path.name)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Overview whose long side is at most ``max_size``, from the cheapest adequate level."""
        from skimage.transform import resize

        fits = [i for i in range(len(self.levels)) if max(self.level_shape(i)) >= max_size]
        level = max(fits, key=lambda i: self.downsamples[i]) if fits else 0
        img = self._read_level_small(level, max_size)
        h, w = img.shape[:2]
        f = max_size / max(h, w)
        if f >= 1.0:
            return img
        size = (max(1, round(h * f)), max(1, round(w * f)), 3)
        small = resize(img, size, order=1, anti_aliasing=True, preserve_range=True)
        return np.clip(small + 0.5, 0, 255).astype(np.uint8)

    def close(self) -> None:
        """Release the file handle (levels stop working afterwards)."""
        while self._closers:
            with contextlib.suppress(Exception):  # closing is best effort
                self._closers.pop()()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open an image lazily as a :class:`Slide`.

    TIFF-family files (including SVS/NDPI and OME pyramids in SubIFDs or in the main IFD
    chain) become zarr-backed levels, decoded tile by tile on demand; nothing of level 0 is
    read here. PNG/JPEG/BMP are small and read whole into a single-level slide.
    """
    p = _check_path(path)
    if not _is_tiff(p):
        img = _pil_open(p)
        try:
            rgb = to_rgb_uint8(_pil_array(img, p, mask=False), p.name)
            mpp = _pil_mpp(img)
        finally:
            img.close()
        return Slide(p, [rgb], [1.0], mpp)
    levels, store, mpp, tf = _read_tiff(p, lambda tf: (*_tiff_levels(tf, p), _tiff_mpp(tf), tf))
    h0, w0 = int(levels[0].shape[0]), int(levels[0].shape[1])
    downsamples = [
        1.0 if i == 0 else (h0 / a.shape[0] + w0 / a.shape[1]) / 2.0 for i, a in enumerate(levels)
    ]
    return Slide(p, levels, downsamples, mpp, [tf.close, store.close])


@dataclass
class MapFile:
    """A lazily read single-channel map (a prediction TIFF): its levels and pixel size."""

    path: Path
    levels: list[Any]
    mpp: float | None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for c in self._closers:
            with contextlib.suppress(Exception):
                c()
        self._closers.clear()


def open_map(path: str | os.PathLike[str]) -> MapFile:
    """Open a 2-D single-channel TIFF (mask, labels, probability or SDF map) lazily, with
    its pyramid levels if it has them (as ``predict`` writes large outputs)."""
    import zarr

    p = _check_path(path)

    def read(tf: Any) -> MapFile:
        if not tf.series:
            raise InputError(f"{p.name}: the TIFF holds no image")
        series = tf.series[0]
        _check_tiff_data(series, p)
        if len([n for n in series.shape if n > 1]) != 2:
            raise InputError(
                f"{p.name} is not a single-channel map (axes {series.axes}, shape {series.shape})"
            )
        store = series.aszarr(multiscales=True)
        group = zarr.open(store, mode="r")
        levels = [_squeezed2d(group[str(i)]) for i in range(len(series.levels))]
        return MapFile(p, levels, _tiff_mpp(tf), [tf.close, store.close])

    return _read_tiff(p, read)


def _read_tiff(p: Path, read: Callable[[Any], Any]) -> Any:
    """``read(TiffFile)``; the file is closed if that fails, and a failure that is not
    already a clear :class:`InputError` says the file is unreadable."""
    import tifffile

    try:
        tf = tifffile.TiffFile(p)
    except Exception as exc:
        raise _unreadable(p, exc) from None
    try:
        return read(tf)
    except InputError:
        tf.close()
        raise
    except Exception as exc:
        tf.close()
        raise _unreadable(p, exc) from None


def _squeezed2d(a: Any) -> Any:
    if a.ndim == 2:
        return a
    return _Indexed(a, tuple(slice(None) if n > 1 else 0 for n in a.shape))


# --------------------------------------------------------------------------- whole images


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Whole image as HxWx3 uint8; for a pyramid this is level 0.

    Meant for tiles (GlaS-sized PNG/BMP/TIFF). Images over :data:`MAX_PIXELS` are refused
    with a pointer to :func:`open_slide` rather than exhausting memory.
    """
    p = _check_path(path)
    if _is_tiff(p):
        with open_slide(p) as slide:
            h, w = slide.shape
            if h * w > MAX_PIXELS:
                raise _too_big(p, h, w)
            return slide.read_region(0, 0, h, w)
    img = _pil_open(p)
    try:
        return to_rgb_uint8(_pil_array(img, p, mask=False), p.name)
    finally:
        img.close()


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Mask as a 2-D integer array (instance ids or binary; > 0 is gland).

    Gray RGB(A) exports (equal channels) are accepted; colour-coded or floating-point masks
    are refused because their values cannot be mapped to glands unambiguously.
    """
    p = _check_path(path)
    if _is_tiff(p):
        import tifffile

        try:
            with tifffile.TiffFile(p) as tf:
                series = tf.series[0]
                dims = dict(zip(series.axes, series.shape))
                h, w = dims.get("Y", 1), dims.get("X", 1)
                _check_tiff_data(series, p)
                if h * w > MAX_PIXELS:
                    raise _too_big(p, h, w)
                m = series.asarray()
        except InputError:
            raise
        except Exception as exc:
            raise _unreadable(p, exc) from None
    else:
        img = _pil_open(p)
        try:
            m = _pil_array(img, p, mask=True)
        finally:
            img.close()
    m = np.asarray(m)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim == 3 and m.shape[0] in (2, 3, 4) and m.shape[-1] not in (1, 2, 3, 4):
        m = np.moveaxis(m, 0, -1)
    if m.ndim == 3 and m.shape[-1] in (1, 2):  # gray, gray + alpha
        m = m[..., 0]
    elif m.ndim == 3 and m.shape[-1] in (3, 4):
        rgb = m[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise InputError(
                f"mask {p.name} is a colour image; save it as a single-channel label image "
                "(0 = background, 1, 2, ... = glands)"
            )
        m = rgb[..., 0]
    if m.ndim != 2:
        raise InputError(f"mask {p.name} has shape {m.shape}; a 2-D label image is needed")
    if m.dtype == bool:
        m = m.astype(np.uint8)
    if not np.issubdtype(m.dtype, np.integer):
        raise InputError(
            f"mask {p.name} has {m.dtype} values; save it as an 8- or 16-bit integer label "
            "image (0 = background, 1, 2, ... = glands)"
        )
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise InputError(
            f"mask {p.name} is {m.shape[1]}x{m.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]} (width x height); masks must match their image pixel for pixel"
        )
    return np.ascontiguousarray(m)


# --------------------------------------------------------------------------- tissue


def tissue_mask(
    slide: Slide, scale: float, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Boolean tissue mask on the working grid ``(ceil(H / scale), ceil(W / scale))``, or
    only its part ``box`` = (y, x, h, w) in working px (False outside the grid): a view of
    a gigapixel slide then costs its own size, not the whole grid's.

    Computed on a level of about 2048 px: stained tissue is saturated, glass is near-white
    and grey. The Otsu threshold on saturation is clamped to [0.05, 0.15] so an all-glass
    image stays empty and an all-tissue tile is all tissue. Specks are dropped and small
    holes (lumina, fat) filled, then the mask is resized by nearest neighbour.
    """
    small = _tissue_level(slide)
    H, W = slide.shape
    oh, ow = math.ceil(H / scale), math.ceil(W / scale)
    y0, x0, h, w = box if box is not None else (0, 0, oh, ow)
    sh, sw = small.shape
    ry, rx = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
    iy = np.clip(((ry + 0.5) * scale * sh / H).astype(np.int64), 0, sh - 1)
    ix = np.clip(((rx + 0.5) * scale * sw / W).astype(np.int64), 0, sw - 1)
    out = small[iy[:, None], ix[None, :]]
    out[(ry < 0) | (ry >= oh)] = False
    out[:, (rx < 0) | (rx >= ow)] = False
    return out


def _tissue_level(slide: Slide) -> np.ndarray:
    """The tissue mask on a level of about 2048 px, computed once per open slide (a view's
    prediction asks for it region by region)."""
    if slide._tissue_small is not None:
        return slide._tissue_small
    from skimage.filters import threshold_otsu

    fits = [i for i in range(len(slide.levels)) if max(slide.level_shape(i)) <= TISSUE_LEVEL_SIZE]
    # the most detailed level under the cap, else the smallest one read with a stride
    coarsest = max(range(len(slide.levels)), key=lambda i: slide.downsamples[i])
    level = min(fits, key=lambda i: slide.downsamples[i]) if fits else coarsest
    rgb = slide._read_level_small(level, TISSUE_LEVEL_SIZE).astype(np.float32) / 255.0
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    sat = ndi.uniform_filter((mx - mn) / (mx + 1e-3), size=3, mode="nearest")
    thr = 0.1 if float(sat.max() - sat.min()) < 1e-3 else float(threshold_otsu(sat))
    small = sat > min(max(thr, 0.05), 0.15)
    npix = small.size
    small = drop_small(small, max(16, int(npix * 2e-4)))
    holes = drop_small(~small, max(64, int(npix * 1e-2)), keep_border=True)
    small = ~holes
    slide._tissue_small = small
    return small
