"""``train``: a new run or ``--resume``, with Ctrl-C / SIGTERM stopping after an iteration."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from ..core.errors import InputError, plural
from ..core.logs import FILE_ONLY
from .options import (
    _bar,
    _check_threads,
    _check_width,
    _geometry,
    _invocation,
    _spell,
    _tqdm_progress,
)

_log = logging.getLogger("napari_semimoe.cli")


# ----------------------------------------------------------------------------- train

#: train options that define a run (model, data split, schedule); a resumed run keeps its own,
#: so giving one with --resume is refused instead of silently ignored. Their defaults are
#: the run config's (:func:`run_defaults`).
RUN_OPTIONS = (
    "family",
    "width",
    "labeled",
    "labeled_fraction",
    "unlabeled",
    "seed",
    "lr",
    "gamma",
    "lambda_max",
    "ema_teacher",
    "pseudo_confidence",
    "scale",
    "input_size",
    "tile",
    "precision",
    "batch_norm",
    "supervised_only",
    "reference",
    "instance_boundaries",
    "deterministic",
    "unknown_value",
    "dca_split",
    "dca_fusion",
    "experts",
    "top_k",
    "balance",
    "consistency",
    "stain_jitter",
    "attributes",
    "attribute_routing",
    "stain_normalise",
)


@functools.cache
def run_defaults() -> dict[str, object]:
    """The defaults of :data:`RUN_OPTIONS`, read from the one config (TrainConfig and
    Geometry), so that the CLI, the trainer and the plugin cannot disagree."""
    from ..core.data import Geometry

    c, g = _config_defaults(), Geometry()
    defaults: dict[str, object] = {
        "family": c.family,
        "width": c.width,
        "labeled": None,  # every image with a mask
        "labeled_fraction": None,
        "unlabeled": None,
        "seed": c.seed,
        "lr": None,  # the family's default_lr
        "gamma": c.gamma,
        "lambda_max": c.lambda_max,
        "ema_teacher": c.ema_teacher,
        "pseudo_confidence": c.pseudo_confidence,
        "scale": g.scale,
        "input_size": g.input_size,
        "tile": g.tile,
        "precision": c.precision,
        "batch_norm": c.batch_norm,
        "supervised_only": c.supervised_only,
        "reference": not c.fast,
        "instance_boundaries": c.per_instance_boundary,
        "deterministic": c.deterministic,
        "unknown_value": c.unknown_value,
        "dca_split": None,  # the log-gap split of the labeled masks
        "dca_fusion": c.dca_fusion,
        "experts": c.experts,
        "top_k": c.top_k,
        "balance": c.balance,
        "consistency": c.consistency,
        "stain_jitter": c.stain_jitter,
        "attributes": None,  # every image unknown
        "attribute_routing": c.attribute_routing,
        "stain_normalise": None,  # off
    }
    assert tuple(defaults) == RUN_OPTIONS
    return defaults


@functools.cache
def _config_defaults():
    from ..core.config import TrainConfig

    return TrainConfig()


class _Signals:
    """SIGINT (Ctrl-C) and SIGTERM (a job scheduler, ``timeout``) while train runs.

    During start-up either one aborts at once (nothing to save yet). Once training runs, the
    first one asks the trainer to stop after the current iteration and save a checkpoint; a
    second one aborts (the last good checkpoint stays).
    """

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: int | None = None
        self.training = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        for sig in self.NAMES:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame) -> None:
        if not self.training or self.stop.is_set():
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"\n{self.NAMES[signum]}: stopping after this iteration and saving a checkpoint "
            f"({self.NAMES[signum]} again to abort)...",
            file=sys.stderr,
        )
        self.stop.set()


def cmd_train(args: argparse.Namespace) -> int:
    from ..core.runfolder import RunFolder

    _check_threads(args.threads)
    if args.resume:
        RunFolder.refuse_run_settings([k for k in RUN_OPTIONS if hasattr(args, k)], _spell)
    else:
        for k, v in run_defaults().items():
            if not hasattr(args, k):
                setattr(args, k, v)
        if not args.data:
            raise InputError("train needs --data DIR (or --resume RUN)")
        if args.iterations is None:
            raise InputError("train needs --iterations K")
        _check_width(args.width)
        _geometry(args)
    folder = RunFolder(args.resume or args.out)
    with _Signals() as signals, _cluster(getattr(args, "scheduler", None)) as client:
        try:
            # Locked first: a second train on the same folder fails at once, naming the first.
            with folder.lock(create=not args.resume):
                args.log_file = folder.train_log_path  # where a failure's traceback goes
                _log.info("%s", _invocation(args), extra={FILE_ONLY: True})
                trainer = _start_training(args, folder, client)
                signals.training = True
                return _run_training(trainer, folder, signals)
        except KeyboardInterrupt:
            if signals.training:
                raise
            said = "the run is as it was" if args.resume else "no checkpoint was saved"
            raise InterruptedError(f"interrupted before training started; {said}") from None


@contextlib.contextmanager
def _cluster(address: str | None):
    """``--scheduler``: a client of it, with a GPU worker known before any image is read."""
    if address is None:
        yield None
        return
    from ..core.remote import connect, wait_for_gpu_worker

    client = connect(address)
    try:
        wait_for_gpu_worker(client)
        yield client
    finally:
        client.close()


def _start_training(args: argparse.Namespace, folder, client=None):
    """Check the run folder and the data, read the images, build the trainer (with a
    dask ``client``: the remote one, which trains on its GPU worker)."""
    from ..core.classes import read_classes, table_of
    from ..core.data import choose_labeled, load_training_set, scan_folder
    from ..core.device import resolve_device
    from ..core.families import get_family
    from ..core.train import TrainConfig, Trainer

    out = folder.path
    if args.resume:
        labeled, unlabeled, geometry, config, plan = _resume_plan(args, folder)
        data_dir, unlabeled_dirs = plan.data_dir, plan.unlabeled_dirs
        # Per-invocation settings, as --device and --threads: they do not change the run.
        config.device, config.threads = args.device, args.threads
        config.checkpoint_every, config.snapshot_every = args.checkpoint_every, args.snapshot_every
        config.compile = args.compile
    else:
        plan = None
        if folder.has_checkpoint():
            raise InputError(f"{out} already holds a run; use --resume {out} or another --out")
        family = get_family(args.family).name  # an unknown name: one line, before any image
        geometry = _geometry(args)
        data_dir = Path(args.data)
        unlabeled_dirs = [str(Path(d).resolve()) for d in (args.unlabeled or [])]
        items = scan_folder(data_dir)
        table = read_classes(data_dir)  # None: binary, as ever
        labeled, unlabeled = choose_labeled(
            items, args.labeled, args.labeled_fraction, args.seed, classes=table
        )
        dca_split, dca_rule = _dca_split(args.dca_split, table)
        unlabeled += _unlabeled_items(args.unlabeled or [])
        config = TrainConfig(
            family=family,
            width=args.width,
            iterations=args.iterations,
            lr=get_family(family).default_lr if args.lr is None else args.lr,
            gamma=args.gamma,
            lambda_max=args.lambda_max,
            ema_teacher=args.ema_teacher,
            pseudo_confidence=args.pseudo_confidence,
            supervised_only=args.supervised_only,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            precision=args.precision,
            fast=not args.reference,
            batch_norm=args.batch_norm,
            compile=args.compile,
            deterministic=args.deterministic,
            geometry=geometry.to_dict(),
            per_instance_boundary=args.instance_boundaries,
            unknown_value=args.unknown_value,
            classes=None if table is None else table.to_list(),
            dca_split=dca_split,
            dca_split_rule=dca_rule,
            dca_fusion=args.dca_fusion,
            experts=args.experts,
            top_k=args.top_k,
            balance=args.balance,
            consistency=args.consistency,
            stain_jitter=args.stain_jitter,
            attributes=_attribute_table(args.attributes, [*labeled, *unlabeled]),
            attribute_routing=args.attribute_routing,
            stain_reference=_stain_reference(args.stain_normalise),
            checkpoint_every=args.checkpoint_every,
            snapshot_every=args.snapshot_every,
        )
    config.validate()
    if client is None:
        resolve_device(config.device)  # a missing GPU is said before any image is read
    where = "" if client is None else f" (trained on a GPU worker of {args.scheduler})"
    print(
        f"{plural(len(labeled), 'labeled image')}, {plural(len(unlabeled), 'unlabeled image')}"
        f" -> {out}{where}",
        file=sys.stderr,
    )
    data = load_training_set(
        labeled,
        unlabeled,
        geometry,
        _tqdm_progress("reading", "img"),
        unknown_value=config.unknown_value,
        classes=table_of(config) if config.classes else None,
    )
    if client is None:
        trainer = Trainer(config, data, folder, resume=bool(args.resume))
    else:
        from ..core.remote import RemoteTraining

        trainer = RemoteTraining(client, config, data, folder, resume=bool(args.resume))
    if not args.resume or plan.unlabeled is None:
        # Only once the images have been read and the trainer built: a run folder whose
        # first training could not start holds no split to resume from (a damaged one is
        # written again, as recovered).
        folder.write_split([it.name for it in labeled], [it.name for it in unlabeled])
    # Where the data lives, so that `--resume RUN` needs nothing else, this time and the
    # next (the trainer keeps it when it rewrites config.json).
    _remember_data(folder, trainer.config, data_dir, unlabeled_dirs)
    return trainer


def _stain_reference(path: str | None) -> dict | None:
    """``--stain-normalise REF``: the reference image's stain basis, stored in the run."""
    if path is None:
        return None
    from ..core.stain import reference_of

    return reference_of(path).to_dict() | {"image": Path(path).name}


