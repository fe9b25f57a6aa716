"""``cohort``: predict many slides on dask.distributed into OME-Zarr (see core.cohort)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import _terminate_as_interrupt


def add_cohort_parser(sub) -> None:
    from .options import BATCH, OVERLAP, THREADS, TILE, add_mask_options, int_option, out_folder

    c = sub.add_parser(
        "cohort",
        help="predict a cohort of slides on dask.distributed into OME-Zarr",
        description="Predict every slide into OUT/NAME.ome.zarr (NGFF: the maps and the "
        "uncertainty as channels, mask and instance labels, a pyramid, in µm) at the model's "
        "working scale. Slides are split into blocks of tiles that run as tasks on a "
        "LocalCluster (--workers) or any dask scheduler (--scheduler); the model is loaded "
        "once per worker. Writes OUT/cohort_summary.json and .csv.",
    )
    c.add_argument("run", help="run folder or checkpoint file")
    c.add_argument(
        "slides", nargs="+", help="slides: paths, globs ('dir/*.svs'), folders, .txt lists"
    )
    c.add_argument("--out", type=out_folder, required=True, help="output folder")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--scheduler", help="dask scheduler address (e.g. tcp://head:8786)")
    g.add_argument("--workers", type=THREADS, help="local worker processes (default: cores / T)")
    c.add_argument(
        "--threads-per-worker",
        type=THREADS,
        default=1,
        metavar="T",
        help="torch threads per worker; each worker runs one task at a time (default 1)",
    )
    c.add_argument("--resume", action="store_true", help="complete only what is missing")
    c.add_argument(
        "--block",
        type=int_option(512, 65536),
        default=1024,
        help="block side in working px (whole 512 px chunks; default 1024)",
    )
    c.add_argument(
        "--all-tiles", action="store_true", help="predict glass too (default: tissue only)"
    )
    c.add_argument(
        "--native-mask", action="store_true", help="also write OUT/NAME_mask.tif at native size"
    )
    c.add_argument("--device", default="auto")
    c.add_argument("--tile", type=TILE, help="tile side at working scale")
    c.add_argument("--overlap", type=OVERLAP, help="tile overlap (default: tile / 4)")
    c.add_argument("--batch", type=BATCH, help="tiles per pass (default: 2 on CPU, 16 on GPU)")
    c.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    add_mask_options(c)
    c.set_defaults(func=cmd_cohort)


def cmd_cohort(args: argparse.Namespace) -> int:
    """Exit 0 when every slide is done, 2 when any failed (each failure one line)."""
    from ..core.cohort import CohortOptions, run_cohort

    opt = CohortOptions(
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        scheduler=args.scheduler,
        block=args.block,
        resume=args.resume,
        tissue_only=not args.all_tiles,
        native_mask=args.native_mask,
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        precision=args.precision,
        tta=args.tta,
        fill_holes=args.fill_holes,
        min_object=args.min_object,
        device=args.device,
    )
    bar = _Bar()
    with _terminate_as_interrupt():
        try:
            summary = run_cohort(args.run, args.slides, args.out, opt, progress=bar)
        finally:
            bar.close()
    for r in summary.slides:
        if r.status == "failed":
            said = str(r.error).startswith(Path(r.path).name)  # the reader names the file
            where = str(Path(r.path).parent / r.error) if said else f"{r.path}: {r.error}"
            print(f"napari-semimoe cohort: error: {where}", file=sys.stderr)
    done = sum(r.status == "done" for r in summary.slides)
    print(
        f"{done}/{len(summary.slides)} slides done in {summary.seconds:.1f} s; summary: "
        f"{summary.summary_json}, {summary.summary_csv}",
        file=sys.stderr,
    )
    if summary.stopped:
        raise InterruptedError("stopped; --resume completes the rest")
    return 2 if summary.failed else 0


class _Bar:
    """A tqdm bar over tiles (ETA), with the slides done in its postfix; the dashboard
    address (or why there is none) printed once."""

    def __init__(self) -> None:
        self.bar = None
        self.said = False

    def __call__(self, p) -> None:
        from tqdm import tqdm

        if not self.said:
            self.said = True
            where = p.dashboard or "none (bokeh is not installed: pip install bokeh)"
            print(f"napari-semimoe cohort: dashboard: {where}", file=sys.stderr)
        if self.bar is None:
            self.bar = tqdm(
                total=p.tiles_total, desc="cohort", unit="tile", dynamic_ncols=True, file=sys.stderr
            )
        self.bar.total = p.tiles_total
        self.bar.update(p.tiles_done - self.bar.n)
        failed = f", {p.slides_failed} failed" if p.slides_failed else ""
        self.bar.set_postfix_str(f"slides {p.slides_done}/{p.slides_total}{failed}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["add_cohort_parser", "cmd_cohort"]
