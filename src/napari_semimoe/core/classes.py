"""The class table of a multi-class project: ids, names and colours (background is 0).

A data folder (or project) that holds ``classes.json`` is multi-class: its masks hold class
ids 0..C. Without the file it is binary, exactly as before classes existed (masks hold 0/1
or gland instance ids). The table travels in the run's config (``TrainConfig.classes``), so
every checkpoint, output and metric names its classes.

``classes.json``::

    {"classes": [{"id": 0, "name": "background", "colour": "#000000"},
                 {"id": 1, "name": "benign gland", "colour": "#1f77b4"}, ...]}

Ids are 0..C without gaps, 0 is the background, names are unique, colours ``#rrggbb``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

CLASSES_FILE = "classes.json"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: Colours given to classes a table leaves without one (matplotlib's tab10, background black).
DEFAULT_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass(frozen=True)
class ClassTable:
    """Background (id 0) plus C foreground classes; ``names[k]`` is class k's name."""

    names: tuple[str, ...]
    colours: tuple[str, ...]

    @property
    def n_foreground(self) -> int:
        """C, the number of foreground classes."""
        return len(self.names) - 1

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(range(len(self.names)))

    @property
    def multiclass(self) -> bool:
        """More than one foreground class (C = 1 trains exactly as a binary project)."""
        return self.n_foreground >= 2

    def name(self, k: int) -> str:
        return self.names[k]

    def to_list(self) -> list[dict[str, Any]]:
        """The table as stored in ``classes.json`` and in a run's config."""
        return [
            {"id": i, "name": n, "colour": c}
            for i, (n, c) in enumerate(zip(self.names, self.colours))
        ]

    @classmethod
    def from_names(cls, names: Sequence[str], colours: Sequence[str] | None = None) -> ClassTable:
        """A table of ``names`` (background first); missing colours from the defaults."""
        entries = [
            {"id": i, "name": n, **({"colour": colours[i]} if colours else {})}
            for i, n in enumerate(names)
        ]
        return parse_classes(entries, "class table")

    def check_mask(self, mask: np.ndarray, where: str) -> None:
        """One line when ``mask`` holds a value that is no class id (unknown -1 is allowed)."""
        m = np.asarray(mask)
        if m.size == 0:
            return
        hi, lo = int(m.max()), int(m.min())
        if hi > self.n_foreground or lo < -1:
            bad = hi if hi > self.n_foreground else lo
            raise InputError(
                f"{where}: value {bad} is no class id (classes.json has ids 0..{self.n_foreground})"
            )


def parse_classes(doc: Any, where: str) -> ClassTable:
    """A :class:`ClassTable` from a ``classes.json`` document (its dict or its list)."""
    entries = doc.get("classes") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or len(entries) < 2:
        raise InputError(f"{where}: expected a list 'classes' of at least background + 1 class")
    by_id: dict[int, dict] = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("id"), int) or isinstance(e["id"], bool):
            raise InputError(f"{where}: every class needs an integer 'id', got {e!r}")
        if e["id"] in by_id:
            raise InputError(f"{where}: class id {e['id']} appears twice")
        by_id[e["id"]] = e
    if sorted(by_id) != list(range(len(by_id))):
        raise InputError(
            f"{where}: class ids must be 0..{len(by_id) - 1} without gaps (0 = background), "
            f"got {sorted(by_id)}"
        )
    names, colours = [], []
    for i in range(len(by_id)):
        e = by_id[i]
        name = e.get("name", "background" if i == 0 else f"class {i}")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where}: class {i} needs a non-empty name")
        if name in names:
            raise InputError(f"{where}: class name {name!r} appears twice")
        colour = e.get("colour", "#000000" if i == 0 else DEFAULT_COLOURS[(i - 1) % 10])
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            raise InputError(f"{where}: colour of class {name!r} must be #rrggbb, got {colour!r}")
        names.append(name.strip())
        colours.append(colour.lower())
    return ClassTable(tuple(names), tuple(colours))


def read_classes(data_dir: str | Path) -> ClassTable | None:
    """The data folder's class table, or None (binary) when it has no ``classes.json``."""
    p = Path(data_dir) / CLASSES_FILE
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not readable JSON ({exc})") from None
    return parse_classes(doc, str(p))


def write_classes(data_dir: str | Path, table: ClassTable) -> Path:
    """Write ``classes.json`` into ``data_dir`` (atomically)."""
    from .atomic import atomic_write_json

    p = Path(data_dir) / CLASSES_FILE
    atomic_write_json(p, {"classes": table.to_list()})
    return p


def table_of(config: Any) -> ClassTable | None:
    """The class table a run's config stores (None: binary); a C = 1 table is binary too."""
    entries = getattr(config, "classes", None)
    if not entries:
        return None
    table = parse_classes(entries, "the run's class table")
    return table if table.multiclass else None


def pixel_counts(masks: Sequence[np.ndarray], n_foreground: int) -> np.ndarray:
    """V_k, the labeled pixels of each foreground class 1..C over ``masks`` (int64, C)."""
    counts = np.zeros(n_foreground + 1, np.int64)
    for m in masks:
        a = np.asarray(m)
        a = a[(a >= 0) & (a <= n_foreground)]
        counts += np.bincount(a.astype(np.int64).ravel(), minlength=n_foreground + 1)
    return counts[1:]
