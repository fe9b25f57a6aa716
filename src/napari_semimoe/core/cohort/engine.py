"""The driver of a cohort: slides -> tasks on dask.distributed, stage by stage per slide.

Per slide: ``plan`` (one task) -> ``maps`` (one task per block: the tiles that start in
it, each tile predicted once, their weighted sums kept) -> ``labels`` (one per block, once
all maps of the slide exist: it merges the sums of the blocks around it, since tiles reach
over block borders, into the block's finished maps and mask, then labels glands in a halo
of its neighbours) ->
the driver joins glands across block borders (union-find) -> ``relabel`` (one per block)
-> ``pyramid`` (one per array) -> optional native mask TIFF -> metadata. Slides progress
independently, so many slides fill the cluster while one big slide spreads over it.
Every task's done marker lets ``resume`` skip what is finished. Without a client the same
tasks run in this process, one after another: :func:`predict_in_process` (single-slide
``predict``) and ``run_cohort(inline=True)``.

It is about 560 lines because the driver's stage machine, its two entry points (a cohort
on a cluster, one slide in-process) and the summary files share the same state per slide.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import InputError
from ..inference import PredictOptions
from . import blocks, layout
from .executors import Dask, Inline, start_client
from .labels import join_blocks
from .layout import CHUNK, SlidePlan
from .slides import ZARR_SUFFIX, expand_slides, output_names

log = logging.getLogger(__name__)

STAGES = ("plan", "maps", "labels", "relabel", "pyramid", "export", "done")
PYRAMID_KEYS = ("", "labels/mask", "labels/instances")


@dataclass
class CohortOptions:
    """How a cohort runs. ``scheduler``: a dask scheduler address (a real cluster); else a
    ``LocalCluster`` of ``workers`` processes. ``threads_per_worker`` = torch threads per
    worker; each worker runs one task at a time, so a machine is never oversubscribed."""

    workers: int | None = None  # default: cores // threads_per_worker
    threads_per_worker: int = 1
    scheduler: str | None = None
    block: int = 1024  # block side in working px, rounded up to whole chunks
    chunk: int = CHUNK  # chunk side of the output arrays, working px
    #: context (working px) a block's instances and uncertainty see around it; default the
    #: tile. A gland whose mask component spans at most this gets exactly the ids of a
    #: whole-slide labelling; larger ones are still joined across borders.
    halo: int | None = None
    resume: bool = False
    tissue_only: bool = True
    native_mask: bool = False  # also OUT/<name>_mask.tif at the slide's native size
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    precision: str = "auto"
    threshold: float = 0.5
    tta: str = "off"  # PredictOptions.tta
    fill_holes: bool = False
    min_object: int = 0  # px of working scale
    device: str = "auto"
    dashboard_address: str | None = ":8787"

    def predict_options(self) -> PredictOptions:
        return PredictOptions(
            tile=self.tile,
            overlap=self.overlap,
            batch=self.batch,
            precision=self.precision,
            threads=self.threads_per_worker,
            tissue_only=self.tissue_only,
            threshold=self.threshold,
            tta=self.tta,
            fill_holes=self.fill_holes,
            min_object=self.min_object,
        )


@dataclass
class SlideResult:
    """One slide's line of the summary."""

    name: str
    path: str
    status: str = "queued"  # queued, running, done, failed, stopped
    error: str | None = None
    seconds: float | None = None
    out: str | None = None
    tiles: int = 0
    blocks: int = 0
    work_shape: tuple[int, int] | None = None
    tissue_mm2: float | None = None
    gland_count: int | None = None
    gland_area_mm2: float | None = None
    classes: dict[str, dict[str, float]] = field(default_factory=dict)
    resumed_blocks: int = 0
    network_seconds: float = 0.0  # time the workers spent in the network for this slide


