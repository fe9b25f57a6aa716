"""One log file per napari session, in the project folder: PROJECT/logs/napari-STAMP.log.

Everything the package logs (``napari_semimoe.*``: the dock, core, and the training child's
records forwarded through its event queue) goes there with full tracebacks; the dock shows
one readable line and names the file. Opening another project moves the log there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

LOGS_DIR = "logs"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOGGER = "napari_semimoe"


class SessionLog:
    """The file handler of this napari session (moved when another project opens)."""

    def __init__(self) -> None:
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path: Path | None = None
        self._handler: logging.Handler | None = None

    def open_in(self, project_root: Path) -> Path | None:
        """Log to PROJECT/logs/napari-STAMP.log from now on; None if it cannot be created
        (a read-only project still opens: the dock then says where nothing is logged)."""
        path = Path(project_root) / LOGS_DIR / f"napari-{self.stamp}.log"
        if path == self.path:
            return path
        try:
            path.parent.mkdir(exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8", delay=False)
        except OSError:
            return None
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(logging.INFO)
        self.close()
        logger = logging.getLogger(_LOGGER)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        self._handler, self.path = handler, path
        logger.info("napari session log (project %s)", project_root)
        return path

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger(_LOGGER).removeHandler(self._handler)
            self._handler.close()
            self._handler = None
