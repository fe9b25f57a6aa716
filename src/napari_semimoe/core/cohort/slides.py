"""Which slides a cohort is: paths, globs, folders and text files of paths, expanded once."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..slide import SUPPORTED_SUFFIXES

#: Outputs per slide: ``OUT/<name>.ome.zarr``.
ZARR_SUFFIX = ".ome.zarr"


def _is_slide(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and any(name.endswith(s) for s in SUPPORTED_SUFFIXES)


def expand_slides(items: Sequence[str | Path]) -> list[Path]:
    """Every slide named by ``items``, in order, without duplicates.

    An item is a slide path, a glob (``'cohort/*.svs'``), a folder (its slides, sorted, not
    recursive) or a ``.txt`` file with one path per line (relative to the file; ``#``
    comments). Anything that names no slide is a one-line :class:`InputError`.
    """
    out: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if any(c in text for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(text, recursive=True))
            found = [h for h in hits if _is_slide(h)]
            if not found:
                raise InputError(f"{text}: no slide matches this pattern")
        elif p.is_dir():
            found = sorted(h for h in p.iterdir() if _is_slide(h))
            if not found:
                raise InputError(f"{p}: this folder holds no slide")
        elif p.suffix.lower() == ".txt" and p.is_file():
            found = []
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                q = Path(line) if Path(line).is_absolute() else p.parent / line
                if not q.is_file():
                    raise InputError(f"{p}:{n}: {line}: no such file")
                found.append(q)
        elif p.is_file():
            found = [p]
        else:
            raise InputError(f"{text}: no such file or folder")
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for q in out:
        r = q.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(q)
    if not unique:
        raise InputError("no slide given")
    return unique


def slide_name(path: str | Path) -> str:
    """``a/slide.ome.tif`` -> ``slide``: the file name without its type (and ``.ome``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_names(paths: Sequence[Path]) -> list[str]:
    """Each slide's output name; two slides that would write the same output are refused."""
    seen: dict[str, Path] = {}
    names = []
    for p in paths:
        n = slide_name(p)
        if n in seen:
            raise InputError(
                f"{seen[n]} and {p} would both write {n}{ZARR_SUFFIX}; rename one or run them "
                "into separate --out folders"
            )
        seen[n] = p
        names.append(n)
    return names
