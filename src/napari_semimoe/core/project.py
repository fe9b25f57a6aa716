"""A project folder: what the user made (annotations, tiles, settings) and the runs.

Qt-free (core): the plugin, tests and scripts use it; the training process needs only
:mod:`.trainset`. Every write is atomic and happens
as the user works, so a crash of napari or of training loses nothing::

    project/
      project.json        images (name, path, tiles), working scale, settings, runs
      classes.json        the class table of a multi-class project (absent: binary)
      annotations/ID.tif  the painted gland labels of each image (its Labels layer's grid)
      annotations/history/ID/  the last HISTORY_KEEP earlier versions of each image's labels
      trainset.npz        labeled tiles + unlabeled pool, as the trainer sees them
      runs/run-001/       checkpoint.safetensors, history.json, log.jsonl, config.json
      logs/napari-*.log   one log per napari session (full tracebacks)

Over 500 lines for a reason: :class:`Project` is the one owner of the project folder's files
(project.json, annotations and their history, the training set it cuts, the runs list), and
keeping them in one class is what makes that ownership checkable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write, remove_stale_temps
from .checkpoint import CHECKPOINT_NAME
from .classes import ClassTable, read_classes, write_classes
from .data import TrainingSet
from .errors import InputError
from .slide import Slide, tissue_mask
from .sparse import (
    BACKGROUND_LABEL,
    UNPAINTED,
    gland_like_unpainted,
    glands_of,
    resolve_unpainted,
    training_mask,
)
from .tiff_writer import write_tiff
from .trainset import TRAINSET_FILE, pool_name, save_trainset

log = logging.getLogger(__name__)

PROJECT_FILE = "project.json"
ANNOTATIONS_DIR = "annotations"
HISTORY_DIR = "history"
#: Earlier versions of an image's annotations kept on disk (an accept, an erase or a bad
#: stroke can be undone after napari was closed), and how often painting adds one.
HISTORY_KEEP = 20
HISTORY_EVERY_S = 60.0
#: Ids name files (annotations/ID.tif): nothing that could leave the folder.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAFE_RUN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(r"(\d{19})_([a-z-]{1,32})\.tif")
_MAX_SIDE = 2**20  # level-0 px: no tile of a real slide is larger


@dataclass
class Tile:
    """A rectangle in level-0 pixels. kind: 'train' (annotated) or 'rejected' (kept out of
    the unlabeled pool). ``unpainted``: what its unpainted pixels are (:mod:`.sparse`:
    auto | background | unknown); tiles of projects older than that load as background."""

    y: int
    x: int
    h: int
    w: int
    kind: str = "train"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    unpainted: str = "auto"

    def overlaps(self, y: int, x: int, h: int, w: int) -> bool:
        return not (
            y >= self.y + self.h or y + h <= self.y or x >= self.x + self.w or x + w <= self.x
        )


@dataclass
class ImageEntry:
    """One image of the project: its napari layer name, file (if any), tiles, the
    resolution of its annotations (level-0 px per annotation px) and where it comes from
    (``attribute``: site / scanner / stain batch for attribute routing; None = unknown, and
    then not written, so a project without attributes keeps its file as it was)."""

    name: str
    path: str | None = None
    labels_scale: float = 1.0
    tiles: list[Tile] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    attribute: str | None = None

    def train_tiles(self) -> list[Tile]:
        return [t for t in self.tiles if t.kind == "train"]


@dataclass
class ProjectState:
    scale: float = 1.0  # working scale: level-0 px per model px
    tile: int = 256  # model tile side at working scale
    images: list[ImageEntry] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)


class BackgroundWriter:
    """Runs writes in one background thread, keeping only the latest pending one per key.

    A snapshot submitted while an older one of the same key still waits replaces it (only
    the latest annotations matter), and writes of one key never run out of order. The
    thread is not a daemon, so the interpreter finishes pending writes before it exits.
    """

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[], None]] = {}
        self._thread: threading.Thread | None = None
        self.on_error = on_error

    def submit(self, key: str, write: Callable[[], None]) -> None:
        with self._lock:
            self._pending[key] = write
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="semimoe-writer")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                key = next(iter(self._pending))
                write = self._pending.pop(key)
            try:
                write()
            except Exception as exc:  # reported, never lost silently
                if self.on_error is not None:
                    self.on_error(f"could not save {key}: {exc}")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write is on disk; False if ``timeout`` ran out."""
        with self._lock:
            t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            return not t.is_alive()
        return True

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None


