"""Per-image attributes (site / scanner / stain batch / grade): ``attributes.csv`` with the
header ``name,attribute``, one image per row. An empty attribute, or an image not in the
table, is unknown: it is allowed everywhere and uses the "any" router
(:mod:`.routing`)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import InputError

HEADER = ("name", "attribute")


def read_attributes(path: str | Path) -> dict[str, str]:
    """``{image name: attribute}`` from a ``name,attribute`` CSV (names without their
    suffix match too); rows with an empty attribute are left out (unknown). Every problem
    is one line naming the file and the row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such attributes file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the attributes file ({exc})") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or tuple(c.strip().lower() for c in rows[0]) != HEADER:
        raise InputError(f"{path}: the first line must be 'name,attribute'")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise InputError(
                f"{path} line {i}: expected 2 columns (name,attribute), got {len(row)}"
            )
        name, value = row[0].strip(), row[1].strip()
        if not name:
            raise InputError(f"{path} line {i}: empty image name")
        key = Path(name).stem if Path(name).suffix else name
        if key in seen:
            raise InputError(f"{path} line {i}: image {name!r} is listed twice")
        seen.add(key)
        if value:
            out[key] = value
    return out


def attributes_of(names: Iterable[str], table: Mapping[str, str]) -> list[str | None]:
    """Each image's attribute (None: unknown)."""
    return [table.get(n, table.get(Path(n).stem)) for n in names]


def seen_values(attributes: Iterable[str | None]) -> list[str]:
    """The distinct known values, sorted: the routers a run trains (plus "any")."""
    return sorted({a for a in attributes if a})


def fill_attributes(data, table: Mapping[str, str]) -> None:
    """Give a training set's images their attributes from ``{name: value}`` (the run's
    table) where the set carries none of its own."""
    if not table:
        return
    if not data.labeled_attributes:
        data.labeled_attributes = attributes_of(data.labeled_names, table)
    if not data.unlabeled_attributes:
        data.unlabeled_attributes = attributes_of(data.unlabeled_names, table)
