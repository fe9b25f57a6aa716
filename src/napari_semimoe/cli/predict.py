"""``predict``, ``evaluate`` and ``suggest``: the commands that read a trained run."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..core.errors import InputError, plural, some
from ..core.validate import tile_problem
from .options import _check_threads, _terminate_as_interrupt, _tqdm_progress

# ----------------------------------------------------------------------------- predict


def _predictor(args: argparse.Namespace):
    from ..core.inference import PredictOptions, Predictor, load_model

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
        tta=getattr(args, "tta", "off"),  # suggest has no mask options
        fill_holes=getattr(args, "fill_holes", False),
        min_object=getattr(args, "min_object", 0),
    )
    return Predictor(loaded, opts)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict every input; one that cannot be read does not stop the others: each failure
    is one line on stderr at the end, and the exit status is 2 if any failed."""
    from ..core.cohort import predict_slide
    from ..core.slide import open_slide

    names = _output_names(args.images)
    predictor = _predictor(args)  # the checkpoint and options, before any image is read
    attribute_of = _attribute_source(args, predictor)
    out = Path(args.out)
    created = not out.exists()
    failures: list[str] = []
    try:
        with _terminate_as_interrupt():
            for path, name in zip(args.images, names):
                _route(predictor, name, attribute_of(name))
                try:
                    with open_slide(path) as slide:
                        written = predict_slide(
                            predictor,
                            slide,
                            out,
                            name,
                            keep_zarr=getattr(args, "ome_zarr", False),
                            progress=_tqdm_progress(name, "tile"),
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


def _attribute_source(args: argparse.Namespace, predictor):
    """name -> attribute (None: unknown), from ``--attributes`` or ``--attribute``."""
    from ..core.attributes import read_attributes

    path, value = getattr(args, "attributes", None), getattr(args, "attribute", None)
    if path and value:
        raise InputError("give --attributes or --attribute, not both")
    table = read_attributes(path) if path else {}
    if (path or value) and predictor.use_attribute(None) is None:
        print(
            "napari-semimoe: note: this model has no attribute routing; the attributes are "
            "not used",
            file=sys.stderr,
        )
    return lambda name: value if value else table.get(name)


def _route(predictor, name: str, attribute: str | None) -> None:
    """Route one input; an attribute the model has no router of is said, once per input."""
    used = predictor.use_attribute(attribute)
    if used is not None and attribute and used != attribute:
        print(
            f"napari-semimoe: note: {name}: attribute {attribute!r} was not seen in training; "
            f"the '{used}' router is used",
            file=sys.stderr,
        )


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


def _group_split(text: str | None, family) -> dict[str, list[int]] | None:
    """``--split H/M/T`` checked against the model's classes (None: the family's own)."""
    if text is None:
        return None
    from ..core.dca import GROUPS, parse_split_text

    if family.classes is None:
        raise InputError("--split needs a multi-class model")
    split = parse_split_text(text, family.classes.n_foreground)
    return {g: list(getattr(split, g)) for g in GROUPS}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..core.data import scan_folder
    from ..core.equity import format_equity_table
    from ..core.evaluate import BINARY_NOTE, check_masks_folder, evaluate_folder
    from ..core.metrics import format_class_table, format_table

    predictor = _predictor(args)
    check_masks_folder(args.data)
    no_mask = [it.name for it in scan_folder(args.data) if it.mask_path is None]
    if no_mask:
        shown = some(no_mask)
        print(
            f"{plural(len(no_mask), 'image')} without a mask not evaluated: {shown}",
            file=sys.stderr,
        )
    attributes = None
    if getattr(args, "attributes", None):
        from ..core.attributes import read_attributes

        attributes = read_attributes(args.attributes)
    with _terminate_as_interrupt():
        metrics = evaluate_folder(
            predictor,
            args.data,
            progress=_tqdm_progress("evaluating", "img"),
            split=_group_split(args.split, predictor.family),
            attributes=attributes,
        )
    if metrics.get("binary_masks"):
        n = int(metrics["binary_masks"])
        print(
            f"{plural(n, 'mask')} {'was' if n == 1 else 'were'} binary: {BINARY_NOTE}",
            file=sys.stderr,
        )
    print(format_table(metrics))
    if "classes" in metrics:
        print()
        print(format_class_table(metrics, tuple(metrics["classes"]), metrics.get("split")))
    if "equity" in metrics:
        print()
        print(format_equity_table(metrics["equity"]))
    if args.json:
        from ..core.atomic import atomic_write_json

        atomic_write_json(args.json, metrics)
    return 0


# ----------------------------------------------------------------------------- suggest


def cmd_suggest(args: argparse.Namespace) -> int:
    from ..core.active import suggest_tiles
    from ..core.slide import open_slide

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
        from ..core.atomic import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0