class Project:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.writer = BackgroundWriter()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        (self.root / ANNOTATIONS_DIR).mkdir(exist_ok=True)
        self.state = ProjectState()
        #: one-line warnings about what was ignored while loading (shown by the widget)
        self.warnings: list[str] = []
        self._kept_at: dict[str, float] = {}  # image id -> when a version was last kept
        #: one line per tile whose unpainted pixels look like glands (the last cut's)
        self.cut_warnings: list[str] = []
        if (self.root / PROJECT_FILE).exists():
            self._load()
        self._remove_stale_temps()
        #: The class table (classes.json), or None: a binary project, painted values are
        #: gland instance ids. With a table they are class ids 1..C (and the background
        #: brush's :data:`~.sparse.BACKGROUND_LABEL`).
        self.classes: ClassTable | None = read_classes(self.root)

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        f = self.root / PROJECT_FILE
        try:
            doc = json.loads(f.read_text())
            images = [
                ImageEntry(
                    **{
                        **e,
                        "tiles": [
                            Tile(**{"unpainted": "background", **t}) for t in e.get("tiles", [])
                        ],
                    }
                )
                for e in doc.pop("images", [])
            ]
            known = {k: v for k, v in doc.items() if k in ProjectState.__dataclass_fields__}
            self.state = ProjectState(**known, images=images)
        except (OSError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise InputError(f"{f}: unreadable project file ({exc})") from None
        problem = _check_state(self.state)
        if problem:
            raise InputError(f"{f}: {problem}; the file was edited or damaged")
        runs = []
        for name in self.state.runs:
            if self._run_path(name) is None:
                self.warnings.append(
                    f"{f}: run {name!r} ignored: a run must be a folder inside runs/"
                )
                log.warning(self.warnings[-1])
            else:
                runs.append(name)
        self.state.runs = runs

    def _remove_stale_temps(self) -> None:
        """Half-written files of a process that was killed mid-write (the file they were
        to replace is intact): removed, so a crash leaves no litter behind; histories are
        pruned to HISTORY_KEEP."""
        ann = self.root / ANNOTATIONS_DIR
        hist = ann / HISTORY_DIR
        dirs = [
            self.root,
            ann,
            *(d for d in (hist.iterdir() if hist.is_dir() else []) if d.is_dir()),
        ]
        for d in dirs:
            remove_stale_temps(d)
        for d in dirs[2:]:  # a kill between keeping a version and pruning
            self._prune(d)

    def save(self) -> None:
        doc = asdict(self.state)
        for e in doc["images"]:
            if e.get("attribute") is None:  # unknown: absent, as in projects made before
                e.pop("attribute", None)
        atomic_write(
            self.root / PROJECT_FILE, lambda fh: fh.write(json.dumps(doc, indent=1).encode())
        )

    # ------------------------------------------------------------------ attributes

    def set_attribute(self, entry: ImageEntry, value: str | None) -> str | None:
        """Say where an image comes from (saved at once); blank = unknown. Returns the
        value kept; a value that cannot be one is a one-line InputError."""
        entry.attribute = check_attribute(value, entry.name)
        self.save()
        return entry.attribute

    def attribute_values(self) -> list[str]:
        """The project's distinct attribute values, sorted (offered for the next image)."""
        return sorted({e.attribute for e in self.state.images if e.attribute})

    def attributes(self) -> dict[str, str]:
        """``{image name: attribute}`` of the images whose attribute is known."""
        return {e.name: e.attribute for e in self.state.images if e.attribute}

    def entry(self, name: str, path: str | None = None) -> ImageEntry:
        """The entry of an image layer (created on first use)."""
        for e in self.state.images:
            if e.name == name:
                if path and not e.path:
                    e.path = path
                return e
        e = ImageEntry(name, path)
        self.state.images.append(e)
        self.save()
        return e

    def annotations_path(self, entry: ImageEntry) -> Path:
        if not _SAFE_ID.fullmatch(entry.id):  # ids come from project.json
            raise InputError(f"image {entry.name!r}: unsafe id {entry.id!r}")
        return self.root / ANNOTATIONS_DIR / f"{entry.id}.tif"

    def history_dir(self, entry: ImageEntry) -> Path:
        return self.annotations_path(entry).parent / HISTORY_DIR / entry.id

    def save_annotations(
        self, entry: ImageEntry, labels: np.ndarray, background: bool = False
    ) -> None:
        """Write an image's annotations (atomically). With ``background`` the caller hands
        over a snapshot it will not modify and the file is written in a thread (a big
        labels layer takes a quarter of a second to compress: the UI must not wait).

        While the user paints, the file being replaced is kept as a version at most every
        HISTORY_EVERY_S (a hard link: no copy), so the history spans the session."""
        path = self.annotations_path(entry)

        def write(a: np.ndarray) -> None:
            if path.exists() and self._version_due(entry):
                self._keep_file(entry, path, "autosave")
            write_tiff(path, a)

        if background:
            self.writer.submit(str(path), lambda: write(labels))
        else:
            self.writer.flush()  # an older snapshot must not land after this one
            write(np.asarray(labels))

    # ------------------------------------------------------------------ history

    def keep_version(self, entry: ImageEntry, labels: np.ndarray, reason: str) -> None:
        """Keep a snapshot (the caller will not modify it) of an image's annotations in its
        history, e.g. before an accept or a restore; written in the background."""
        d = self.history_dir(entry)
        path = d / f"{time.time_ns():019d}_{reason}.tif"
        self._kept_at[entry.id] = time.time()

        def write() -> None:
            write_tiff(path, labels)
            self._prune(d)

        self.writer.submit(str(path), write)

    def versions(self, entry: ImageEntry, wait: bool = True) -> list[tuple[Path, float, str]]:
        """(file, time in s since the epoch, reason) of the kept versions, newest first;
        ``wait``: after the pending writes (else without blocking on them)."""
        if wait:
            self.writer.flush()
        d = self.history_dir(entry)
        out = []
        for p in d.iterdir() if d.is_dir() else []:
            m = _VERSION.fullmatch(p.name)
            if m and p.is_file():
                out.append((p, int(m[1]) / 1e9, m[2].replace("-", " ")))
        return sorted(out, key=lambda v: v[0].name, reverse=True)

    def load_version(self, entry: ImageEntry, path: str | Path) -> np.ndarray:
        import tifffile

        p = Path(path)
        if p.parent.resolve() != self.history_dir(entry).resolve() or not _VERSION.fullmatch(
            p.name
        ):
            raise InputError(f"{p}: not a version of {entry.name!r} in this project")
        try:
            return tifffile.imread(p)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: unreadable version ({exc})") from None

    def _version_due(self, entry: ImageEntry) -> bool:
        last = self._kept_at.get(entry.id)
        if last is None:  # first write of this session: the newest version on disk
            d = self.history_dir(entry)
            names = [n for n in os.listdir(d) if _VERSION.fullmatch(n)] if d.is_dir() else []
            last = int(max(names)[:19]) / 1e9 if names else None
        return last is None or time.time() - last >= HISTORY_EVERY_S

    def _keep_file(self, entry: ImageEntry, path: Path, reason: str) -> None:
        """The current annotations file as a version, stamped with the time it was saved."""
        d = self.history_dir(entry)
        d.mkdir(parents=True, exist_ok=True)
        dst = d / f"{path.stat().st_mtime_ns:019d}_{reason}.tif"
        self._kept_at[entry.id] = time.time()
        if dst.exists():
            return
        try:
            os.link(path, dst)  # the next write replaces the file: the link keeps this one
        except OSError:  # no hard links here (some network or FAT drives): copy
            atomic_write(dst, lambda fh: shutil.copyfileobj(path.open("rb"), fh))
        self._prune(d)

    @staticmethod
    def _prune(d: Path) -> None:
        names = sorted(n for n in os.listdir(d) if _VERSION.fullmatch(n))
        for n in names[:-HISTORY_KEEP]:
            (d / n).unlink(missing_ok=True)

    def load_annotations(self, entry: ImageEntry) -> np.ndarray | None:
        import tifffile

        self.writer.flush()
        p = self.annotations_path(entry)
        return tifffile.imread(p) if p.exists() else None

    # ------------------------------------------------------------------ classes

    def set_classes(
        self, table: ClassTable, relabel: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> None:
        """Make ``table`` the project's class table (classes.json, atomically) and, with
        ``relabel``, rewrite every image's saved annotations through it (the file before
        is kept in the history). classes.json goes first: a crash in between leaves ids the
        next cut refuses loudly, never ids silently given another class's name."""
        self.writer.flush()
        write_classes(self.root, table)
        self.classes = table
        if relabel is None:
            return
        for e in self.state.images:
            old = self.load_annotations(e)
            if old is None:
                continue
            new = relabel(old)
            if not np.array_equal(new, old):
                path = self.annotations_path(e)
                self._keep_file(e, path, "before-classes")
                write_tiff(path, np.asarray(new, old.dtype))

    def class_pixel_counts(
        self, labels_of: Callable[[ImageEntry], np.ndarray | None] | None = None
    ) -> np.ndarray:
        """V_k: the painted pixels of each class 1..C inside the training tiles (at the
        annotations' resolution), what DCA's log-gap split is made of; ``labels_of`` gives
        live annotations (else the saved ones). Empty for a binary project."""
        if self.classes is None:
            return np.zeros(0, np.int64)
        c = self.classes.n_foreground
        counts = np.zeros(c + 1, np.int64)
        for e in self.state.images:
            labels = labels_of(e) if labels_of is not None else None
            if labels is None:
                labels = self.load_annotations(e)
            if labels is None:
                continue
            ls, (H, W) = e.labels_scale, labels.shape[:2]
            for t in e.train_tiles():
                y0, x0 = max(0, round(t.y / ls)), max(0, round(t.x / ls))
                y1, x1 = min(H, round((t.y + t.h) / ls)), min(W, round((t.x + t.w) / ls))
                if y1 <= y0 or x1 <= x0:
                    continue
                a = np.asarray(labels[y0:y1, x0:x1])
                a = a[(a > 0) & (a <= c)]
                counts += np.bincount(a.astype(np.int64).ravel(), minlength=c + 1)
        return counts[1:]

    # ------------------------------------------------------------------ tiles

    def train_tiles(self) -> list[tuple[ImageEntry, Tile]]:
        return [(e, t) for e in self.state.images for t in e.train_tiles()]

    # ------------------------------------------------------------------ runs

    def new_run_dir(self) -> Path:
        n = len(self.state.runs) + 1
        while (self.root / "runs" / f"run-{n:03d}").exists():
            n += 1
        name = f"run-{n:03d}"
        self.state.runs.append(name)
        self.save()
        d = self.root / "runs" / name
        d.mkdir(parents=True)
        return d

    def last_checkpoint(self) -> Path | None:
        for name in reversed(self.state.runs):
            d = self._run_path(name)
            if d is not None and (d / CHECKPOINT_NAME).exists():
                return d / CHECKPOINT_NAME
        return None

    def _run_path(self, name: str) -> Path | None:
        """runs/NAME, or None if the name (from project.json) would leave runs/."""
        if not isinstance(name, str) or not _SAFE_RUN.fullmatch(name) or set(name) == {"."}:
            return None
        d = self.root / "runs" / name
        runs = (self.root / "runs").resolve()
        if d.exists() and runs not in d.resolve().parents:  # a link out of the project
            return None
        return d

    # ------------------------------------------------------------------ training data

    def build_training_set(
        self,
        slide_of: Callable[[ImageEntry], Slide | None],
        labels_of: Callable[[ImageEntry], np.ndarray | None] | None = None,
        *,
        max_unlabeled: int = 64,
        seed: int = 0,
    ) -> TrainingSet:
        """Cut the annotated tiles of every image and an unlabeled pool of tissue tiles
        outside them, at working scale; save them for the trainer. Each tile's unpainted
        pixels are background or unknown as the tile says (:mod:`.sparse`); a tile whose
        unpainted pixels are background but look like its painted glands gets a line in
        :attr:`cut_warnings`.

        ``slide_of`` opens an image (None if it is no longer available); ``labels_of`` gives
        live annotations (e.g. the Labels layer being painted), else the saved ones are used.
        """
        s = self.state.scale
        li, lm, names, ui, unames = [], [], [], [], []
        tile_attrs: dict[str, str] = {}  # tile name -> its image's attribute (known ones)
        warnings: list[str] = []
        pool_share = max(1, max_unlabeled // max(1, len(self.state.images)))
        for e in self.state.images:
            tiles = e.train_tiles()
            slide = slide_of(e)
            if slide is None:
                continue
            labels = labels_of(e) if labels_of is not None else None
            if labels is None:
                labels = self.load_annotations(e)
            first = len(names)  # this image's tiles are names[first:]
            for t in tiles:
                h, w = max(1, round(t.h / s)), max(1, round(t.w / s))
                img = slide.read_scaled(round(t.y / s), round(t.x / s), h, w, s)
                crop = (
                    np.zeros((h, w), np.uint16)
                    if labels is None
                    else _crop_labels(labels, t, e.labels_scale, (h, w))
                )
                unpainted = resolve_unpainted(t.unpainted, crop)
                m = training_mask(crop, unpainted)
                if self.classes is not None:  # e.g. a version restored from before a removal
                    self.classes.check_mask(m, f"{e.name}, tile {t.id}")
                if unpainted == "background":
                    n = gland_like_unpainted(img, crop)
                    if n:
                        warnings.append(
                            f"{e.name}, tile {t.id}: {n} unpainted "
                            f"{'region looks' if n == 1 else 'regions look'} like the glands "
                            "you painted and will be learnt as background; paint them, or "
                            "set the tile's unpainted pixels to 'unknown'"
                        )
                li.append(img)
                lm.append(m)
                names.append(f"{e.name}/tile-{t.id}")
            imgs, nm = self._unlabeled_pool(e, slide, pool_share, seed)
            ui += imgs
            unames += [f"{e.name}/{n}" for n in nm]
            if e.attribute:
                tile_attrs.update({n: e.attribute for n in names[first:]})
                tile_attrs.update({f"{e.name}/{n}": e.attribute for n in nm})
        if not li:
            raise InputError(
                "no training tile yet: draw a rectangle in 'training tiles' and "
                "paint the glands inside it"
            )
        self.cut_warnings = warnings
        if not any((m > 0).any() for m in lm):
            raise InputError(
                "the training tiles contain no painted gland: paint at least one "
                "gland (tiles without glands are fine as long as one has some)"
            )
        ts = TrainingSet(li, lm, ui, names, unames)
        if tile_attrs:
            ts.labeled_attributes = [tile_attrs.get(n) for n in names]
            ts.unlabeled_attributes = [tile_attrs.get(n) for n in unames]
        table = None if self.classes is None else self.classes.to_list()
        save_trainset(self.root / TRAINSET_FILE, ts, classes=table)
        return ts

    def _unlabeled_pool(self, e: ImageEntry, slide: Slide, k: int, seed: int):
        """Up to ``k`` tissue tiles outside the image's training and rejected tiles.

        The draw is stable: candidates are visited in one seeded order and excluded ones
        skipped, so rejecting a tile swaps in one new tile instead of reshuffling the pool
        (the pseudo-label view the user is reviewing stays valid)."""
        cands = pool_candidates(e, slide, self.state.scale, self.state.tile)
        order = np.random.default_rng(seed).permutation(len(cands))
        s, T = self.state.scale, self.state.tile
        side = round(T * s)
        picked = []
        for i in order:
            y, x = cands[i]
            y0, x0 = round(y * s), round(x * s)
            if any(_excludes(t, y0, x0, side) for t in e.tiles):
                continue
            picked.append((y, x))
            if len(picked) == k:
                break
        picked.sort()
        images = [slide.read_scaled(y, x, T, T, s) for y, x in picked]
        return images, [pool_name(y, x) for y, x in picked]

    # ------------------------------------------------------------------ tile review

    def add_tile(self, entry: ImageEntry, y: int, x: int, side: int, kind: str) -> Tile:
        """A training ('train') or rejected ('rejected') tile in level-0 px, saved at once."""
        if kind not in ("train", "rejected"):
            raise ValueError(kind)
        t = Tile(int(y), int(x), int(side), int(side), kind)
        entry.tiles.append(t)
        self.save()
        return t

    def rejected_tiles(self, entry: ImageEntry) -> list[Tile]:
        return [t for t in entry.tiles if t.kind == "rejected"]


#: The longest attribute value kept (a site, scanner or batch name, not a note).
MAX_ATTRIBUTE = 64


def check_attribute(value: Any, image: str, blank: bool = True) -> str | None:
    """An image's attribute as stored: stripped text, None for unknown (blank text too
    when ``blank``); "any" is the router of unknown images, so it cannot be a value."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"image {image!r}: attribute {value!r} must be text")
    v = value.strip()
    if not v:
        if blank:
            return None
        raise InputError(f"image {image!r}: attribute is blank (leave it out for unknown)")
    if len(v) > MAX_ATTRIBUTE or any(not c.isprintable() for c in v):
        raise InputError(
            f"image {image!r}: attribute must be one line of at most {MAX_ATTRIBUTE} "
            "printable characters (a site, scanner or stain batch)"
        )
    from .routing import ANY

    if v.lower() == ANY:
        raise InputError(
            f"image {image!r}: {ANY!r} is the router of images of unknown origin; "
            "leave the attribute blank for unknown"
        )
    return v


def glands_to_class(labels: np.ndarray, k: int = 1) -> np.ndarray:
    """A binary project's annotations as class ids: every painted gland (any instance id)
    becomes class ``k``; the background brush and unpainted pixels stay."""
    a = np.array(labels)
    a[glands_of(a)] = k
    return a


def drop_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Annotations after class ``k`` was removed from the table: its pixels unpainted, the
    classes above it one id down (the table's ids have no gaps)."""
    a = np.array(labels)
    a[a == k] = 0
    above = (a > k) & (a != BACKGROUND_LABEL)
    a[above] -= 1
    return a


def _excludes(t: Tile, y: int, x: int, side: int) -> bool:
    """Does tile ``t`` keep the candidate (y, x, side) out of the unlabeled pool? Training
    tiles: any overlap (those pixels are labeled). Rejected tiles: more than half of the
    candidate, so rejecting one tile does not also drop its half-overlapping neighbours."""
    if t.kind == "train":
        return t.overlaps(y, x, side, side)
    oy = max(0, min(t.y + t.h, y + side) - max(t.y, y))
    ox = max(0, min(t.x + t.w, x + side) - max(t.x, x))
    return oy * ox > 0.5 * side * side


def pool_candidates(e: ImageEntry, slide: Slide, s: float, T: int) -> list[tuple[int, int]]:
    """All tissue tiles (working-scale origins, half-overlapping) of an image."""
    tissue = tissue_mask(slide, s)
    H, W = tissue.shape
    step = max(1, T // 2)  # half-overlapping candidates: small slides still give a pool
    return [
        (y, x)
        for y in range(0, max(1, H - T + 1), step)
        for x in range(0, max(1, W - T + 1), step)
        if tissue[y : y + T, x : x + T].mean() >= 0.5
    ]


def _crop_labels(
    labels: np.ndarray, t: Tile, labels_scale: float, shape: tuple[int, int]
) -> np.ndarray:
    from .inference.resample import resample

    ls = labels_scale
    y0, x0 = round(t.y / ls), round(t.x / ls)
    y1, x1 = round((t.y + t.h) / ls), round((t.x + t.w) / ls)
    crop = np.zeros((y1 - y0, x1 - x0), labels.dtype)
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(labels.shape[0], y1), min(labels.shape[1], x1)
    if sy1 > sy0 and sx1 > sx0:
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = labels[sy0:sy1, sx0:sx1]
    return resample(crop, shape, nearest=True)


def _check_state(st: ProjectState) -> str | None:
    """What is wrong with a loaded project (a path leaving the folder, absurd numbers)."""
    import math

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (num(st.scale) and 0 < st.scale <= 1024):
        return f"working scale {st.scale!r} is not a number in (0, 1024]"
    if not (isinstance(st.tile, int) and 16 <= st.tile <= 8192):
        return f"tile {st.tile!r} is not a whole number in [16, 8192]"
    if not isinstance(st.runs, list) or not isinstance(st.settings, dict):
        return "'runs' must be a list and 'settings' an object"
    seen = set()
    for e in st.images:
        if not isinstance(e.id, str) or not _SAFE_ID.fullmatch(e.id) or e.id in seen:
            return (
                f"image {e.name!r} has an unsafe or repeated id {e.id!r} "
                "(letters, digits, '-' and '_' only)"
            )
        seen.add(e.id)
        if not isinstance(e.name, str) or not (e.path is None or isinstance(e.path, str)):
            return f"image {e.name!r}: name and path must be text"
        if not (num(e.labels_scale) and 0 < e.labels_scale <= 1024):
            return f"image {e.name!r}: labels_scale {e.labels_scale!r} is out of range"
        try:
            check_attribute(e.attribute, e.name, blank=False)
        except InputError as exc:
            return str(exc)
        for t in e.tiles:
            ints = (t.y, t.x, t.h, t.w)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
                return f"image {e.name!r}: tile {t.id!r} has non-integer coordinates"
            if (
                not (0 < t.h <= _MAX_SIDE and 0 < t.w <= _MAX_SIDE)
                or max(abs(t.y), abs(t.x)) > _MAX_SIDE * 4
            ):
                return f"image {e.name!r}: tile {t.id!r} has an absurd size or position"
            if t.kind not in ("train", "rejected"):
                return f"image {e.name!r}: tile {t.id!r} has an unknown kind {t.kind!r}"
            if t.unpainted not in UNPAINTED:
                return f"image {e.name!r}: tile {t.id!r}: unpainted {t.unpainted!r} is unknown"
    return None