def _attribute_table(path: str | None, items) -> dict[str, str]:
    """``--attributes CSV``: the run's images' attributes (others in the file are left out;
    an image not in it is unknown)."""
    if path is None:
        return {}
    from ..core.attributes import attributes_of, read_attributes

    table = read_attributes(path)
    names = [it.name for it in items]
    known = {n: a for n, a in zip(names, attributes_of(names, table)) if a}
    if table and not known:
        raise InputError(f"{path}: none of its names is an image of this run")
    return known


def _dca_split(text: str | None, table) -> tuple[dict | None, str]:
    """``--dca-split log-gap|thirds|H/M/T`` checked against the data folder's classes:
    (the split, or None for a rule applied to the labeled masks; the rule)."""
    from ..core.dca import SPLIT_RULES, parse_split_text

    if text is None or text in SPLIT_RULES:
        return None, text or "log-gap"
    if table is None:
        raise InputError("--dca-split needs a multi-class data folder (a classes.json)")
    return parse_split_text(text, table.n_foreground).to_dict(), "log-gap"


def _resume_plan(args: argparse.Namespace, folder):
    """What a resume trains on: the run folder's plan (checked there, cheaply, before any
    image is read), its images found in its data folders."""
    from ..core.config import TrainConfig
    from ..core.data import Geometry, scan_folder

    plan = folder.plan_resume(iterations=args.iterations, data=args.data)
    items = {it.name: it for it in scan_folder(plan.data_dir)}
    items.update({it.name: it for it in _unlabeled_items(plan.unlabeled_dirs)})
    missing = [n for n in plan.labeled if n not in items]
    if missing:
        raise InputError(
            f"labeled images of this run are missing from {plan.data_dir}: {', '.join(missing[:5])}"
        )
    labeled = [items[n] for n in plan.labeled]
    if plan.unlabeled is None:  # split.json was damaged: the run's other images, as at start
        unlabeled = [it for n, it in items.items() if n not in set(plan.labeled)]
    else:
        unlabeled = [items[n] for n in plan.unlabeled if n in items]
    geometry = Geometry.from_dict(plan.settings["geometry"])
    config = TrainConfig.from_dict(plan.settings)
    config.iterations = plan.iterations
    return labeled, unlabeled, geometry, config, plan


