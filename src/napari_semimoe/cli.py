"""Command line: ``napari-semimoe summary | train | predict | evaluate | bench``.

A thin layer over :mod:`napari_semimoe.core`; user mistakes end in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .core.errors import InputError


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
    from .core.model import SemiMoE, count_parameters

    counts = count_parameters(SemiMoE(args.width))
    counts["width"] = args.width
    print(json.dumps(counts, indent=1))
    return 0


# ----------------------------------------------------------------------------- train


def _geometry(args: argparse.Namespace):
    from .core.data import Geometry

    if args.input_size and args.scale != 1.0:
        raise InputError("use either --input-size or --scale, not both")
    if args.input_size and args.input_size % 16:
        raise InputError("--input-size must be a multiple of 16")
    if args.tile % 16:
        raise InputError("--tile must be a multiple of 16")
    if args.scale < 1:
        raise InputError("--scale is a downsample factor and must be >= 1")
    return Geometry(scale=args.scale, input_size=args.input_size, tile=args.tile)


def cmd_train(args: argparse.Namespace) -> int:
    from .core.data import (
        choose_labeled,
        load_training_set,
        save_split,
        scan_folder,
    )
    from .core.train import TrainConfig, Trainer

    out = Path(args.resume or args.out)
    if args.resume:
        split = (
            json.loads((out / "split.json").read_text()) if (out / "split.json").exists() else None
        )
        if split is None:
            raise InputError(f"{out}: not a run folder (no split.json); cannot resume")
        cfg_doc = json.loads((out / "config.json").read_text())
        data_dir = Path(args.data or cfg_doc.get("_data", ""))
        items = {it.name: it for it in scan_folder(data_dir)}
        extra = _unlabeled_items(cfg_doc.get("_unlabeled_dirs", []))
        items.update({it.name: it for it in extra})
        missing = [n for n in split["labeled"] if n not in items]
        if missing:
            raise InputError(
                f"labeled images of this run are missing from {data_dir}: {', '.join(missing[:5])}"
            )
        labeled = [items[n] for n in split["labeled"]]
        unlabeled = [items[n] for n in split["unlabeled"] if n in items]
        from .core.data import Geometry

        geometry = Geometry.from_dict(cfg_doc["geometry"])
        config = TrainConfig.from_dict(cfg_doc)
        if args.iterations:
            config.iterations = args.iterations
        config.device, config.threads = args.device, args.threads
    else:
        if not args.data:
            raise InputError("train needs --data DIR (or --resume RUN)")
        if args.iterations is None:
            raise InputError("train needs --iterations K")
        if out.exists() and (out / "checkpoint.safetensors").exists():
            raise InputError(f"{out} already holds a run; use --resume {out} or another --out")
        geometry = _geometry(args)
        items = scan_folder(args.data)
        labeled, unlabeled = choose_labeled(items, args.labeled, args.labeled_fraction, args.seed)
        unlabeled += _unlabeled_items(args.unlabeled or [])
        config = TrainConfig(
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
        out.mkdir(parents=True, exist_ok=True)
        save_split(out / "split.json", [it.name for it in labeled], [it.name for it in unlabeled])
    print(f"{len(labeled)} labeled, {len(unlabeled)} unlabeled images -> {out}", file=sys.stderr)
    data = load_training_set(labeled, unlabeled, geometry, _tqdm_progress("reading", "img"))
    trainer = Trainer(config, data, out, resume=bool(args.resume))
    cfg_path = out / "config.json"
    stop = threading.Event()

    def on_sigint(signum, frame):  # finish the current iteration, save, exit
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this iteration (Ctrl-C again to abort)...", file=sys.stderr)
        stop.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    bar = _bar(config.iterations, "training")
    bar.update(trainer.iteration)

    def on_event(ev) -> None:
        if ev.kind == "iteration":
            bar.update(ev.iteration - bar.n)
            lo = ev.losses
            bar.set_postfix(
                loss=f"{lo.get('total', 0):.3f}",
                lam=f"{ev.lam:.2f}",
                lr=f"{ev.lr:.3g}",
                refresh=False,
            )
        elif ev.kind == "start":
            bar.write(ev.message)
            if not args.resume:
                _remember_data(cfg_path, args)
        elif ev.kind in ("stopped", "done"):
            bar.write(ev.message)

    try:
        result = trainer.run(on_event=on_event, stop=stop)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, old)
    print(
        json.dumps(
            {
                "run": str(out),
                "result": result,
                "iterations": trainer.iteration,
                "wall_time_s": round(trainer.elapsed, 1),
            }
        )
    )
    return 0 if result == "done" else 130


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


def _remember_data(cfg_path: Path, args) -> None:
    """Record the data folders in the run's config.json, so `--resume RUN` needs nothing else."""
    from .core.checkpoint import atomic_write_json

    doc = json.loads(cfg_path.read_text())
    doc["_data"] = str(Path(args.data).resolve())
    doc["_unlabeled_dirs"] = [str(Path(d).resolve()) for d in (args.unlabeled or [])]
    atomic_write_json(cfg_path, doc)


