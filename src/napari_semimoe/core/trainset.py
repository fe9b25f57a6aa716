"""The training-set file (trainset.npz): labeled tiles + unlabeled pool, as the trainer sees
them. Written by the GUI process, read by the training child process (which imports core only),
by the QA page and by tests. It is data only: "the set changed" is signalled through the
training process's event (:class:`TrainingJob.reload`), never by the file's time stamp.

Pool tiles are named ``<image>/pool-<y>-<x>`` (working-scale origin). A multi-class
project's set also holds its class table (``classes``, the ``classes.json`` entries): the
child trains with the classes the masks were cut with; a binary set has no such member.
A set whose images say where they come from holds ``attributes`` (``{tile name: value}``,
the tiles of images with a known attribute): the child's ``TrainConfig.attributes`` and the
set's per-tile attributes; a set without any has no such member.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .data import TrainingSet

TRAINSET_FILE = "trainset.npz"


def pool_name(y: int, x: int) -> str:
    """Name of an unlabeled pool tile by its working-scale origin."""
    return f"pool-{y}-{x}"


def is_pool_tile_of(name: str, image: str) -> bool:
    """Whether ``name`` is an unlabeled pool tile of the image named ``image``."""
    parsed = parse_pool_name(name)
    return parsed is not None and parsed[0] == image


def parse_pool_name(name: str) -> tuple[str, int, int] | None:
    """'<image>/pool-<y>-<x>' -> (image, y, x) in working-scale px; None for other names."""
    image, _, tail = name.rpartition("/")
    parts = tail.split("-")
    if len(parts) != 3 or parts[0] != "pool":
        return None
    try:
        return image, int(parts[1]), int(parts[2])
    except ValueError:
        return None


def save_trainset(path: Path, ts: TrainingSet, classes: list | None = None) -> None:
    """npz without pickles (object arrays are refused on load), written atomically;
    ``classes``: the class table's entries (None: binary, no member written); the set's
    known per-tile attributes go in ``attributes`` (none known: no member)."""
    arrays = {}
    for i, (im, m) in enumerate(zip(ts.labeled_images, ts.labeled_masks)):
        arrays[f"li_{i}"], arrays[f"lm_{i}"] = im, m
    for i, im in enumerate(ts.unlabeled_images):
        arrays[f"ui_{i}"] = im
    arrays["names"] = np.array(json.dumps([ts.labeled_names, ts.unlabeled_names]))
    if classes is not None:
        arrays["classes"] = np.array(json.dumps(classes))
    attrs = _attribute_table(ts)
    if attrs:
        arrays["attributes"] = np.array(json.dumps(attrs))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def trainset_names(path: str | Path) -> tuple[list[str], list[str]]:
    """(labeled, unlabeled) tile names of a saved training set, without reading its images."""
    with np.load(path, allow_pickle=False) as z:
        ln, un = json.loads(str(z["names"]))
    return ln, un


def trainset_classes(path: str | Path) -> list | None:
    """The class table entries a training set was cut with (None: a binary set)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["classes"])) if "classes" in z.files else None


def _attribute_table(ts: TrainingSet) -> dict[str, str]:
    out = {}
    for names, attrs in (
        (ts.labeled_names, ts.labeled_attributes),
        (ts.unlabeled_names, ts.unlabeled_attributes),
    ):
        out.update({n: a for n, a in zip(names, attrs) if a})
    return out


def trainset_attributes(path: str | Path) -> dict[str, str]:
    """``{tile name: attribute}`` of a saved training set ({} when none is known)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["attributes"])) if "attributes" in z.files else {}


def load_pool(path: str | Path, keep: Callable[[str], bool]) -> list[tuple[str, np.ndarray]]:
    """The unlabeled pool tiles whose name passes ``keep``, read without loading the rest
    of the file (npz members are read on access)."""
    with np.load(path, allow_pickle=False) as z:
        _, un = json.loads(str(z["names"]))
        return [(n, z[f"ui_{i}"]) for i, n in enumerate(un) if keep(n)]


def load_trainset(path: str | Path) -> TrainingSet:
    with np.load(path, allow_pickle=False) as z:
        nl = sum(1 for k in z.files if k.startswith("li_"))
        nu = sum(1 for k in z.files if k.startswith("ui_"))
        ln, un = json.loads(str(z["names"]))
        attrs = json.loads(str(z["attributes"])) if "attributes" in z.files else {}
        return TrainingSet(
            [z[f"li_{i}"] for i in range(nl)],
            [z[f"lm_{i}"] for i in range(nl)],
            [z[f"ui_{i}"] for i in range(nu)],
            ln,
            un,
            [attrs.get(n) for n in ln] if attrs else [],
            [attrs.get(n) for n in un] if attrs else [],
        )