@dataclass
class CohortProgress:
    """What a progress callback gets (after every finished task)."""

    tiles_done: int
    tiles_total: int  # an estimate until every slide is planned
    slides_done: int
    slides_failed: int
    slides_total: int
    elapsed: float
    slides: dict[str, str]  # name -> stage or final status
    dashboard: str | None = None
    #: name -> (tiles done, tiles in all; 0 until the slide is planned), for per-slide rows
    tiles: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: name -> the one-line reason of a failed slide, as soon as it failed
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class CohortSummary:
    slides: list[SlideResult]
    seconds: float
    stopped: bool = False
    dashboard: str | None = None
    summary_json: str | None = None
    summary_csv: str | None = None

    @property
    def failed(self) -> list[SlideResult]:
        return [s for s in self.slides if s.status == "failed"]


ProgressCallback = Callable[[CohortProgress], None]

# ----------------------------------------------------------------------------- the driver


@dataclass(eq=False)
class _Slide:
    result: SlideResult
    out: Path
    plan: SlidePlan | None = None
    stage: str = "plan"
    pending: list = field(default_factory=list)
    labels: dict[int, dict] = field(default_factory=dict)
    tiles_est: dict[int, int] = field(default_factory=dict)
    started: float | None = None


def run_cohort(
    run: str | Path,
    slides: Sequence[str | Path],
    out: str | Path,
    options: CohortOptions | None = None,
    *,
    client=None,
    inline: bool = False,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> CohortSummary:
    """Predict every slide of a cohort into ``out/<name>.ome.zarr``; the per-slide summary
    is returned and written as ``out/cohort_summary.json`` and ``.csv``.

    ``client``: an existing distributed client (left open); else one is started from
    ``options`` (a scheduler address or a LocalCluster, closed at the end); ``inline``: no
    cluster, every task in this process. ``progress`` is called in this thread after every
    finished task (a GUI hands it to its thread by a signal); ``stop`` (an Event) stops
    cleanly: queued tasks are cancelled, finished blocks stay for ``resume``. A slide that
    cannot be read is marked failed with its one-line reason; the others finish.
    Ctrl-C (KeyboardInterrupt) cancels the tasks, closes what was started and re-raises.
    """
    opt = options or CohortOptions()
    paths = expand_slides(slides)
    names = output_names(paths)
    out = Path(out)
    chunk = int(opt.chunk)
    if chunk < 64:
        raise InputError(f"the chunk side must be at least 64 working px, got {chunk}")
    if opt.block < chunk:
        raise InputError(f"--block must be at least {chunk} working px, got {opt.block}")
    block = -(-int(opt.block) // chunk) * chunk
    spec = blocks.ModelSpec(str(run), opt.predict_options(), opt.device)
    tiling = _check_model(run, opt)
    states = []
    for p, n in zip(paths, names):
        dest = out / f"{n}{ZARR_SUFFIX}"
        if dest.exists() and not opt.resume:
            raise InputError(f"{dest} exists; --resume completes it, or choose another --out")
        states.append(_Slide(SlideResult(n, str(p), out=str(dest)), dest))
    t0 = time.perf_counter()
    # ome-zarr takes seconds to import; it is needed only at a slide's end: meanwhile.
    threading.Thread(target=_preload, daemon=True).start()
    cluster = None
    own = False
    if inline:
        ex: Any = Inline()
    else:
        if client is None:
            client, cluster = start_client(opt)
            own = True
        ex = Dask(client)
    out.mkdir(parents=True, exist_ok=True)  # once the cluster is there
    driver = _Driver(ex, spec, states, block, opt, progress, stop, t0, tiling)
    try:
        stopped = driver.run()
    except BaseException:
        ex.close()
        for s in states:
            if s.result.status in ("queued", "running"):
                s.result.status = "stopped"
        _write_summary(out, states, time.perf_counter() - t0)
        raise
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    js, cs = _write_summary(out, states, time.perf_counter() - t0)
    return CohortSummary(
        [s.result for s in states], time.perf_counter() - t0, stopped, ex.dashboard, js, cs
    )


def predict_in_process(
    predictor,
    slide,
    dest: str | Path,
    name: str,
    *,
    block: int = 2048,
    chunk: int = CHUNK,
    halo: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SlideResult:
    """One open ``slide`` into the OME-Zarr ``dest`` with a loaded ``predictor``: the
    cohort's tasks, stages and layout, run in this process (no cluster, the model not
    reloaded), so single-slide ``predict`` and a cohort compute the same working-scale
    results. ``progress(tiles done, tiles estimated)`` after every batch; ``cancel()``
    true -> InterruptedError. A task's error is raised as it is (not a failed slide)."""
    if chunk < 64 or block < chunk:
        raise InputError(f"block ({block}) and chunk ({chunk}) must be >= 64 px, block >= chunk")
    block = -(-int(block) // chunk) * chunk
    opt = CohortOptions(block=block, chunk=chunk, halo=halo, tissue_only=predictor.opt.tissue_only)
    state = _Slide(SlideResult(name, str(slide.path), out=str(dest)), Path(dest))
    done, total = [0], [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], max(total[0], done[0]))

    def seen(p: CohortProgress) -> None:
        total[0] = p.tiles_total

    with blocks.in_process(predictor, slide, tick, cancel) as spec:
        driver = _Driver(
            Inline(),
            spec,
            [state],
            block,
            opt,
            seen,
            None,
            time.perf_counter(),
            (predictor.tile, predictor.overlap),
            strict=True,
        )
        driver.run()
    if progress is not None:
        progress(done[0], done[0])
    return state.result


def _preload() -> None:
    import contextlib

    with contextlib.suppress(ImportError):  # reported where it is used
        import ome_zarr.writer  # noqa: F401


def _check_model(run, opt: CohortOptions) -> tuple[int, int]:
    """The checkpoint is read here once (checked as for predict) so that a bad run or bad
    options are one line before any worker starts; returns the tile and overlap."""
    from ..inference import Predictor, load_model

    loaded = load_model(run, "cpu")
    if loaded.geometry.input_size:
        raise InputError(
            f"{run}: this model was trained on whole images resized to "
            f"{loaded.geometry.input_size}px; a cohort needs a model trained with a working "
            "scale (--scale)"
        )
    p = Predictor(loaded, PredictOptions(tile=opt.tile, overlap=opt.overlap, batch=opt.batch))
    return p.tile, p.overlap


class _Driver:
    def __init__(
        self, ex, spec, states, block, opt, progress, stop, t0, tiling, strict=False
    ) -> None:
        self.ex, self.spec, self.states, self.block, self.opt = ex, spec, states, block, opt
        self.strict = strict  # a task's error is raised, not a failed slide (in-process)
        self.tiling = tiling
        self.progress, self.stop, self.t0 = progress, stop, t0
        self.tiles_done = 0

    # -- submission

    def _submit(self, s: _Slide, tag: tuple, fn, *args, priority: int = 0) -> None:
        s.pending.append(self.ex.submit((s, *tag), fn, *args, priority=priority))

    def start(self, i: int, s: _Slide) -> None:
        s.result.status = "running"
        s.started = time.perf_counter()
        if layout.is_complete(s.out):
            self._from_metadata(s)
            return
        if self.opt.resume and layout.plan_path(s.out).is_file():
            import json

            s.plan = SlidePlan.from_json(json.loads(layout.plan_path(s.out).read_text()))
            self.after_plan(s)
            return
        self._submit(
            s,
            ("plan", 0),
            blocks.plan_slide,
            s.result.path,
            s.result.name,
            str(s.out),
            self.spec,
            self.block,
            int(self.opt.chunk),
            self.opt.halo,
            priority=-i,
        )

    def after_plan(self, s: _Slide) -> None:
        plan = s.plan
        s.result.work_shape = plan.work
        s.result.blocks = len(plan.blocks())
        if plan.work_mpp:
            s.result.tissue_mm2 = round(plan.tissue_px * plan.work_mpp**2 / 1e6, 4)
        grid = blocks.TileGrid(plan.work, *self.tiling)
        most = max(plan.block_tiles or [0])
        s.stage = "maps"
        for b, box in enumerate(plan.blocks()):
            if layout.marker(s.out, "maps", b).is_file():
                s.result.resumed_blocks += 1
                continue
            if plan.block_tiles is not None:
                s.tiles_est[b] = plan.block_tiles[b]
            else:  # a plan written before the counts were kept
                s.tiles_est[b] = len(blocks.block_tiles(grid, box, None, 0, 0)[2])
        # The largest blocks first: a slide's blocks differ by the tissue in them, and one
        # big block left for the end keeps one worker busy while the others wait. The
        # scheduler hands tasks to workers as they arrive, so the order of submission is
        # what counts; the priority (in [0, 1): after any slide's later stages, 5+, and
        # before the next slides' plans, <= 0) orders what waits on a worker.
        for b in sorted(s.tiles_est, key=lambda b: (-s.tiles_est[b], b)):
            self._submit(
                s, ("maps", b), blocks.predict_block, self.spec, plan, b,
                priority=s.tiles_est[b] / (1 + most),
            )  # fmt: skip
        self._advance(s)

    def _advance(self, s: _Slide) -> None:
        """Start the slide's next stage once the current one has nothing pending."""
        while not s.pending and s.result.status == "running":
            plan = s.plan
            if s.stage == "maps":
                s.stage = "labels"
                for b in range(len(plan.blocks())):
                    m = layout.marker(s.out, "labels", b, "json")
                    if m.is_file():
                        import json

                        s.labels[b] = json.loads(m.read_text())
                        continue
                    self._submit(
                        s, ("labels", b), blocks.label_block, self.spec, plan, b, priority=5
                    )
            elif s.stage == "labels":
                s.stage = "relabel"
                luts, count, areas = join_blocks(plan.grid(), s.labels)
                s.result.gland_count = count
                px = plan.work_mpp**2 / 1e6 if plan.work_mpp else None
                area = float(sum(areas))
                s.result.gland_area_mm2 = round(area * px, 4) if px else None
                s.result.classes = {
                    "gland": {
                        "count": count,
                        "area_px": area,
                        "area_mm2": round(area * px, 4) if px else None,
                    }
                }
                for b in range(len(plan.blocks())):
                    if layout.marker(s.out, "relabel", b).is_file():
                        continue
                    self._submit(
                        s, ("relabel", b), blocks.relabel_block, plan, b, luts[b], priority=6
                    )
            elif s.stage == "relabel":
                s.stage = "pyramid"
                for key in PYRAMID_KEYS:
                    if layout.marker(s.out, "pyramid", key.replace("/", "_") or "maps").is_file():
                        continue
                    self._submit(s, ("pyramid", key), blocks.build_pyramid, plan, key, priority=7)
                if not layout.marker(s.out, "pyramid", "gates").is_file():
                    self._submit(s, ("pyramid", "gates"), blocks.gather_gates, plan, priority=7)
            elif s.stage == "pyramid":
                s.stage = "export"
                if self.opt.native_mask:
                    dest = str(s.out.parent / f"{plan.name}_mask.tif")
                    self._submit(s, ("export", 0), blocks.export_mask_tiff, plan, dest, priority=8)
            elif s.stage == "export":
                s.stage = "done"
                layout.finish(plan, self._summary_attrs(s))
                s.result.status = "done"
                s.result.seconds = round(time.perf_counter() - s.started, 3)

    def _summary_attrs(self, s: _Slide) -> dict:
        r = s.result
        return {
            "blocks": r.blocks,
            "tissue_mm2": r.tissue_mm2,
            "gland_count": r.gland_count,
            "gland_area_mm2": r.gland_area_mm2,
            "classes": r.classes,
        }

    def _from_metadata(self, s: _Slide) -> None:
        """A slide finished by an earlier run: its summary from its metadata."""
        summ = layout.read_semimoe(s.out).get("summary", {})
        r = s.result
        for k in ("tissue_mm2", "gland_count", "gland_area_mm2", "classes"):
            if k in summ:
                setattr(r, k, summ[k])
        r.status = "done"
        r.seconds = 0.0
        r.resumed_blocks = r.blocks = int(summ.get("blocks", 0))
        s.stage = "done"

    # -- the loop

    def run(self) -> bool:
        for i, s in enumerate(self.states):
            try:
                self.start(i, s)
            except Exception as exc:  # noqa: BLE001 - a damaged earlier output: this slide fails
                self._fail(s, exc)
        self._report()
        while self.ex.pending():
            if self.stop is not None and self.stop.is_set():
                self.ex.close()
                for s in self.states:
                    if s.result.status in ("queued", "running"):
                        s.result.status = "stopped"
                self._report()
                return True
            for tag, value, exc in self.ex.next(0.05):
                s, stage, index = tag[0], tag[1], tag[2]
                if tag in s.pending:
                    s.pending.remove(tag)
                if s.result.status != "running":
                    continue
                if exc is not None:
                    self._fail(s, exc)
                    continue
                try:
                    self._done(s, stage, index, value)
                except Exception as e:  # noqa: BLE001 - this slide fails, the others go on
                    self._fail(s, e)
                self._report()
        return False

    def _done(self, s: _Slide, stage: str, index, value) -> None:
        if stage == "plan":
            s.plan = value
            self.after_plan(s)
            return
        if stage == "maps":
            est = s.tiles_est.pop(index, value["tiles"])
            del est
            s.result.tiles += value["tiles"]
            s.result.network_seconds = round(s.result.network_seconds + value["net_s"], 3)
            self.tiles_done += value["tiles"]
        elif stage == "labels":
            s.labels[index] = value
        self._advance(s)

    def _fail(self, s: _Slide, exc: BaseException) -> None:
        if self.strict:
            raise exc
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, InputError | OSError):
            msg = f"{type(exc).__name__}: {msg}"
            log.error("%s failed", s.result.path, exc_info=exc)
        s.result.status = "failed"
        s.result.error = msg[:500]
        if s.started is not None:
            s.result.seconds = round(time.perf_counter() - s.started, 3)
        self.ex.cancel(list(s.pending))
        s.pending.clear()
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        total = self.tiles_done + sum(sum(s.tiles_est.values()) for s in self.states)
        unplanned = [s for s in self.states if s.plan is None and s.result.status == "running"]
        if unplanned:
            planned = [s for s in self.states if s.plan is not None]
            per = total / len(planned) if planned else 0
            total += int(per * len(unplanned))
        res = [s.result for s in self.states]
        self.progress(
            CohortProgress(
                tiles_done=self.tiles_done,
                tiles_total=max(total, self.tiles_done),
                slides_done=sum(r.status == "done" for r in res),
                slides_failed=sum(r.status == "failed" for r in res),
                slides_total=len(res),
                elapsed=time.perf_counter() - self.t0,
                slides={
                    s.result.name: s.stage if s.result.status == "running" else s.result.status
                    for s in self.states
                },
                dashboard=self.ex.dashboard,
                tiles={
                    s.result.name: (s.result.tiles, s.result.tiles + sum(s.tiles_est.values()))
                    for s in self.states
                },
                errors={r.name: r.error for r in res if r.status == "failed" and r.error},
            )
        )


# ----------------------------------------------------------------------------- summary

CSV_FIELDS = (
    "name",
    "path",
    "status",
    "error",
    "seconds",
    "tiles",
    "blocks",
    "resumed_blocks",
    "network_seconds",
    "tissue_mm2",
    "gland_count",
    "gland_area_mm2",
    "out",
)


def _write_summary(out: Path, states, seconds: float) -> tuple[str, str]:
    from dataclasses import asdict

    rows = [asdict(s.result) for s in states]
    js = out / "cohort_summary.json"
    atomic_write_json(js, {"seconds": round(seconds, 3), "slides": rows})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})
    cs = out / "cohort_summary.csv"
    atomic_write_text(cs, buf.getvalue())
    return str(js), str(cs)
