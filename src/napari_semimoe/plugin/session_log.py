"""One log file per napari session, in the project folder: PROJECT/logs/napari-STAMP.log.

Everything the package logs (``napari_semimoe.*``: the dock, core, and the training child's
records forwarded through its event queue) goes there with full tracebacks; the dock shows
one readable line and names the file. Opening another project moves the log there. STAMP is
the time this napari process first opened a log, so two docks of one session on one project
share a file (and a handler: no line is written twice).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

LOGS_DIR = "logs"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOGGER = "napari_semimoe"
_STAMP: list[str] = []
#: path -> (its handler, how many SessionLogs use it)
_OPEN: dict[Path, list] = {}


class SessionLog:
    """The file handler of this napari session (moved when another project opens)."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def open_in(self, project_root: Path) -> Path | None:
        """Log to PROJECT/logs/napari-STAMP.log from now on; None if it cannot be created
        (a read-only project still opens; the dock then names no log)."""
        if not _STAMP:
            _STAMP.append(time.strftime("%Y%m%d-%H%M%S"))
        path = Path(project_root) / LOGS_DIR / f"napari-{_STAMP[0]}.log"
        if path == self.path:
            return path
        if path not in _OPEN:
            try:
                path.parent.mkdir(exist_ok=True)
                handler = logging.FileHandler(path, encoding="utf-8")
            except OSError:
                return None
            handler.setFormatter(logging.Formatter(FORMAT))
            handler.setLevel(logging.INFO)
            logger = logging.getLogger(_LOGGER)
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            _OPEN[path] = [handler, 0]
        self.close()
        _OPEN[path][1] += 1
        self.path = path
        logging.getLogger(_LOGGER).info("napari session log (project %s)", project_root)
        return path

    def close(self) -> None:
        """Stop using the file (closed once no dock of this session logs to it)."""
        path, self.path = self.path, None
        if path is None or path not in _OPEN:
            return
        _OPEN[path][1] -= 1
        if _OPEN[path][1] <= 0:
            handler = _OPEN.pop(path)[0]
            logging.getLogger(_LOGGER).removeHandler(handler)
            handler.close()
