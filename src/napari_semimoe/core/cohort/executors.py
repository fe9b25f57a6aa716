"""Where a cohort's tasks run: on a dask.distributed client (:class:`Dask`), or in this
process one after another (:class:`Inline`); both give the driver the same four calls
(``submit``, ``next``, ``cancel``, ``close``). And :func:`start_client`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import InputError


class Inline:
    """Runs tasks in this process, one per ``next()`` (the engine's single-process mode)."""

    dashboard = None

    def __init__(self) -> None:
        self.queue: list[tuple[Any, Callable, tuple]] = []

    def submit(self, tag, fn, *args, priority: int = 0):
        self.queue.append((tag, fn, args))
        self.queue.sort(key=lambda q: 0)  # keep submission order (stable)
        return tag

    def pending(self) -> int:
        return len(self.queue)

    def next(self, timeout: float):
        tag, fn, args = self.queue.pop(0)
        try:
            return [(tag, fn(*args), None)]
        except Exception as exc:  # noqa: BLE001 - reported per slide
            return [(tag, None, exc)]

    def cancel(self, tags) -> None:
        tags = set(map(id, tags))
        self.queue = [q for q in self.queue if id(q[0]) not in tags]

    def close(self) -> None:
        self.queue.clear()


class Dask:
    """Tasks on a distributed client; results as they complete."""

    def __init__(self, client) -> None:
        from distributed import as_completed

        self.client = client
        self.ac = as_completed()
        self.tags: dict[str, Any] = {}
        self.futures: dict[int, Any] = {}
        self.n = 0
        self.dashboard = _dashboard(client)

    def submit(self, tag, fn, *args, priority: int = 0):
        self.n += 1
        fut = self.client.submit(fn, *args, pure=False, priority=priority)
        self.tags[fut.key] = tag
        self.futures[id(tag)] = fut
        self.ac.add(fut)
        return tag

    def pending(self) -> int:
        return self.ac.count()

    def next(self, timeout: float):
        if not self.ac.has_ready():
            time.sleep(timeout)
            if not self.ac.has_ready():
                return []
        out = []
        for fut in self.ac.next_batch(block=False):
            tag = self.tags.pop(fut.key, None)
            if tag is None:
                continue
            self.futures.pop(id(tag), None)
            if fut.status == "finished":
                out.append((tag, fut.result(), None))
            elif fut.status == "cancelled":
                continue
            else:
                out.append((tag, None, fut.exception()))
        return out

    def cancel(self, tags) -> None:
        futs = [self.futures.pop(id(t)) for t in tags if id(t) in self.futures]
        for f in futs:
            self.tags.pop(f.key, None)
        if futs:
            self.client.cancel(futs)

    def close(self) -> None:
        futs = list(self.futures.values())
        if futs:
            self.client.cancel(futs)
        self.futures.clear()
        self.tags.clear()
        self.ac.clear()


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client) -> str | None:
    """The dashboard's address; None when there is none (bokeh missing here for a local
    cluster)."""
    try:
        if client.cluster is not None and not _has_bokeh():
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard is not an error
        return None


def start_client(options: Any):
    """A distributed client for ``options`` (:class:`CohortOptions`): to its scheduler, or
    to a new LocalCluster (returned too, so the caller closes it). One-line InputError when
    the scheduler cannot be reached."""
    import os

    from distributed import Client, LocalCluster

    if options.threads_per_worker < 1:
        raise InputError(f"--threads-per-worker must be >= 1, got {options.threads_per_worker}")
    if options.scheduler:
        try:
            return Client(options.scheduler, timeout="5s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the dask scheduler at {options.scheduler}: {exc}"
            ) from None
    n = options.workers or max(1, (os.cpu_count() or 1) // options.threads_per_worker)
    if n < 1:
        raise InputError(f"--workers must be >= 1, got {n}")
    import dask

    # dask's nanny sets its "pre-spawn" variables in *this* process's environment before
    # starting a worker (so every later child of napari or the CLI, a training process
    # too, would inherit OMP_NUM_THREADS=1), and one of them, MALLOC_TRIM_THRESHOLD_, turns
    # off glibc's adaptive mmap threshold: every large tensor is then a fresh mmap, and a
    # worker's network ran 1.7-1.9x slower (measured, docs/cohort.md). So none is set
    # here; the workers get the thread limits in their own environment instead.
    quiet = {k: None for k in dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": quiet}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # one task at a time; torch gets threads_per_worker threads
            processes=True,
            # no bokeh, no dashboard: its HTTP port is then any free one (no "port in use")
            dashboard_address=options.dashboard_address if _has_bokeh() else ":0",
            silence_logs=logging.CRITICAL,  # a failed task is reported per slide
            env=dict(WORKER_ENV),
        )
    return Client(cluster), cluster


#: Set in every local worker's own environment: numpy's BLAS and OpenMP one thread (torch's
#: threads are set per worker by the predictor), so workers never oversubscribe the cores.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
