"""Command line: ``napari-semimoe summary | train | predict | evaluate | suggest | bench | gui``.

A thin layer over :mod:`napari_semimoe.core`; user mistakes end in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .core.errors import InputError, plural
from .core.logs import FILE_ONLY, for_screen
from .core.validate import check_geometry, tile_problem, width_problem

_log = logging.getLogger("napari_semimoe.cli")

# ----------------------------------------------------------------------------- option checks
# Every numeric option is parsed by one of these: out of range, non-finite or absurdly large
# values are refused at parse time, in one line, before anything is read or allocated.


def int_option(lo: int, hi: int, multiple: int = 1) -> Callable[[str], int]:
    """argparse ``type=``: an integer in [lo, hi] (a multiple of ``multiple``)."""
    kind = {1: "an integer", 2: "an even integer"}.get(multiple, f"a multiple of {multiple}")

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if not lo <= v <= hi or v % multiple:
            raise argparse.ArgumentTypeError(f"must be {kind} from {lo} to {hi}, got {v}")
        return v

    return parse


def checked_int(problem: Callable[[int], str | None], kind: str) -> Callable[[str], int]:
    """argparse ``type=``: an integer that core's check ``problem`` accepts."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        bad = problem(v)
        if bad:
            raise argparse.ArgumentTypeError(bad)
        return v

    return parse


