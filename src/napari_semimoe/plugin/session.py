"""The dock's shared state: one :class:`Session` that the panels read and subscribe to.

It owns the project, the current image's entry, the active model's geometry (read from its
checkpoint: the ONE working scale and tile of everything a trained model does, whatever the
training form says about the next run), the undo stack of label edits, and the layer access.
Panels talk to it, never to each other. It is Qt-free and viewer-free (psygnal signals; the
layers come through a small :class:`LayerAccess` protocol), so its logic is tested with a fake
layer access (tests/test_session.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from psygnal import Signal

from ..core.classes import ClassTable
from ..core.data import Geometry
from ..core.errors import InputError
from ..core.project import ImageEntry, Project, Tile

if TYPE_CHECKING:
    from ..core.families import Family

log = logging.getLogger(__name__)

UNDO_STEPS = 20

#: One undo step: the (region, pixels before) patches of one edit.
UndoStep = list[tuple[tuple[slice, slice], np.ndarray]]


class LabelsLike(Protocol):
    data: Any

    def refresh(self) -> None: ...


class LayerAccess(Protocol):
    """What the session needs of the viewer (napari: :class:`.layers.NapariLayers`)."""

    def labels(self, create: bool = False) -> LabelsLike | None: ...

    def tile_rects(self) -> list[np.ndarray] | None: ...


def checkpoint_geometry(path: str | Path) -> Geometry:
    """The working geometry a checkpoint was trained at (its checked metadata)."""
    return _checkpoint_model(path)[0]


def _checkpoint_model(path: str | Path) -> tuple[Geometry, Family]:
    """The geometry and the model family of a checkpoint (its checked metadata)."""
    from ..core.checkpoint import model_meta, read_checkpoint
    from ..core.families import get_family

    tensors, doc = read_checkpoint(path)
    meta = model_meta(path, doc, tensors)
    return Geometry.from_dict(meta["geometry"]), get_family(meta["family"])


class Session:
    """Project, current image, model geometry, undo stack and layer access of one dock."""

    #: a project was opened (the Project)
    project_changed = Signal(object)
    #: the current image changed (its ImageEntry, or None)
    image_changed = Signal(object)
    #: the annotations were edited by an accept, restore, promote or undo (the reason)
    labels_edited = Signal(str)
    #: the undo stack became empty or not
    undo_changed = Signal(bool)
    #: the training tiles of the current image changed (synced to the project)
    tiles_changed = Signal()
    #: the unlabeled pool was re-cut (its size)
    pool_changed = Signal(int)
    #: saving the annotations failed (a one-line reason; the panel shows it loudly)
    save_error = Signal(str)
    #: a one-line status message for the user
    message = Signal(str)
    #: the project's class table was edited (the new ClassTable)
    classes_changed = Signal(object)
    #: the current image's attribute (where it comes from) was set (the value, None: unknown)
    attribute_changed = Signal(object)

    def __init__(self, layers: LayerAccess) -> None:
        self.layers = layers
        self.project: Project | None = None
        self.entry: ImageEntry | None = None
        self.training = False  # a training process is running (set by the train panel)
        #: the form's working scale and tile: what the NEXT training will cut and train at
        self.train_geometry = Geometry(scale=2.0, tile=256)
        #: this napari session's log file (in the project), once a project is open
        self.log_path: Path | None = None
        self._undo: list[UndoStep] = []
        self._geometry: tuple[tuple[str, int], Geometry, Family] | None = None
        self._tile_key: list | None = None

    # ------------------------------------------------------------------ state

    def set_project(self, project: Project) -> None:
        self.project = project
        self.entry = None
        self._geometry = None
        self.project_changed.emit(project)

    def set_entry(self, entry: ImageEntry | None) -> None:
        self.entry = entry
        self.clear_undo()  # undo steps are regions of the previous image's annotations
        self._tile_key = self._tiles_now()
        self.image_changed.emit(entry)

    @property
    def classes(self) -> ClassTable | None:
        """The project's class table; None for a binary project (or none open)."""
        return None if self.project is None else self.project.classes

    @property
    def attribute(self) -> str | None:
        """Where the current image comes from (None: unknown, or no image)."""
        return None if self.entry is None else self.entry.attribute

    def set_attribute(self, value: str | None) -> str | None:
        """Say where the current image comes from (saved in the project at once); blank =
        unknown. A value that cannot be one is a one-line InputError, nothing changed."""
        if self.project is None or self.entry is None:
            raise InputError("open a project and a slide first")
        if (value or "").strip() == (self.entry.attribute or ""):
            return self.entry.attribute
        kept = self.project.set_attribute(self.entry, value)
        self.attribute_changed.emit(kept)
        return kept

    def live_labels(self, entry: ImageEntry) -> np.ndarray | None:
        """The annotations being painted when ``entry`` is the current image (else None:
        the saved ones are what counts)."""
        labels = self.layers.labels()
        return labels.data if entry is self.entry and labels is not None else None

    def say(self, msg: str) -> None:
        self.message.emit(msg)

    def report(self, what: str, exc: BaseException) -> str:
        """A failed job: its traceback into the session log, one readable line (naming the
        log) in the status; returns that line (for a notification)."""
        if isinstance(exc, InputError):
            line = f"{what} failed: {exc}"
            log.warning(line)
        else:
            line = f"{what} failed: {type(exc).__name__}: {exc}{self.log_hint()}"
            log.error("%s failed", what, exc_info=exc)
        self.say(line)
        return line

    def log_hint(self) -> str:
        """' (details: LOG)' for a one-line error whose traceback went to the log."""
        return "" if self.log_path is None else f" (details: {self.log_path})"

    # ------------------------------------------------------------------ model

    def checkpoint(self) -> Path | None:
        """The active model: the project's last checkpoint."""
        return None if self.project is None else self.project.last_checkpoint()

    @property
    def geometry(self) -> Geometry | None:
        """The active model's working geometry, read from its checkpoint (cached while the
        file is unchanged); None before a first checkpoint. A training started with other
        settings changes it only once the new run has written its checkpoint."""
        model = self._model()
        return None if model is None else model[0]

    @property
    def family(self) -> Family | None:
        """The active model's family (its checkpoint's; Semi-MoE for checkpoints that name
        none); None before a first checkpoint. Panels ask it which maps, layers and
        signals this model has instead of naming Semi-MoE's."""
        model = self._model()
        return None if model is None else model[1]

    def _model(self) -> tuple[Geometry, Family] | None:
        ckpt = self.checkpoint()
        if ckpt is None:
            return None
        key = (str(ckpt), ckpt.stat().st_mtime_ns)
        if self._geometry is None or self._geometry[0] != key:
            self._geometry = (key, *_checkpoint_model(ckpt))
        return self._geometry[1], self._geometry[2]

    def require_model(self) -> Path:
        """The active checkpoint, or a one-line InputError saying what to do first."""
        ckpt = self.checkpoint()
        if ckpt is None:
            raise InputError("no trained model yet: train first (2 · Train)")
        if self.entry is None:
            raise InputError("no image: open a slide first")
        return ckpt

    # ------------------------------------------------------------------ label edits

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def clear_undo(self) -> None:
        self._undo.clear()
        self.undo_changed.emit(False)

    def edit_labels(self, patches: list[tuple[tuple[slice, slice], np.ndarray]], why: str) -> bool:
        """Apply ``patches`` (region, new pixels) to the annotations as ONE undo step, keep
        the annotations before in the on-disk history, and save. False if nothing changed."""
        labels = self.layers.labels()
        if not patches or labels is None or self.project is None or self.entry is None:
            return False
        self.project.keep_version(self.entry, np.array(labels.data), f"before-{why}")
        step = []
        for sl, new in patches:
            step.append((sl, labels.data[sl].copy()))
            labels.data[sl] = new
        self._undo.append(step)
        del self._undo[:-UNDO_STEPS]
        labels.refresh()
        self.undo_changed.emit(True)
        self.save_annotations()
        self.labels_edited.emit(why)
        return True

    def undo(self) -> bool:
        """Undo the last edit (all its regions at once); False if there is none."""
        labels = self.layers.labels()
        if not self._undo or labels is None:
            return False
        for sl, old in reversed(self._undo.pop()):
            labels.data[sl] = old
        labels.refresh()
        self.undo_changed.emit(bool(self._undo))
        self.save_annotations()
        self.labels_edited.emit("undo")
        return True

    def save_annotations(self, wait: bool = False) -> None:
        """Save the annotations. The copy is taken here (a few ms) and written in a thread,
        so painting never waits for the disk; ``wait`` writes before returning."""
        labels = self.layers.labels()
        if self.project is None or self.entry is None or labels is None:
            return
        if wait:
            try:
                self.project.save_annotations(self.entry, labels.data)
            except OSError as exc:  # e.g. a full disk, while napari closes
                path = self.project.annotations_path(self.entry)
                log.exception("saving %s failed", path)
                self.save_failed(f"{path}: {exc}")
        else:
            self.project.save_annotations(self.entry, np.array(labels.data), background=True)

    def save_failed(self, msg: str) -> None:
        """A save went wrong (on the GUI thread: the writer thread's errors are queued)."""
        log.error("annotations not saved: %s", msg)
        self.save_error.emit(msg)

    # ------------------------------------------------------------------ tiles

    def sync_tiles(self) -> None:
        """Tiles layer -> project tiles (level-0 px); rejected tiles are kept. Emits
        ``tiles_changed`` when the training tiles differ from the last sync."""
        rects = self.layers.tile_rects()
        if self.project is None or self.entry is None or rects is None:
            return
        keep = [t for t in self.entry.tiles if t.kind != "train"]
        old = {(t.y, t.x, t.h, t.w): t for t in self.entry.train_tiles()}
        tiles, fresh = [], []
        for rect in rects:
            (y0, x0), (y1, x1) = np.floor(rect.min(0)), np.ceil(rect.max(0))
            key = (int(y0), int(x0), int(y1 - y0), int(x1 - x0))
            if key[2] < 1 or key[3] < 1:
                continue  # a degenerate click, not a tile
            t = old.pop(key, None)  # a tile keeps its id
            if t is None:
                t = Tile(*key)
                fresh.append(t)
            tiles.append(t)
        for t in fresh:  # a moved or resized tile keeps its "unpainted pixels" choice
            was = max(old.values(), key=lambda o: _overlap(o, t), default=None)
            if was is not None and _overlap(was, t) > 0:
                t.unpainted = was.unpainted
        self.entry.tiles = tiles + keep
        self.project.save()
        now = self._tiles_now()
        if now != self._tile_key:
            self._tile_key = now
            self.tiles_changed.emit()

    def _tiles_now(self) -> list:
        tiles = [] if self.entry is None else self.entry.train_tiles()
        return [(t.y, t.x, t.h, t.w) for t in tiles]


def _overlap(a: Tile, b: Tile) -> int:
    """Common area of two tiles (level-0 px)."""
    oy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    ox = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    return max(0, oy) * max(0, ox)
