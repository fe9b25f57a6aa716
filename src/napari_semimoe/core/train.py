"""The trainer of every model family: labeled + unlabeled sampling, λ ramp, warm-up + step
decay, atomic checkpoints, pause / stop / resume, and progress events.

The model, its targets and its loss come from the run's family (:mod:`.families`): the
trainer asks it for the network, the per-task targets and the training pass (whose loss is
the sum of the family's loss terms), so a new family needs no edit here.

Over 500 lines on purpose: the Trainer is one state machine (samplers, RNG streams, prefetch,
checkpoint + resume, stop/pause, snapshots) whose resume-exactness invariants hold only
together; its config and events are small and live beside it.

It is a plain object driven by ``run()``; the CLI calls it directly and the napari plugin
runs it in a child process and forwards its events through a queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .attributes import fill_attributes, seen_values
from .checkpoint import (
    load_model_state,
    load_optimizer_state,
    read_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig  # the run's settings (core.config is its home)
from .data import CyclicSampler, Geometry, TrainingSet, channel_stats, make_batch
from .device import autocast_dtype, enable_determinism, resolve_device, set_threads
from .errors import CheckpointError, InputError, plural
from .families import DEFAULT_FAMILY, get_family
from .routing import set_routes
from .runfolder import RunFolder
from .teacher import ema_update, make_teacher, saved_teacher, teacher_decay, teacher_state

log = logging.getLogger(__name__)


def stain_normalise(data: TrainingSet, reference: dict | None) -> None:
    """Stain normalisation as preprocessing: every image of the set re-stained to the run's
    reference, each from its own basis (glass-only images are left as they are). Marks the
    set, so a set swapped in twice is not normalised twice."""
    if reference is None or getattr(data, "_stain_normalised", False):
        return
    from .stain import StainBasis, normalise_or_keep

    ref = StainBasis.from_dict(reference)
    data.labeled_images = [normalise_or_keep(im, ref) for im in data.labeled_images]
    data.unlabeled_images = [normalise_or_keep(im, ref) for im in data.unlabeled_images]
    data._stain_normalised = True


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss diverged); the last good checkpoint is kept."""


class SaveError(TrainingError):
    """A file of the run could not be written (disk full, unwritable); the message names the
    last good checkpoint."""


@dataclass
class ProgressEvent:
    """What the trainer reports; plain data, so it crosses process boundaries as a dict."""

    kind: str  # start | iteration | checkpoint | paused | resumed | stopped | done | warning
    iteration: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    s: list[float] = field(default_factory=list)
    lam: float = 0.0
    lr: float = 0.0
    elapsed: float = 0.0
    eta: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Flag(Protocol):
    """threading.Event and multiprocessing.Event both fit."""

    def is_set(self) -> bool: ...


EventCallback = Callable[[ProgressEvent], None]
#: Called before each iteration; may call ``trainer.replace_data`` (tiles added / rejected).
IterationHook = Callable[["Trainer", int], None]


