"""The dask client of the dock's Cohort page, kept between cohorts (Qt-free).

Starting a LocalCluster's workers costs seconds to tens of seconds (each worker process
imports torch and loads the model at its first task), so the page keeps one client for as
long as the settings (workers x threads, or the scheduler address) stay the same; a change
replaces it, closing the dock or napari closes it.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def default_workers(cores: int | None = None, mem_gb: float | None = None) -> tuple[int, int]:
    """Workers x threads for a cohort on this computer: every core but one (the viewer's),
    2 threads per worker from 4 spare cores on (fewer, larger workers: less memory), and
    at most one worker per 2 GB of memory (a worker holds the model and a block's maps)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    if mem_gb is None:
        try:
            mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            mem_gb = 8.0
    spare = max(1, cores - 1)
    threads = 1 if spare < 4 else 2 if spare < 16 else 4
    workers = max(1, min(spare // threads, int(mem_gb // 2) or 1))
    return workers, threads


class KeptClient:
    """One distributed client (and its LocalCluster, if it started one), reused while the
    settings are the same. Thread-safe: a worker thread gets it, the GUI thread closes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple | None = None  # (settings key, client, local cluster or None)

    @property
    def active(self) -> bool:
        return self._held is not None

    def get(self, options):
        """The client for ``options`` (a CohortOptions): the kept one, or a new one."""
        from ..core.cohort import start_client

        key = options.scheduler or (options.workers, options.threads_per_worker)
        with self._lock:
            if self._held is not None and self._held[0] != key:
                _close(self._held)
                self._held = None
            if self._held is None:
                client, cluster = start_client(options)
                self._held = (key, client, cluster)
            return self._held[1]

    def close(self, wait: bool = True) -> None:
        """Close the client and its local workers (in a thread when not ``wait``)."""
        with self._lock:
            held, self._held = self._held, None
        if held is None:
            return
        if wait:
            _close(held)
        else:
            threading.Thread(target=_close, args=(held,), daemon=True).start()


def _close(held: tuple) -> None:
    _key, client, cluster = held
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    except Exception:  # noqa: BLE001 - closing at exit: nothing left to do about it
        log.warning("closing the cohort's workers failed", exc_info=True)
