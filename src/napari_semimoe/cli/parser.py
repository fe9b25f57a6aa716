"""The argument parser of every command (their help texts state the defaults)."""

from __future__ import annotations

import argparse

from .cohort import add_cohort_parser
from .info import cmd_bench, cmd_gui, cmd_summary
from .options import (
    BATCH,
    COUNT,
    EVERY,
    OVERLAP,
    REPEATS,
    SEED,
    SIZE,
    THREADS,
    TILE,
    TOP,
    WIDTH,
    _Parser,
    add_mask_options,
    float_option,
    int_option,
    out_file,
    out_folder,
)
from .predict import cmd_evaluate, cmd_predict, cmd_suggest
from .train import _config_defaults, cmd_train, run_defaults


def build_parser() -> argparse.ArgumentParser:
    from ..core.uncertainty import STRATEGIES

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
        "--dca-split",
        metavar="RULE|H/M/T",
        help="DCA: head/medium/tail class ids, e.g. 1,2/3/4,5 (medium may be empty), or a rule "
        "applied to the labeled masks: log-gap (default, printed at the start) or thirds "
        "(equal thirds by pixel share: the ablation)",
        **run_opt,
    )
    t.add_argument(
        "--dca-fusion",
        choices=("dfam", "average"),
        help="DCA: how the decoders are aggregated: dfam (per-pixel attention, default) or "
        "average (the ablation)",
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
        "--scheduler",
        metavar="ADDRESS",
        help="train on a dask worker with the GPU resource of this scheduler (e.g. "
        "tcp://host:8786); the run folder stays here",
    )
    t.add_argument(
        "--lr",
        type=float_option(0, 100, lo_open=True),
        help="SGD learning rate (default: the family's, 0.5 for semimoe and moe-k, 0.05 for dca)",
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
        "--ema-teacher",
        type=float_option(0, 0.9999),
        metavar="DECAY",
        help="Semi-MoE: pseudo-labels from a mean teacher, a moving average of the network "
        f"with this decay, e.g. 0.99 (default {D['ema_teacher']}: off, the paper's method)",
        **run_opt,
    )
    t.add_argument(
        "--pseudo-confidence",
        type=float_option(0, 0.9999),
        metavar="P",
        help="Semi-MoE: leave unlabeled pixels whose pseudo-label probability is below P out "
        f"of the unsupervised losses, e.g. 0.9 (default {D['pseudo_confidence']}: off)",
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
        "--unknown-value",
        type=int_option(0, 2**31 - 1),
        metavar="V",
        help="sparse painting: mask pixels of value V (e.g. 255 in 8-bit masks) are unknown, "
        "ignored by the supervised losses (default: every mask pixel is gland or background)",
        **run_opt,
    )
    t.add_argument(
        "--experts",
        type=int_option(2, 64),
        metavar="K",
        help=f"moe-k: number of homogeneous experts (default {D['experts']})",
        **run_opt,
    )
    t.add_argument(
        "--top-k",
        type=int_option(0, 64),
        metavar="k",
        help="moe-k: noisy top-k gate keeping k experts per image (default 0: a dense "
        "softmax over all K)",
        **run_opt,
    )
    t.add_argument(
        "--balance",
        type=float_option(0, 100),
        metavar="BETA",
        help="load-balancing weight β of β(log K − H(mean gate)) (default: moe-k 0.01, "
        "semimoe off)",
        **run_opt,
    )
    t.add_argument(
        "--consistency",
        type=float_option(0, 100),
        help=f"moe-k: weight of the cross-expert consistency on unlabeled tiles, times λ "
        f"(default {D['consistency']})",
        **run_opt,
    )
    t.add_argument(
        "--stain-jitter",
        type=float_option(0, 1),
        metavar="S",
        help="stain augmentation: HED-space jitter of strength S (0.05 = light, 0.2 = strong, "
        "about a lab-to-lab colour difference; default "
        f"{D['stain_jitter']}: off)",
        **run_opt,
    )
    t.add_argument(
        "--stain-normalise",
        metavar="REF_IMAGE",
        help="stain normalisation (Macenko) to this reference image: every training image, "
        "and later every predicted image or slide, is re-stained to it (default off)",
        **run_opt,
    )
    t.add_argument(
        "--attributes",
        metavar="CSV",
        help="each image's attribute (site / scanner / stain batch), a name,attribute table; "
        "images not in it are unknown",
        **run_opt,
    )
    t.add_argument(
        "--attribute-routing",
        action="store_true",
        help="dMoE blocks: one router per attribute value plus 'any' for unknown and new "
        "values (without --attributes: one learnt router for all images)",
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
        add_mask_options(q)

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
    pr.add_argument(
        "--ome-zarr",
        action="store_true",
        help="also keep OUT/NAME.ome.zarr: the working-scale maps, labels and gates, as "
        "`cohort` writes them",
    )
    pr.add_argument(
        "--attributes",
        metavar="CSV",
        help="attribute routing: each input's attribute (name,attribute; names without "
        "their file type); missing or unseen values use the 'any' router",
    )
    pr.add_argument(
        "--attribute", metavar="VALUE", help="attribute routing: one attribute for all inputs"
    )
    pr.set_defaults(func=cmd_predict)

    add_cohort_parser(sub)

    ev = sub.add_parser("evaluate", help="Dice/Jaccard and GlaS object metrics on a folder")
    add_predict_opts(ev)
    ev.add_argument("--data", required=True, help="folder with images/ and masks/")
    ev.add_argument("--json", type=out_file, help="also write the metrics to this JSON file")
    ev.add_argument(
        "--split",
        metavar="H/M/T",
        help="multi-class: head/medium/tail class ids for the group means, e.g. 1,2/3/4 "
        "(default: the model's own split, DCA's; none for Semi-MoE)",
    )
    ev.add_argument(
        "--attributes",
        metavar="CSV",
        help="each image's attribute (name,attribute): per-attribute Dice / IoU and ES-Dice / "
        "ES-IoU, and each image routed by it (attribute routing)",
    )
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
    b.add_argument(
        "--family",
        help="time one training iteration of this family against multi-class Semi-MoE's "
        "(3 synthetic classes, 2 + 2 tiles); default: the fast vs reference paths of semimoe",
    )
    b.add_argument("--repeats", type=REPEATS, default=7)
    b.add_argument(
        "--compile",
        default="off",
        choices=["on", "off"],
        help="also time a torch.compile'd fast path (compiles for minutes on CPU)",
    )
    b.add_argument("--threads", type=THREADS)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    b.add_argument(
        "--predict-only",
        action="store_true",
        help="time only prediction: today's path, each inference optimisation, the reference",
    )
    b.add_argument(
        "--predict-size",
        type=SIZE,
        default=1024,
        help="side of the image predicted, in working-scale pixels (default 1024)",
    )
    b.add_argument("--json", type=out_file)
    b.set_defaults(func=cmd_bench)
    for q in sub.choices.values():  # -v after the command too
        q.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=verbose_help)  # fmt: skip
    return p