# ----------------------------------------------------------------------------- predict


def _predictor(args: argparse.Namespace):
    from .core.predict import PredictOptions, Predictor, load_model

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
    from .core.predict import predict_slide
    from .core.slide import open_slide

    predictor = _predictor(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        name = Path(path).name.split(".")[0]
        with open_slide(path) as slide:
            written = predict_slide(
                predictor, slide, out, name, progress=_tqdm_progress(f"{name}", "tile")
            )
        print(json.dumps({"image": str(path), "outputs": {k: str(v) for k, v in written.items()}}))
    return 0


# ----------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.evaluate import evaluate_folder
    from .core.metrics import format_table

    predictor = _predictor(args)
    metrics = evaluate_folder(predictor, args.data, progress=_tqdm_progress("evaluating", "img"))
    print(format_table(metrics))
    if args.json:
        from .core.checkpoint import atomic_write_json

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
        from .core.checkpoint import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


# ----------------------------------------------------------------------------- parser


def cmd_suggest(args: argparse.Namespace) -> int:
    from .core.active import suggest_tiles
    from .core.slide import open_slide

    tile, args.tile = args.tile, None  # --tile is the suggestion size, not the predict tiling
    predictor = _predictor(args)
    exclude = []
    for box in args.exclude or []:
        try:
            y, x, h, w = (int(v) for v in box.split(","))
        except ValueError:
            raise InputError(f"--exclude expects y,x,h,w in level-0 pixels, got {box!r}") from None
        exclude.append((y, x, h, w))
    with open_slide(args.image) as slide:
        picks = suggest_tiles(
            predictor,
            slide,
            tile=tile,
            top=args.top,
            exclude=exclude,
            progress=_tqdm_progress("predicting", "tile"),
            strategy=args.strategy,
        )
    doc = {
        "image": str(args.image),
        "tiles": [
            {
                "rank": i + 1,
                "y": p.y0,
                "x": p.x0,
                "size": p.size0,
                "score": round(p.score, 5),
                "components": {k: round(v, 5) for k, v in p.components.items()},
                "working": {"y": p.y, "x": p.x, "size": p.size},
            }
            for i, p in enumerate(picks)
        ],
    }
    print(json.dumps(doc, indent=1))
    if args.json:
        from .core.checkpoint import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    from .plugin.launch import launch

    launch(args.project, sample=not args.no_sample)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .core.uncertainty import STRATEGIES

    p = argparse.ArgumentParser(prog="napari-semimoe", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="print the model's parameter counts as JSON")
    s.add_argument("--width", type=int, default=16, help="base width b (16 default, 64 upstream)")
    s.set_defaults(func=cmd_summary)

    t = sub.add_parser("train", help="train Semi-MoE on a data folder")
    t.add_argument("--data", help="folder with images/ and masks/")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--labeled", type=int, help="number of labeled images (chosen at random)")
    g.add_argument("--labeled-fraction", type=float, help="fraction of images labeled")
    t.add_argument("--unlabeled", action="append", help="extra folder of unlabeled images")
    t.add_argument("--iterations", type=int)
    t.add_argument("--width", type=int, default=16)
    t.add_argument(
        "--supervised-only", action="store_true", help="λ = 0 baseline, everything else the same"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    t.add_argument("--threads", type=int, help="CPU threads (default: all)")
    t.add_argument("--out", default="runs/semimoe", help="run folder")
    t.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    t.add_argument("--lr", type=float, default=0.5)
    t.add_argument("--gamma", type=float, default=0.4)
    t.add_argument("--lambda-max", type=float, default=0.5)
    t.add_argument("--scale", type=float, default=1.0, help="working scale: downsample factor")
    t.add_argument(
        "--input-size",
        type=int,
        help="resize each whole image to N x N (upstream GlaS protocol: 256)",
    )
    t.add_argument("--tile", type=int, default=256, help="training tile side at working scale")
    t.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    t.add_argument(
        "--reference",
        action="store_true",
        help="upstream-style path: separate passes, NCHW (for comparisons)",
    )
    t.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "on", "off"],
        help="torch.compile the experts (auto = off: measured no faster on CPU or GPU)",
    )
    t.add_argument(
        "--deterministic",
        action="store_true",
        help="repeat bit for bit on a GPU too (deterministic kernels; slower there)",
    )
    t.add_argument(
        "--batch-norm",
        default="pooled",
        choices=["pooled", "per-half"],
        help="pooled: labeled + unlabeled tiles in one pass (default); per-half: upstream's "
        "two passes, side by side on a multi-core CPU",
    )
    t.add_argument(
        "--instance-boundaries",
        action="store_true",
        help="boundary band also between touching glands (needs instance masks)",
    )
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        help="keep weights every N iterations (for learning curves)",
    )
    t.set_defaults(func=cmd_train)

    def add_predict_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("run", help="run folder or checkpoint file")
        q.add_argument("--device", default="auto")
        q.add_argument("--threads", type=int)
        q.add_argument("--tile", type=int, help="tile side at working scale")
        q.add_argument("--overlap", type=int, help="tile overlap (default: tile / 4)")
        q.add_argument("--batch", type=int, help="tiles per pass (default: 2 on CPU, 16 on GPU)")
        q.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])

    pr = sub.add_parser("predict", help="predict images or slides, write TIFFs")
    add_predict_opts(pr)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out", required=True)
    pr.add_argument("--experts", action="store_true", help="also write each expert's maps")
    pr.add_argument("--tissue-only", action="store_true", help="skip glass (slides)")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="Dice/Jaccard and GlaS object metrics on a folder")
    add_predict_opts(ev)
    ev.add_argument("--data", required=True)
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_evaluate)

    sg = sub.add_parser("suggest", help="rank unlabeled tiles by uncertainty (active labeling)")
    sg.add_argument("run")
    sg.add_argument("image")
    sg.add_argument("--tile", type=int, help="tile side at working scale (default: training tile)")
    sg.add_argument("--top", type=int, default=10)
    sg.add_argument("--exclude", action="append", help="y,x,h,w level-0 box to skip (repeat)")
    sg.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=STRATEGIES[0],
        help="coverage: uncertain tiles where the labeled ones (--exclude) do not cover the "
        "tissue yet; uncertain: the most uncertain, spread out (default: %(default)s)",
    )
    sg.add_argument("--json")
    sg.add_argument("--device", default="auto")
    sg.add_argument("--threads", type=int)
    sg.add_argument("--overlap", type=int)
    sg.add_argument("--batch", type=int, help="tiles per pass (default: 2 on CPU, 16 on GPU)")
    sg.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    sg.set_defaults(func=cmd_suggest)

    gu = sub.add_parser("gui", help="open napari with the plugin docked and the sample slide")
    gu.add_argument("--project", help="project folder (default ~/napari-semimoe-projects/sample)")
    gu.add_argument("--no-sample", action="store_true", help="do not load the sample slide")
    gu.set_defaults(func=cmd_gui)

    b = sub.add_parser("bench", help="training and prediction speed: fast vs fp32 reference")
    b.add_argument("--width", type=int, default=16)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument(
        "--compile",
        default="off",
        choices=["on", "off"],
        help="also time a torch.compile'd fast path (compiles for minutes on CPU)",
    )
    b.add_argument("--threads", type=int)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    b.add_argument("--json")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.checkpoint import CheckpointError
    from .core.train import TrainingError

    try:
        return args.func(args)
    except (InputError, CheckpointError, TrainingError) as exc:
        print(f"napari-semimoe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except InterruptedError as exc:
        print(f"napari-semimoe {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"napari-semimoe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