def float_option(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    span = f"{'above' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not (lo < v if lo_open else lo <= v) or v > hi:
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {v:g}")
        return v

    return parse


#: Ranges of the numeric options (generous: they only stop what cannot be meant).
MAX_CLI_WIDTH = 128  # twice upstream's 64: 415 M parameters
MAX_CLI_TILE = 4096
WIDTH = checked_int(lambda v: width_problem(v, hi=MAX_CLI_WIDTH), "an even integer")
THREADS = int_option(1, 4096)
TILE = checked_int(lambda v: tile_problem(v, hi=MAX_CLI_TILE), "a multiple of 16")
SIZE = int_option(16, 4096)
OVERLAP = int_option(0, 2048)
BATCH = int_option(1, 1024)
COUNT = int_option(1, 10**9)
EVERY = int_option(0, 10**9)
SEED = int_option(0, 2**32 - 1)
TOP = int_option(1, 10_000)
REPEATS = int_option(1, 1000)


def _writable_dir(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def _existing_parent(p: Path) -> Path:
    q = p.absolute().parent
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def out_folder(text: str) -> str:
    """argparse ``type=``: an output folder that is, or can be made, a writable folder."""
    p = Path(text).expanduser()
    try:
        if p.exists():
            if not p.is_dir():
                raise argparse.ArgumentTypeError(f"{p} is a file, not a folder")
            if not _writable_dir(p):
                raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot write in it)")
            return text
        parent = _existing_parent(p)
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{p}: {parent} is a file, not a folder")
        if not _writable_dir(parent):
            raise argparse.ArgumentTypeError(
                f"{p}: permission denied (cannot create it in {parent})"
            )
    except PermissionError:
        raise argparse.ArgumentTypeError(f"{p}: permission denied") from None
    return text


def out_file(text: str) -> str:
    """argparse ``type=``: an output file that is not a folder and can be written."""
    p = Path(text).expanduser()
    try:
        if p.is_dir() or text.endswith(("/", os.sep)):
            raise argparse.ArgumentTypeError(f"{p} is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot overwrite it)")
        parent = _existing_parent(p)
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{p}: {parent} is a file, not a folder")
        if not _writable_dir(parent):
            raise argparse.ArgumentTypeError(f"{p}: permission denied (cannot write in {parent})")
    except PermissionError:
        raise argparse.ArgumentTypeError(f"{p}: permission denied") from None
    return text


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line and exit status 2, like every other user mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = re.sub(r"^argument (?:\S+/)?(\S+): ", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so clean-up runs as for Ctrl-C."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler, ``timeout``) unwinds like Ctrl-C: no scratch is left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise _Terminated

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _bar(total: int, desc: str, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _tqdm_progress(desc: str, unit: str = "tile"):
    state: dict = {}

    def cb(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = _bar(total, desc, unit)
        bar = state["bar"]
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return cb


# ----------------------------------------------------------------------------- summary


def cmd_summary(args: argparse.Namespace) -> int:
    from .core.families import get_family
    from .core.train import TrainConfig

    family = get_family(args.family)  # an unknown name: one line listing the known ones
    _check_width(args.width)
    counts = family.parameter_counts(
        family.build(TrainConfig(width=args.width, family=family.name))
    )
    counts["width"] = args.width
    counts["family"] = family.name
    print(json.dumps(counts, indent=1))
    return 0


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
    "scale",
    "input_size",
    "tile",
    "precision",
    "batch_norm",
    "supervised_only",
    "reference",
    "instance_boundaries",
    "deterministic",
)


@functools.cache
def run_defaults() -> dict[str, object]:
    """The defaults of :data:`RUN_OPTIONS`, read from the one config (TrainConfig and
    Geometry), so that the CLI, the trainer and the plugin cannot disagree."""
    from .core.data import Geometry

    c, g = _config_defaults(), Geometry()
    defaults: dict[str, object] = {
        "family": c.family,
        "width": c.width,
        "labeled": None,  # every image with a mask
        "labeled_fraction": None,
        "unlabeled": None,
        "seed": c.seed,
        "lr": c.lr,
        "gamma": c.gamma,
        "lambda_max": c.lambda_max,
        "scale": g.scale,
        "input_size": g.input_size,
        "tile": g.tile,
        "precision": c.precision,
        "batch_norm": c.batch_norm,
        "supervised_only": c.supervised_only,
        "reference": not c.fast,
        "instance_boundaries": c.per_instance_boundary,
        "deterministic": c.deterministic,
    }
    assert tuple(defaults) == RUN_OPTIONS
    return defaults


@functools.cache
def _config_defaults():
    from .core.train import TrainConfig

    return TrainConfig()


def _check_width(width: int) -> None:
    bad = width_problem(width, hi=MAX_CLI_WIDTH)
    if bad:
        raise InputError(f"--width {bad}")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")


def _geometry(args: argparse.Namespace):
    return check_geometry(args.scale, args.input_size, args.tile, spell=_spell)


def _spell(key: str) -> str:
    """A setting's name as an option: ``input_size`` -> ``--input-size``."""
    return "--" + key.replace("_", "-")


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
    from .core.runfolder import RunFolder

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
    with _Signals() as signals:
        try:
            # Locked first: a second train on the same folder fails at once, naming the first.
            with folder.lock(create=not args.resume):
                args.log_file = folder.train_log_path  # where a failure's traceback goes
                _log.info("%s", _invocation(args), extra={FILE_ONLY: True})
                trainer = _start_training(args, folder)
                signals.training = True
                return _run_training(trainer, folder, signals)
        except KeyboardInterrupt:
            if signals.training:
                raise
            said = "the run is as it was" if args.resume else "no checkpoint was saved"
            raise InterruptedError(f"interrupted before training started; {said}") from None


def _start_training(args: argparse.Namespace, folder):
    """Check the run folder and the data, read the images, build the trainer."""
    from .core.data import choose_labeled, load_training_set, scan_folder
    from .core.device import resolve_device
    from .core.families import get_family
    from .core.train import TrainConfig, Trainer

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
        labeled, unlabeled = choose_labeled(items, args.labeled, args.labeled_fraction, args.seed)
        unlabeled += _unlabeled_items(args.unlabeled or [])
        config = TrainConfig(
            family=family,
            width=args.width,
            iterations=args.iterations,
            lr=args.lr,
            gamma=args.gamma,
            lambda_max=args.lambda_max,
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
            checkpoint_every=args.checkpoint_every,
            snapshot_every=args.snapshot_every,
        )
    config.validate()
    resolve_device(config.device)  # a missing GPU is said before any image is read
    print(
        f"{plural(len(labeled), 'labeled image')}, {plural(len(unlabeled), 'unlabeled image')}"
        f" -> {out}",
        file=sys.stderr,
    )
    data = load_training_set(labeled, unlabeled, geometry, _tqdm_progress("reading", "img"))
    trainer = Trainer(config, data, folder, resume=bool(args.resume))
    if not args.resume or plan.unlabeled is None:
        # Only once the images have been read and the trainer built: a run folder whose
        # first training could not start holds no split to resume from (a damaged one is
        # written again, as recovered).
        folder.write_split([it.name for it in labeled], [it.name for it in unlabeled])
    # Where the data lives, so that `--resume RUN` needs nothing else, this time and the
    # next (the trainer keeps it when it rewrites config.json).
    _remember_data(folder, trainer.config, data_dir, unlabeled_dirs)
    return trainer


def _resume_plan(args: argparse.Namespace, folder):
    """What a resume trains on: the run folder's plan (checked there, cheaply, before any
    image is read), its images found in its data folders."""
    from .core.data import Geometry, scan_folder
    from .core.train import TrainConfig

    plan = folder.plan_resume(iterations=args.iterations, data=args.data)
    items = {it.name: it for it in scan_folder(plan.data_dir)}
    items.update({it.name: it for it in _unlabeled_items(plan.unlabeled_dirs)})
    missing = [n for n in plan.labeled if n not in items]
    if missing:
        raise InputError(
            f"labeled images of this run are missing from {plan.data_dir}: "
            f"{', '.join(missing[:5])}"
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
    from .core.data import IMAGE_SUFFIXES, DataItem

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


# ----------------------------------------------------------------------------- predict


def _predictor(args: argparse.Namespace):
    from .core.inference import PredictOptions, Predictor, load_model

    _check_threads(args.threads)
    bad = None if args.tile is None else tile_problem(args.tile)
    if bad:
        raise InputError(f"--tile {bad}")
    loaded = load_model(args.run, args.device)
    opts = PredictOptions(
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        precision=args.precision,
        threads=args.threads,
        experts=getattr(args, "experts", False),
        tissue_only=getattr(args, "tissue_only", False),
    )
    return Predictor(loaded, opts)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict every input; one that cannot be read does not stop the others: each failure
    is one line on stderr at the end, and the exit status is 2 if any failed."""
    from .core.inference import predict_slide
    from .core.slide import open_slide

    names = _output_names(args.images)
    predictor = _predictor(args)  # the checkpoint and options, before any image is read
    out = Path(args.out)
    created = not out.exists()
    failures: list[str] = []
    try:
        with _terminate_as_interrupt():
            for path, name in zip(args.images, names):
                try:
                    with open_slide(path) as slide:
                        written = predict_slide(
                            predictor, slide, out, name, progress=_tqdm_progress(name, "tile")
                        )
                except InputError as exc:
                    failures.append(str(exc))
                    continue
                outputs = {k: str(v) for k, v in written.items()}
                print(json.dumps({"image": str(path), "outputs": outputs}), flush=True)
    finally:
        if created:  # nothing was written: leave no empty output folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
    for msg in failures:
        print(f"napari-semimoe predict: error: {msg}", file=sys.stderr)
    return 2 if failures else 0


def output_name(path: str | Path) -> str:
    """``slide.ome.tif`` -> ``slide``, ``case.v1.png`` -> ``case.v1``: the image's name
    without its file type (and without an OME-TIFF's ``.ome``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _output_names(paths: list[str]) -> list[str]:
    """Each input's output name; two inputs that would write the same files are refused."""
    names = [output_name(p) for p in paths]
    seen: dict[str, str] = {}
    for path, name in zip(paths, names):
        if name in seen:
            raise InputError(
                f"{seen[name]} and {path} would both write {name}_*.tif; predict them into "
                "separate --out folders"
            )
        seen[name] = path
    return names


# ----------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.data import scan_folder
    from .core.evaluate import BINARY_NOTE, check_masks_folder, evaluate_folder
    from .core.metrics import format_table

    predictor = _predictor(args)
    check_masks_folder(args.data)
    no_mask = [it.name for it in scan_folder(args.data) if it.mask_path is None]
    if no_mask:
        shown = ", ".join(no_mask[:5]) + (", ..." if len(no_mask) > 5 else "")
        print(
            f"{plural(len(no_mask), 'image')} without a mask not evaluated: {shown}",
            file=sys.stderr,
        )
    with _terminate_as_interrupt():
        metrics = evaluate_folder(
            predictor, args.data, progress=_tqdm_progress("evaluating", "img")
        )
    if metrics.get("binary_masks"):
        n = int(metrics["binary_masks"])
        print(
            f"{plural(n, 'mask')} {'was' if n == 1 else 'were'} binary: {BINARY_NOTE}",
            file=sys.stderr,
        )
    print(format_table(metrics))
    if args.json:
        from .core.atomic import atomic_write_json

        atomic_write_json(args.json, metrics)
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from .core.bench import run_bench

    result = run_bench(
        width=args.width,
        repeats=args.repeats,
        compile=args.compile,
        threads=args.threads,
        log=lambda s: print(s, file=sys.stderr),
        device=args.device,
    )
    print(json.dumps(result, indent=1))
    if args.json:
        from .core.atomic import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


# ----------------------------------------------------------------------------- parser


def cmd_suggest(args: argparse.Namespace) -> int:
    from .core.active import suggest_tiles
    from .core.slide import open_slide

    tile, args.tile = args.tile, None  # --tile is the suggestion size, not the predict tiling
    if tile is not None and tile < 16:
        raise InputError(f"--tile must be at least 16, got {tile}")
    if args.top < 1:
        raise InputError(f"--top must be >= 1, got {args.top}")
    predictor = _predictor(args)
    exclude = []
    for box in args.exclude or []:
        try:
            y, x, h, w = (int(v) for v in box.split(","))
        except ValueError:
            raise InputError(f"--exclude expects y,x,h,w in level-0 pixels, got {box!r}") from None
        exclude.append((y, x, h, w))
    with _terminate_as_interrupt(), open_slide(args.image) as slide:
        picks = suggest_tiles(
            predictor,
            slide,
            tile=tile,
            top=args.top,
            exclude=exclude,
            progress=_tqdm_progress("predicting", "tile"),
            strategy=args.strategy,
        )
    if not picks:
        print(
            "no suggestion: no tile of that size is mostly tissue outside the excluded boxes; "
            "try a smaller --tile",
            file=sys.stderr,
        )
    doc = {
        "image": str(args.image),
        "tiles": [
            {
                "rank": i + 1,
                "y": p.y0,
                "x": p.x0,
                "h": p.h0,
                "w": p.w0,
                "score": round(p.score, 5),
                "components": {k: round(v, 5) for k, v in p.components.items()},
                "working": {"y": p.y, "x": p.x, "size": p.size},
            }
            for i, p in enumerate(picks)
        ],
    }
    print(json.dumps(doc, indent=1))
    if args.json:
        from .core.atomic import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    from .plugin.launch import launch

    launch(args.project, sample=not args.no_sample)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .core.uncertainty import STRATEGIES

    p = _Parser(
        prog="napari-semimoe",
        description="Semi-MoE gland segmentation: train, predict, evaluate and suggest what to "
        "label next, headless; `gui` opens napari with the plugin.",
    )
    verbose_help = "debug logs on stderr (they always go to the log file too)"
    p.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="print the model's parameter counts as JSON")
    s.add_argument("--width", type=WIDTH, default=16, help="base width b (16 default, 64 upstream)")
    s.add_argument(
        "--family",
        default="semimoe",
        help="model family (default semimoe; an unknown one lists them)",
    )
    s.set_defaults(func=cmd_summary)

    t = sub.add_parser(
        "train",
        help="train Semi-MoE on a data folder",
        description="Train Semi-MoE on DIR/images + DIR/masks (images not chosen as labeled "
        "are used unlabeled; their masks are never read), or continue a run with --resume. "
        "Run-defining options (model, split, schedule) cannot change on --resume.",
    )
    # Run-defining options default to "not given" (SUPPRESS) so that --resume can refuse
    # them instead of ignoring them; cmd_train fills in run_defaults() for a new run.
    run_opt = {"default": argparse.SUPPRESS}
    D = run_defaults()  # the help texts state the defaults that cmd_train fills in
    C = _config_defaults()  # the per-invocation settings' defaults
    t.add_argument("--data", help="folder with images/ and masks/")
    g = t.add_mutually_exclusive_group()
    g.add_argument(
        "--labeled",
        type=COUNT,
        help="number of labeled images, chosen at random with --seed (default: every image "
        "with a mask, i.e. no unlabeled images from DIR)",
        **run_opt,
    )
    g.add_argument(
        "--labeled-fraction",
        type=float_option(0, 1, lo_open=True),
        help="fraction of the images labeled",
        **run_opt,
    )
    t.add_argument(
        "--unlabeled", action="append", help="extra folder of unlabeled images (repeat)", **run_opt
    )
    t.add_argument(
        "--iterations",
        type=COUNT,
        help="iterations in total; with --resume, continue up to this many (the warm-up, lr "
        "decay and λ ramp are spread over the total, so extending a run stretches them)",
    )
    t.add_argument(
        "--family",
        help=f"model family (default {D['family']}; `summary --family X` shows one)",
        **run_opt,
    )
    t.add_argument(
        "--width", type=WIDTH, help=f"base width b (default {D['width']}; upstream 64)", **run_opt
    )
    t.add_argument(
        "--supervised-only",
        action="store_true",
        help="λ = 0 baseline, everything else the same",
        **run_opt,
    )
    t.add_argument(
        "--seed",
        type=SEED,
        help=f"labeled split, init and augmentation (default {D['seed']})",
        **run_opt,
    )
    t.add_argument("--device", default=C.device, help="auto, cpu, cuda, cuda:N, mps")
    t.add_argument("--threads", type=THREADS, help="CPU threads (default: all)")
    t.add_argument(
        "--out", type=out_folder, default="runs/semimoe", help="run folder (default %(default)s)"
    )
    t.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    t.add_argument(
        "--lr",
        type=float_option(0, 100, lo_open=True),
        help=f"SGD learning rate (default {D['lr']})",
        **run_opt,
    )
    t.add_argument(
        "--gamma",
        type=float_option(0, 100),
        help=f"γ of the adaptive loss (default {D['gamma']})",
        **run_opt,
    )
    t.add_argument(
        "--lambda-max",
        type=float_option(0, 100),
        help=f"final weight λ of the unlabeled loss (default {D['lambda_max']})",
        **run_opt,
    )
    t.add_argument(
        "--scale",
        type=float_option(1, 1024),
        help=f"working scale: downsample factor (default {D['scale']:g})",
        **run_opt,
    )
    t.add_argument(
        "--input-size",
        type=TILE,
        help="resize each whole image to N x N (upstream GlaS protocol: 256)",
        **run_opt,
    )
    t.add_argument(
        "--tile",
        type=TILE,
        help=f"training tile side at working scale (default {D['tile']})",
        **run_opt,
    )
    t.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto (default): bf16 autocast where the CPU or GPU has bf16 units",
        **run_opt,
    )
    t.add_argument(
        "--reference",
        action="store_true",
        help="upstream-style path: separate passes, NCHW (for comparisons)",
        **run_opt,
    )
    t.add_argument(
        "--compile",
        default=C.compile,
        choices=["auto", "on", "off"],
        help="torch.compile the experts (auto = off: measured no faster on CPU or GPU)",
    )
    t.add_argument(
        "--deterministic",
        action="store_true",
        help="repeat bit for bit on a GPU too (deterministic kernels; slower there)",
        **run_opt,
    )
    t.add_argument(
        "--batch-norm",
        choices=["pooled", "per-half"],
        help="pooled (default): labeled + unlabeled tiles in one pass; per-half: upstream's "
        "two passes, side by side on a multi-core CPU",
        **run_opt,
    )
    t.add_argument(
        "--instance-boundaries",
        action="store_true",
        help="boundary band also between touching glands (needs instance masks)",
        **run_opt,
    )
    t.add_argument(
        "--checkpoint-every",
        type=COUNT,
        default=C.checkpoint_every,
        help="save the checkpoint every N iterations (default %(default)s)",
    )
    t.add_argument(
        "--snapshot-every",
        type=EVERY,
        default=C.snapshot_every,
        help="keep weights every N iterations (for learning curves)",
    )
    t.set_defaults(func=cmd_train)

    def add_predict_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("run", help="run folder or checkpoint file")
        q.add_argument("--device", default="auto")
        q.add_argument("--threads", type=THREADS)
        q.add_argument("--tile", type=TILE, help="tile side at working scale")
        q.add_argument("--overlap", type=OVERLAP, help="tile overlap (default: tile / 4)")
        q.add_argument("--batch", type=BATCH, help="tiles per pass (default: 2 on CPU, 16 on GPU)")
        q.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])

    pr = sub.add_parser(
        "predict",
        help="predict images or slides, write TIFFs",
        description="Predict each image or slide (PNG/TIFF/BMP/JPEG, pyramidal TIFF/SVS read "
        "level by level) and write, at its native size: NAME_mask.tif (uint8 0/1), "
        "NAME_prob.tif, NAME_sdf.tif, NAME_boundary.tif (float32), NAME_instances.tif "
        "(int32 gland ids) and NAME_gates.npz (per-tile gate weights).",
    )
    add_predict_opts(pr)
    pr.add_argument("images", nargs="+", help="images or slides")
    pr.add_argument("--out", type=out_folder, required=True, help="output folder")
    pr.add_argument("--experts", action="store_true", help="also write each expert's maps")
    pr.add_argument("--tissue-only", action="store_true", help="skip glass (slides)")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="Dice/Jaccard and GlaS object metrics on a folder")
    add_predict_opts(ev)
    ev.add_argument("--data", required=True, help="folder with images/ and masks/")
    ev.add_argument("--json", type=out_file, help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_evaluate)

    sg = sub.add_parser(
        "suggest",
        help="rank unlabeled tiles by uncertainty (active labeling)",
        description="Predict IMAGE with RUN and print the tiles worth labeling next as JSON: "
        "y, x, h, w in the image's (level-0) pixels, the same form as --exclude.",
    )
    sg.add_argument("run", help="run folder or checkpoint file")
    sg.add_argument("image", help="image or slide to look at")
    sg.add_argument(
        "--tile",
        type=SIZE,
        help="tile side at working scale (default: the training tile; for --input-size "
        "models a quarter of the resized image)",
    )
    sg.add_argument("--top", type=TOP, default=10, help="how many (default %(default)s)")
    sg.add_argument("--exclude", action="append", help="y,x,h,w level-0 box to skip (repeat)")
    sg.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=STRATEGIES[0],
        help="coverage: uncertain tiles where the labeled ones (--exclude) do not cover the "
        "tissue yet; uncertain: the most uncertain, spread out (default: %(default)s)",
    )
    sg.add_argument("--json", type=out_file, help="also write the suggestions to this JSON file")
    sg.add_argument("--device", default="auto")
    sg.add_argument("--threads", type=THREADS)
    sg.add_argument("--overlap", type=OVERLAP)
    sg.add_argument("--batch", type=BATCH, help="tiles per pass (default: 2 on CPU, 16 on GPU)")
    sg.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    sg.set_defaults(func=cmd_suggest)

    gu = sub.add_parser("gui", help="open napari with the plugin docked and the sample slide")
    gu.add_argument("--project", help="project folder (default ~/napari-semimoe-projects/sample)")
    gu.add_argument("--no-sample", action="store_true", help="do not load the sample slide")
    gu.set_defaults(func=cmd_gui)

    b = sub.add_parser("bench", help="training and prediction speed: fast vs fp32 reference")
    b.add_argument("--width", type=WIDTH, default=C.width)
    b.add_argument("--repeats", type=REPEATS, default=7)
    b.add_argument(
        "--compile",
        default="off",
        choices=["on", "off"],
        help="also time a torch.compile'd fast path (compiles for minutes on CPU)",
    )
    b.add_argument("--threads", type=THREADS)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    b.add_argument("--json", type=out_file)
    b.set_defaults(func=cmd_bench)
    for q in sub.choices.values():  # -v after the command too
        q.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=verbose_help)  # fmt: skip
    return p