class Trainer:
    """One training run in ``run_dir``; create it fresh or with ``resume=True`` to continue.

    The run folder is locked from here until ``run()`` returns (or ``close()``), so that no
    other process writes it meanwhile; a :class:`RunFolder` the caller has locked already
    stays the caller's to unlock.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingSet,
        run_dir: str | Path | RunFolder,
        *,
        resume: bool = False,
        init_from: str | Path | None = None,
        stats: tuple[list[float], list[float]] | None = None,
    ) -> None:
        self.folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
        self.run_dir = self.folder.path
        self.ckpt_path = self.folder.checkpoint_path
        self._owns_lock = not self.folder.held
        self.folder.lock(create=not resume)
        try:
            self._setup(config, data, resume, init_from, stats)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of the run folder's lock if this trainer took it."""
        if self._owns_lock:
            self.folder.unlock()

    def _setup(
        self,
        config: TrainConfig,
        data: TrainingSet,
        resume: bool,
        init_from: str | Path | None,
        stats: tuple[list[float], list[float]] | None,
    ) -> None:
        doc: dict | None = None
        tensors: dict[str, torch.Tensor] | None = None
        #: The iteration of the checkpoint on disk (None: none saved yet).
        self.saved_iteration: int | None = None
        if resume:
            tensors, doc = read_checkpoint(self.ckpt_path)
            config = resumed_config(doc["meta"]["config"], config)
        config.validate()
        self.config = config
        self.geometry = Geometry.from_dict(config.geometry)
        set_threads(config.threads)
        self.device = resolve_device(config.device)
        if config.deterministic:
            enable_determinism()
        self.amp = autocast_dtype(self.device, config.precision)
        # The run's own torch RNG (gate dropout: the CPU generator, and the GPU's on a GPU),
        # kept apart from the global one so that runs in one process do not disturb each
        # other and a resume is exact.
        self._gpu_ids = [self.device.index or 0] if self.device.type == "cuda" else []
        self.gpu_rng: torch.Tensor | None = None
        family = get_family(config.family)
        fill_attributes(data, config.attributes)
        stain_normalise(data, config.stain_reference)
        if doc is None:
            if config.attribute_routing and not config.attribute_values:
                # One router per value seen in training (labeled or not), plus "any".
                config.attribute_values = seen_values(
                    [*data.labeled_attributes, *data.unlabeled_attributes]
                )
                log.info(
                    "attribute routing: a router for each of %s, and 'any'",
                    ", ".join(config.attribute_values) or "no attribute value",
                )
            family.prepare(config, data)  # e.g. DCA's split, stored in the config
        try:
            self.family = family.configure(config)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        with torch.random.fork_rng(devices=self._gpu_ids):
            torch.manual_seed(config.seed)
            self.model = self.family.build(config).to(self.device)
            self._keep_rng()
        # Channels-last pays with bf16 (oneDNN); in fp32 its batch norm is slower on CPU.
        self.channels_last = config.fast and self.amp is not None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if not config.fast and hasattr(self.model, "literal"):
            self.model.literal = True
        network, weights = self.family.parameter_groups(self.model)
        self.opt = torch.optim.SGD(
            network,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            foreach=True,  # one fused update over all tensors (CPU defaults to a loop)
        )
        #: The learnt loss weights' optimiser (None: the family learns none).
        self.opt_s = torch.optim.Adam(weights, lr=config.s_lr, foreach=True) if weights else None
        self.rng = np.random.default_rng(config.seed)
        self.data = data
        self.lab_sampler = CyclicSampler(len(data.labeled_images), self.rng)
        self.unl_sampler = CyclicSampler(len(data.unlabeled_images), self.rng)
        self.iteration = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        if doc is not None and tensors is not None:
            self._restore(tensors, doc)
            self.saved_iteration = self.iteration
            # The iterations after the checkpoint are trained again: their records go.
            self.folder.trim_log(self.iteration)
        else:
            self.folder.prepare_new_run()
            if init_from is not None:
                t, d = read_checkpoint(init_from)
                cfg = d["meta"]["config"]
                other = d["meta"].get("family", DEFAULT_FAMILY)
                if other != self.family.name:
                    raise CheckpointError(
                        f"{init_from} is a {other} model, this run trains {self.family.name}"
                    )
                if int(cfg["width"]) != config.width:
                    raise CheckpointError(
                        f"{init_from} has model width {cfg['width']}, this run asks for "
                        f"{config.width}"
                    )
                load_model_state(self.model, t)
            self.mean, self.std = stats or channel_stats(
                list(data.labeled_images) + list(data.unlabeled_images)
            )
        #: Semi-MoE's mean teacher for the pseudo-labels (``ema_teacher``; None: off). A
        #: resumed run continues its saved teacher; one saved without it starts from the
        #: restored weights.
        self.teacher: torch.nn.Module | None = None
        if config.ema_teacher > 0 and self._semi_supervised():
            self.teacher = make_teacher(self.model, saved_teacher(tensors or {}))
        self._step_times: deque[float] = deque(maxlen=20)
        #: Build the next batch (augmentation, SDF/boundary targets: ~90 ms of numpy at
        #: 256^2) in a thread while this iteration computes, as a DataLoader worker would.
        self.prefetch = True
        self._loader: ThreadPoolExecutor | None = None
        self._pending: tuple[dict[str, Any], Future] | None = None
        #: Run the labeled and unlabeled halves side by side on a CPU with >= 2 threads
        #: (see :class:`_Halves`); False runs them one after the other, same function.
        self.parallel_halves = True
        #: The family's own per-run state (compiled parts, helper threads, ...).
        self.state: dict[str, Any] = {}
        setup = getattr(self.family, "setup", None)
        if setup is not None:
            setup(self)

    # ------------------------------------------------------------------ state

    def _keep_rng(self) -> None:
        self.torch_rng = torch.get_rng_state()
        if self._gpu_ids:
            self.gpu_rng = torch.cuda.get_rng_state(self._gpu_ids[0])

    def want_compile(self) -> bool:
        # Only on request ("auto" = off): measured no faster (docs/benchmarks.md): on this
        # 2-core CPU inductor compiled for minutes and ran slower; on an H100 a compiled
        # b = 16 step took 62.5 vs 56.8 ms eager.
        return self.config.compile == "on"

    def _restore(self, tensors: dict[str, torch.Tensor], doc: dict) -> None:
        meta = doc["meta"]
        load_model_state(self.model, tensors)
        load_optimizer_state(self.opt, "sgd", tensors, doc)
        if self.opt_s is not None:
            load_optimizer_state(self.opt_s, "adam", tensors, doc)
        st = meta["state"]
        self.iteration = int(st["iteration"])
        self.elapsed = float(st.get("elapsed", 0.0))
        self.mean, self.std = meta["mean"], meta["std"]
        self.rng.bit_generator.state = st["numpy_rng"]
        self.lab_sampler.load_state(st["labeled_sampler"])
        self.unl_sampler.load_state(st["unlabeled_sampler"])
        if "rng.torch" in tensors:
            self.torch_rng = tensors["rng.torch"]
        if "rng.cuda" in tensors and self._gpu_ids:
            self.gpu_rng = tensors["rng.cuda"]
        self.history = self.folder.read_history(self.iteration)

    def meta(self) -> dict[str, Any]:
        """Everything prediction needs, plus the training state needed to resume."""
        return {
            "family": self.family.name,
            "config": dataclasses.asdict(self.config),
            "mean": list(map(float, self.mean)),
            "std": list(map(float, self.std)),
            "geometry": self.geometry.to_dict(),
            "labeled_names": list(self.data.labeled_names),
            "state": {
                "iteration": self.iteration,
                "elapsed": self.elapsed,
                # A batch drawn ahead belongs to the next iteration: save the state before it.
                **(self._pending[0] if self._pending else self._draw_state()),
                "last_losses": self.history[-1]["losses"] if self.history else {},
            },
        }

    def save(self) -> None:
        """Atomically write the loss history, then the checkpoint: a kill in between leaves
        a history that runs ahead of the checkpoint, which a resume cuts back."""
        with self._writing("the checkpoint"):
            self.folder.write_json("history.json", self.history)
            # The torch RNG state (gate dropout) travels too, for an exact resume.
            save_checkpoint(
                self.ckpt_path,
                self.model,
                self.meta(),
                {"sgd": self.opt} | ({"adam": self.opt_s} if self.opt_s else {}),
                extra={"rng.torch": self.torch_rng}
                | ({"rng.cuda": self.gpu_rng} if self.gpu_rng is not None else {})
                | (teacher_state(self.teacher) if self.teacher is not None else {}),
            )
        self.saved_iteration = self.iteration

    def last_good(self) -> str:
        """Where the user's work stands, in words (for error messages)."""
        if self.saved_iteration is None:
            return "no checkpoint had been saved yet"
        return (
            f"the last good checkpoint, {self.ckpt_path} (iteration {self.saved_iteration}), "
            "was kept"
        )

    @contextlib.contextmanager
    def _writing(self, what: str):
        """A failed write (disk full, unwritable) -> one sentence naming the last good
        checkpoint; the atomic writers have left the files as they were."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SaveError(
                f"could not write {what} at iteration {self.iteration} ({reason}); "
                f"{self.last_good()}"
            ) from None

    def replace_data(self, data: TrainingSet) -> None:
        """Swap the training set between iterations (the plugin's tiles changed)."""
        self._cancel_prefetch()  # it was drawn from the old tiles
        if len(data.labeled_images) != len(self.data.labeled_images):
            self.lab_sampler.resize_pool(len(data.labeled_images))
        if len(data.unlabeled_images) != len(self.data.unlabeled_images):
            self.unl_sampler.resize_pool(len(data.unlabeled_images))
        fill_attributes(data, self.config.attributes)
        stain_normalise(data, self.config.stain_reference)
        self.data = data

    # ------------------------------------------------------------------ one iteration

    def _draw_state(self) -> dict[str, Any]:
        return {
            "numpy_rng": self.rng.bit_generator.state,
            "labeled_sampler": self.lab_sampler.state(),
            "unlabeled_sampler": self.unl_sampler.state(),
        }

    def _cancel_prefetch(self) -> None:
        """Drop the batch drawn ahead and rewind the draws, as if it had never been made."""
        if self._pending is None:
            return
        state, fut = self._pending
        self._pending = None
        fut.exception()  # wait for it; its result or error no longer matters
        self.rng.bit_generator.state = state["numpy_rng"]
        self.lab_sampler.load_state(state["labeled_sampler"])
        self.unl_sampler.load_state(state["unlabeled_sampler"])

    def _next_batch(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        if self._pending is not None:
            fut = self._pending[1]
            self._pending = None
            batch = fut.result()
        else:
            batch = self._batches()
        if self.prefetch and self.iteration + 1 < self.config.iterations:
            if self._loader is None:
                self._loader = ThreadPoolExecutor(1, thread_name_prefix="semimoe-batches")
            self._pending = (self._draw_state(), self._loader.submit(self._batches))
        return batch

    def _batches(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        cfg, d, g = self.config, self.data, self.geometry
        tile = g.input_size or g.tile
        li = self.lab_sampler.draw(cfg.labeled_batch)
        xl, yl = make_batch(
            self.rng,
            d.labeled_images,
            d.labeled_masks,
            li,
            tile,
            self.mean,
            self.std,
            targets=self._targets,
            colour=self._colour(),
        )
        xu = None
        if self._semi_supervised():
            ui = self.unl_sampler.draw(cfg.unlabeled_batch)
            xu, _ = make_batch(
                self.rng,
                d.unlabeled_images,
                None,
                ui,
                tile,
                self.mean,
                self.std,
                colour=self._colour(),
            )
        dev = self.device
        routes = self._routes(li, ui if xu is not None else [])
        # Conversions in numpy: this runs in the prefetch thread, where a torch op would
        # start a second OpenMP team next to the training's.
        targets = {
            t.name: torch.from_numpy(t.collate(yl[t.name])).to(dev) for t in self.family.tasks
        }
        if routes is not None:
            # The routers of this batch's images (labeled, then unlabeled), beside the
            # targets: drawn with the batch, so a prefetched batch keeps its own.
            targets["_routes"] = routes.to(dev)
        xl_t = torch.from_numpy(xl).to(dev)
        xu_t = None if xu is None else torch.from_numpy(xu).to(dev)
        return xl_t, targets, xu_t

    def _semi_supervised(self) -> bool:
        c = self.config
        return (
            not c.supervised_only and c.unlabeled_batch > 0 and len(self.data.unlabeled_images) > 0
        )

    def _routes(self, li: list[int], ui: list[int]) -> torch.Tensor | None:
        """Router indices of a batch's images (attribute routing), None when off."""
        from .routing import ANY, routing_of

        routing = routing_of(self.model)
        if not getattr(self.config, "attribute_routing", False) or routing is None:
            return None

        d = self.data
        lab, unl = d.labeled_attributes, d.unlabeled_attributes
        attrs = [lab[i] if i < len(lab) else None for i in li]
        attrs += [unl[i] if i < len(unl) else None for i in ui]
        hide = self.rng.random(len(attrs)) < float(self.config.any_fraction)
        return routing.route([ANY if h else a for a, h in zip(attrs, hide)])

    def _colour(self):
        """The stain augmentation of the run (HED jitter), None when off."""
        s = float(getattr(self.config, "stain_jitter", 0.0))
        if s <= 0:
            return None
        from .stain import hed_jitter

        return lambda rng, tile: hed_jitter(tile, rng, s)

    def _targets(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        return self.family.targets(mask, self.config)

    def step(self) -> dict[str, float]:
        """One optimiser step; returns the per-task losses, total, λ and lr."""
        cfg = self.config
        it = self.iteration
        lam = cfg.lambda_at(it) if self._semi_supervised() else 0.0
        f = cfg.lr_factor(it)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * f
        for group in self.opt_s.param_groups if self.opt_s is not None else ():
            group["lr"] = cfg.s_lr * f
        self.model.train()
        xl, y, xu = self._next_batch()
        set_routes(self.model, y.get("_routes"))  # attribute routing: this batch's routers
        self._zero_grad()
        with torch.random.fork_rng(devices=self._gpu_ids):
            torch.set_rng_state(self.torch_rng)
            if self.gpu_rng is not None:
                torch.cuda.set_rng_state(self.gpu_rng, self._gpu_ids[0])
            if cfg.fast:
                total, sup, uns = self._fast_pass(xl, y, xu, lam)
            else:
                total, sup, uns = self._reference_pass(xl, y, xu, lam)
            self._keep_rng()
        if not torch.isfinite(total):
            self._zero_grad()
            raise TrainingError(
                f"the loss became {float(total)} at iteration {it + 1}; training stopped, "
                f"{self.last_good()} (try a lower learning rate)"
            )
        self.opt.step()
        if self.opt_s is not None:
            self.opt_s.step()
        self.iteration += 1
        if self.teacher is not None:
            ema_update(self.teacher, self.model, teacher_decay(cfg.ema_teacher, self.iteration))
        out = {f"sup_{t}": float(v.detach()) for t, v in sup.items()}
        out.update({f"unsup_{t}": float(v.detach()) for t, v in uns.items()})
        out["total"] = float(total)
        out["lambda"] = lam
        out["lr"] = cfg.lr * f
        weights = self.family.loss_weights(self.model)
        out.update({f"s_{t}": float(v.detach()) for t, v in weights.items()})
        return out

    def _zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.opt_s is not None:
            self.opt_s.zero_grad(set_to_none=True)

    def _fast_pass(self, xl, y, xu, lam):
        """The family's fast pass (channels-last, autocast)."""
        return self.family.fast_pass(self, xl, y, xu, lam)

    def _reference_pass(self, xl, y, xu, lam):
        """The family's reference pass (upstream's order, fp32 unless asked)."""
        return self.family.reference_pass(self, xl, y, xu, lam)

    @property
    def halves_side_by_side(self) -> bool:
        """Whether the semi-supervised steps run their two halves on two threads."""
        side = getattr(self.family, "halves_side_by_side", None)
        return bool(side and side(self))

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        on_event: EventCallback | None = None,
        stop: Flag | None = None,
        pause: Flag | None = None,
        hook: IterationHook | None = None,
    ) -> str:
        """Train until ``config.iterations``; returns 'done' or 'stopped'.

        ``stop`` and ``pause`` are polled between iterations. A stop or a pause saves a
        checkpoint first, so that what was learnt so far is never lost.
        """
        cfg = self.config
        emit = on_event or (lambda e: None)
        if not self.folder.held:  # run() again after an earlier run() let go of the lock
            self.folder.lock(create=False)
            self._owns_lock = True
        try:
            with self._writing("config.json"):
                self.folder.write_config(dataclasses.asdict(cfg))
                log = self.folder.open_log()
        except BaseException:
            self.close()
            raise
        emit(self._event("start", message=self._describe()))
        if not self._semi_supervised() and not cfg.supervised_only:
            why = (
                "no unlabeled images"
                if len(self.data.unlabeled_images) == 0
                else "an unlabeled batch of 0"
            )
            emit(
                self._event(
                    "warning", message=f"{why}: this run trains supervised only (λ stays 0)"
                )
            )
        try:
            if self._snapshot_due() and not self.folder.snapshot_path(self.iteration).exists():
                self._snapshot()  # due at the checkpoint, but the process died writing it
            while self.iteration < cfg.iterations:
                if stop is not None and stop.is_set():
                    self.save()
                    emit(self._event("stopped", message="stopped; checkpoint saved"))
                    return "stopped"
                if pause is not None and pause.is_set():
                    self.save()
                    emit(self._event("paused", message="paused; checkpoint saved"))
                    while pause.is_set() and not (stop is not None and stop.is_set()):
                        time.sleep(0.1)
                    self._step_times.clear()
                    emit(self._event("resumed"))
                    continue
                if hook is not None:
                    hook(self, self.iteration)
                t0 = time.perf_counter()
                losses = self.step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self._step_times.append(dt)
                rec = {"iteration": self.iteration, "losses": losses, "time": self.elapsed}
                self.history.append(rec)
                with self._writing("log.jsonl"):
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                emit(self._event("iteration", losses))
                # The snapshot before the checkpoint: a checkpoint at N means that every
                # snapshot up to N is on disk, so a kill while one is written redoes it.
                if self._snapshot_due():
                    self._snapshot()
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                    self.save()
                    emit(self._event("checkpoint", losses))
            emit(self._event("done", message=f"finished {plural(cfg.iterations, 'iteration')}"))
            return "done"
        finally:
            with contextlib.suppress(OSError):
                log.close()
            self.close()

    def _snapshot_due(self) -> bool:
        every = self.config.snapshot_every
        return bool(every) and self.iteration > 0 and self.iteration % every == 0

    def _snapshot(self) -> None:
        with self._writing("a snapshot"):
            save_checkpoint(self.folder.snapshot_path(self.iteration), self.model, self.meta())

    def _describe(self) -> str:
        amp = "bf16 autocast" if self.amp == torch.bfloat16 else "fp32"
        mode = "supervised-only" if not self._semi_supervised() else "semi-supervised"
        return (
            f"{mode} {self.family.describe(self.config.width)} on {self.device} ({amp}, "
            f"{'fast' if self.config.fast else 'reference'} path); "
            f"{len(self.data.labeled_images)} labeled, "
            f"{len(self.data.unlabeled_images)} unlabeled"
        )

    def _event(
        self, kind: str, losses: dict[str, float] | None = None, message: str = ""
    ) -> ProgressEvent:
        cfg = self.config
        eta = None
        if self._step_times:
            per = float(np.median(self._step_times))
            eta = per * (cfg.iterations - self.iteration)
        losses = losses or {}
        return ProgressEvent(
            kind=kind,
            iteration=self.iteration,
            total=cfg.iterations,
            losses={k: v for k, v in losses.items() if not k.startswith(("s_", "lambda", "lr"))},
            s=[float(v.detach()) for v in self.family.loss_weights(self.model).values()],
            lam=cfg.lambda_at(max(0, self.iteration - 1)) if self._semi_supervised() else 0.0,
            lr=cfg.lr * cfg.lr_factor(max(0, self.iteration - 1)),
            elapsed=self.elapsed,
            eta=eta,
            message=message,
        )


def resumed_config(saved: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The settings a resume trains with: the checkpoint's (a resumed run keeps its
    schedule), with this invocation's run-time settings and, if more, its iterations."""
    config = TrainConfig.from_dict(saved)
    for k in ("device", "threads", "checkpoint_every", "snapshot_every", "compile"):
        setattr(config, k, getattr(given, k))
    config.iterations = max(config.iterations, given.iterations)
    return config


def lr_schedule(config: TrainConfig) -> list[float]:
    """The lr at every iteration (for docs and tests)."""
    return [config.lr * config.lr_factor(i) for i in range(config.iterations)]


__all__ = [
    "ProgressEvent",
    "TrainConfig",
    "SaveError",
    "Trainer",
    "TrainingError",
    "lr_schedule",
    "resumed_config",
]