def _run_training(trainer, folder, signals) -> int:
    """Train with a progress bar; a signal stops after the iteration, with a checkpoint."""
    config = trainer.config
    bar = _bar(config.iterations, "training")
    bar.update(trainer.iteration)
    semi = [True]

    def on_event(ev) -> None:
        if ev.kind not in ("iteration", "checkpoint"):
            _log.info("%s at iteration %d: %s", ev.kind, ev.iteration, ev.message,
                      extra={FILE_ONLY: True})  # fmt: skip
        elif ev.kind == "checkpoint":
            _log.info("checkpoint saved at iteration %d", ev.iteration, extra={FILE_ONLY: True})
        if ev.kind == "iteration":
            bar.update(ev.iteration - bar.n)
            lo = ev.losses
            post = {"loss": f"{lo.get('total', 0):.3f}"}
            if semi[0]:  # a supervised-only run has no λ to show
                post["lam"] = f"{ev.lam:.2f}"
            bar.set_postfix(**post, lr=f"{ev.lr:.3g}", refresh=False)
        elif ev.kind == "start":
            bar.write(ev.message, file=sys.stderr)  # stdout carries only the result's JSON
        elif ev.kind == "warning":
            semi[0] = False
            bar.write(f"warning: {ev.message}", file=sys.stderr)
        elif ev.kind == "stopped":
            bar.write(
                f"stopped at iteration {ev.iteration}; checkpoint saved in {folder.path} "
                f"(continue with: napari-semimoe train --resume {folder.path})",
                file=sys.stderr,
            )
        elif ev.kind == "done":
            bar.write(ev.message, file=sys.stderr)

    try:
        result = trainer.run(on_event=on_event, stop=signals.stop)
    finally:
        bar.close()
    print(
        json.dumps(
            {
                "run": str(folder.path),
                "result": result,
                "iterations": trainer.iteration,
                "wall_time_s": round(trainer.elapsed, 1),
            }
        )
    )
    if result == "done":
        return 0
    return 128 + (signals.received or signal.SIGINT)


def _unlabeled_items(dirs):
    from ..core.data import IMAGE_SUFFIXES, DataItem

    items = []
    for d in dirs:
        d = Path(d)
        sub = d / "images" if (d / "images").is_dir() else d
        if not sub.is_dir():
            raise InputError(f"--unlabeled {d}: not a folder")
        items += [
            DataItem(p.stem, p, None)
            for p in sorted(sub.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    return items


def _remember_data(folder, config, data_dir: Path, unlabeled_dirs: list[str]) -> None:
    """Record the data folders in the run's config.json, so `--resume RUN` needs nothing else."""
    import dataclasses

    doc = dataclasses.asdict(config)
    doc["_data"] = str(Path(data_dir).resolve())
    doc["_unlabeled_dirs"] = [str(Path(d).resolve()) for d in unlabeled_dirs]
    folder.write_json("config.json", doc)
