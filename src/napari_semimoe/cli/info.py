"""``summary``, ``bench`` and ``gui``: the commands that train or read no data."""

from __future__ import annotations

import argparse
import json
import sys

from .options import _check_width

# ----------------------------------------------------------------------------- summary


def cmd_summary(args: argparse.Namespace) -> int:
    from ..core.config import TrainConfig
    from ..core.families import get_family

    family = get_family(args.family)  # an unknown name: one line listing the known ones
    _check_width(args.width)
    family = family.example(TrainConfig(width=args.width, family=family.name))
    counts = family.parameter_counts(
        family.build(TrainConfig(width=args.width, family=family.name))
    )
    counts["width"] = args.width
    counts["family"] = family.name
    print(json.dumps(counts, indent=1))
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from ..core.bench import family_bench, run_bench
    from ..core.families import get_family

    family = get_family(args.family).name if args.family else None
    if family is not None and family != "semimoe":
        result = family_bench(
            family,
            width=args.width,
            repeats=args.repeats,
            threads=args.threads,
            log=lambda s: print(s, file=sys.stderr),
            device=args.device,
        )
    else:
        result = run_bench(
            width=args.width,
            repeats=args.repeats,
            compile=args.compile,
            threads=args.threads,
            log=lambda s: print(s, file=sys.stderr),
            device=args.device,
            predict_only=args.predict_only,
            predict_size=args.predict_size,
        )
    print(json.dumps(result, indent=1))
    if args.json:
        from ..core.atomic import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


# ----------------------------------------------------------------------------- gui


def cmd_gui(args: argparse.Namespace) -> int:
    from ..plugin.launch import launch

    launch(args.project, sample=not args.no_sample)
    return 0
