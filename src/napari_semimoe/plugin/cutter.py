"""Cuts the training set (trainset.npz) in a napari worker thread for any panel that needs
it (Start, a promoted or rejected tile, the QA page, tile edits); one cut at a time, later
requests queued. The result goes out as the session's ``pool_changed``: the train panel
then tells a running training to reload the set, the QA page updates its pool line."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..core.errors import InputError
from .common import notify
from .layers import NapariLayers
from .session import Session

log = logging.getLogger(__name__)


class TrainsetCutter:
    def __init__(self, session: Session, layers: NapariLayers) -> None:
        self.session, self.layers = session, layers
        self._worker = None
        self._queued: list = []

    @property
    def busy(self) -> bool:
        """True while the training tiles are being cut in the background."""
        return self._worker is not None

    def rebuild(
        self,
        then: Callable[[int], None] | None = None,
        failed: Callable[[str], None] | None = None,
        quiet: bool = False,
    ) -> None:
        """Re-cut the training tiles and the unlabeled pool into ``trainset.npz`` in a thread
        (reading tiles and the tissue mask would stall the UI for a second). ``then(pool
        size)`` and ``failed(message)`` run on the main thread; user errors become a
        notification (``quiet``: a line in the status only, for updates the user did not
        ask for)."""
        from napari.qt.threading import create_worker

        session = self.session
        if session.project is None:
            notify("choose a project folder first (1 · Project and tiles)", "warning")
            return
        if self._worker is not None:  # cut again once the running cut is done
            self._queued.append((then, failed, quiet))
            return
        session.sync_tiles()
        session.save_annotations()
        labels = self.layers.labels()
        entry, project = session.entry, session.project
        snapshot = None if labels is None else np.array(labels.data)  # painting goes on
        slides = {}
        for e in project.state.images:
            slides[e.id] = self.layers.slide_of(e)
            if slides[e.id] is None:
                session.say(f"{e.name}: not open and no file; its tiles are skipped")

        def work() -> int:
            ts = project.build_training_set(
                lambda e: slides.get(e.id),
                lambda e: snapshot if e is entry else None,
            )
            return len(ts.unlabeled_images)

        # errors are ours to report (a notification), not a traceback in the event loop
        worker = self._worker = create_worker(work, _ignore_errors=True)

        def release() -> None:
            # The cut is over once its result or error is here: Start must work again at
            # once (waiting for 'finished' made a quick retry say "already running").
            if self._worker is worker:
                self._worker = None

        def done(n: int) -> None:
            release()
            if project.cut_warnings:  # a tile's unpainted glands would be learnt as background
                msg = "; ".join(project.cut_warnings)
                session.say(msg)
                log.warning(msg)
                if not quiet:
                    notify(msg, "warning")
            session.pool_changed.emit(n)
            if then is not None:
                then(n)

        def error(exc: Exception) -> None:
            release()
            if isinstance(exc, InputError):
                msg = str(exc)
            else:
                msg = f"{type(exc).__name__}: {exc}"
                log.error("cutting the training set failed", exc_info=exc)
            if quiet:
                session.say(f"unlabeled pool not updated: {msg}")
            else:
                notify(msg, "warning")
                session.say(msg)
            if failed is not None:
                failed(msg)

        def finished() -> None:
            release()
            if self._queued and self._worker is None:
                t, f, q = self._queued.pop(0)
                self.rebuild(then=t, failed=f, quiet=q)

        worker.returned.connect(done)
        worker.errored.connect(error)
        worker.finished.connect(finished)
        worker.start()