class _StderrWarnings(logging.Handler):
    """The core's warnings as one line each on the stderr of the moment (tests swap it);
    records for the log files only (a failure's traceback) are not shown."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog
        self.addFilter(for_screen)

    def emit(self, record: logging.LogRecord) -> None:
        msg = " ".join(record.getMessage().split("\n"))
        print(f"{self.prog}: warning: {msg}", file=sys.stderr)


class _StderrDebug(logging.Handler):
    """``--verbose``: the package's debug and info records (and the tracebacks meant for
    the log file) on stderr; warnings are shown by :class:`_StderrWarnings` already."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.DEBUG)
        self.prog = prog
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        shown = record.levelno < logging.WARNING if for_screen(record) else record.exc_info
        if shown:
            print(f"{self.prog}: {self.format(record)}", file=sys.stderr)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text or type(exc).__name__


def _invocation(args: argparse.Namespace) -> str:
    from . import __version__

    return f"napari-semimoe {__version__}: {' '.join(getattr(args, 'argv', []))}"


def _unexpected(prog: str, args: argparse.Namespace, exc: Exception) -> str:
    """The one line for an error that is not a known mistake (a bug, most likely); its
    traceback goes to the run's train.log (logged there by the run folder while it was
    held) or else to the user log (see :mod:`napari_semimoe.core.logs`)."""
    from .core.logs import attach_user_log, detach_file_log, log_failure

    what = f"{prog}: error: unexpected {type(exc).__name__}: {_one_line(exc)}"
    log_file = getattr(args, "log_file", None)
    if log_file is not None and Path(log_file).exists():
        return f"{what} (details: {log_file})"
    handler = attach_user_log()
    try:
        log_failure(_log, f"{_invocation(args)}: failed", exc)
    finally:
        detach_file_log(handler)
    if handler.failed is not None or not handler.path.exists():
        return f"{what} (its traceback could not be logged: {handler.failed or 'no log file'})"
    return f"{what} (details: {handler.path})"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (importing torch takes seconds)
        print("napari-semimoe: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage mistake (one line, said already) or --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from .core.checkpoint import CheckpointError
    from .core.logs import attach_user_log, detach_file_log
    from .core.train import TrainingError

    args.argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"napari-semimoe {args.command}"
    pkg_log = logging.getLogger("napari_semimoe")
    handlers: list[logging.Handler] = [_StderrWarnings(prog)]
    saved_level = pkg_log.level
    if getattr(args, "verbose", False):
        handlers.append(_StderrDebug(prog))
        pkg_log.setLevel(logging.DEBUG)
    for h in handlers:
        pkg_log.addHandler(h)
    # A training run logs to its train.log (the run folder attaches it while it is held);
    # the other commands to the user log.
    user_log = attach_user_log() if args.command != "train" else None
    # tifffile logs its own complaints about a damaged file; the reader turns them into one
    # error line, so they would only be a second, cryptic line on stderr.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (InputError, CheckpointError, TrainingError) as exc:
        print(f"{prog}: error: {_one_line(exc, limit=2000)}", file=sys.stderr)
        return 2
    except InterruptedError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except PermissionError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}permission denied", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, a vanished folder: a sentence, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: not enough memory; try a smaller --tile or --batch", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line here, the traceback in a log file
        if user_log is not None:
            detach_file_log(user_log)
            user_log = None
        print(_unexpected(prog, args, exc), file=sys.stderr)
        return 1
    finally:
        if user_log is not None:
            detach_file_log(user_log)
        for h in handlers:
            pkg_log.removeHandler(h)
        pkg_log.setLevel(saved_level)


if __name__ == "__main__":
    sys.exit(main())
