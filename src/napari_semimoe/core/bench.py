"""Speed of the default (fast) path against a plain fp32 reference, measured in one run;
for prediction also against today's path before the inference optimisations, step by step.

Both paths are stepped in turn (interleaved), so a noisy, shared machine slows both alike
and the ratios stay meaningful. Medians are reported.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from .data import Geometry, TrainingSet
from .device import cpu_bf16_units, cpu_has_fast_bf16, resolve_device
from .inference import LoadedModel, PredictOptions, Predictor
from .inference.optimize import inference_model
from .train import TrainConfig, Trainer


def synthetic_tiles(n: int, size: int = 256, seed: int = 0):
    """H&E-like random tiles with elliptic 'glands' (so the targets are not trivial)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        for k in range(1, 5):
            cy, cx = rng.integers(size // 8, size - size // 8, 2)
            ry, rx = rng.integers(max(2, size // 20), max(3, size // 6), 2)
            m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = k
        base = np.array([230, 180, 220], np.float32)
        im = base - (m > 0)[..., None] * np.array([90, 120, 40], np.float32)
        im += rng.normal(0, 12, (size, size, 3))
        images.append(np.clip(im, 0, 255).astype(np.uint8))
        masks.append(m)
    return images, masks


def cpu_description() -> dict:
    """What the fast/reference ratio depends on: the CPU model and its bf16 units."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, **cpu_bf16_units()}


def _timed_steps(trainers: dict, repeats: int, log) -> dict[str, list[float]]:
    """Seconds of each trainer's steps, the trainers interleaved in every repeat so that a
    load change on the machine falls on all of them alike (their ratios stay fair)."""
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for r in range(repeats):
        for k, tr in trainers.items():
            t = time.perf_counter()
            tr.step()
            _sync(tr.device)
            times[k].append(time.perf_counter() - t)
        log(
            f"train repeat {r + 1}/{repeats}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
        )
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # GPU work is asynchronous: time it to its end
        torch.cuda.synchronize(device)


def run_bench(
    width: int = 16,
    repeats: int = 7,
    compile: str = "on",
    threads: int | None = None,
    log: Callable[[str], None] = print,
    predict_size: int = 1024,
    tile: int = 256,
    device: str = "auto",
    predict_only: bool = False,
) -> dict:
    """Time the fast and the reference path, stepped in turn in one process, on ``device``.

    ``predict_only``: only the prediction paths, with an untrained network of ``width``
    (speed does not depend on the weights)."""
    if threads:
        torch.set_num_threads(threads)
    images, masks = synthetic_tiles(8, size=tile)
    if predict_only:
        from .families import get_family

        family = get_family()
        dev = resolve_device(device)
        model = family.build(TrainConfig(width=width)).to(dev)
        pred = predict_bench(
            model, family, [0.5] * 3, [0.25] * 3, dev, images[0],
            rounds=max(3, repeats), predict_size=predict_size, tile=tile, log=log,
        )  # fmt: skip
        return {
            "width": width,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            **cpu_description(),
            "bf16_units": cpu_has_fast_bf16(),
            **pred,
        }
    data = TrainingSet(images[:4], masks[:4], images[4:])
    geo = Geometry(input_size=tile).to_dict()
    common = dict(
        width=width, iterations=10_000, checkpoint_every=10**9, geometry=geo, device=device
    )
    # "fast" is what `train` runs by default; "compiled" adds torch.compile (opt-in on CPU).
    paths = {
        "fast": TrainConfig(**common, fast=True, precision="auto", compile="off"),
        "reference": TrainConfig(**common, fast=False, precision="fp32", compile="off"),
    }
    if compile == "on":
        paths["compiled"] = TrainConfig(**common, fast=True, precision="auto", compile="on")
    trainers = {
        k: Trainer(c, data, tempfile.mkdtemp(prefix="semimoe-bench-")) for k, c in paths.items()
    }
    t0 = time.perf_counter()
    for tr in trainers.values():  # warm-up (includes torch.compile)
        tr.step()
    warm = time.perf_counter() - t0
    log(f"warm-up (incl. compile) {warm:.1f} s")
    times = _timed_steps(trainers, repeats, log)
    train_fast = float(np.median(times["fast"]))
    train_ref = float(np.median(times["reference"]))
    extra = {}
    if "compiled" in times:
        tc = float(np.median(times["compiled"]))
        extra = {
            "train_iteration_compiled_s": round(tc, 4),
            "train_speedup_compiled": round(train_ref / tc, 2),
            "train_iteration_compiled_s_all": [round(t, 4) for t in times["compiled"]],
        }

    pred = predict_bench(
        trainers["fast"].model,
        trainers["fast"].family,
        trainers["fast"].mean,
        trainers["fast"].std,
        trainers["fast"].device,
        images[0],
        rounds=max(1, repeats // 2),  # --repeats 7: 3 rounds
        predict_size=predict_size,
        tile=tile,
        log=log,
    )
    dev = trainers["fast"].device
    return {
        "width": width,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **cpu_description(),
        "bf16_units": cpu_has_fast_bf16(),
        "compile": compile,
        "warmup_s": round(warm, 2),
        "train_iteration_s": round(train_fast, 4),
        "train_iteration_reference_s": round(train_ref, 4),
        "train_speedup": round(train_ref / train_fast, 2),
        # The fast path's labeled and unlabeled halves ran on two threads (>= 2 CPU threads).
        "halves_side_by_side": trainers["fast"].halves_side_by_side,
        "train_iteration_s_all": [round(t, 4) for t in times["fast"]],
        "train_iteration_reference_s_all": [round(t, 4) for t in times["reference"]],
        **extra,
        **pred,
    }


def family_bench(
    family: str,
    width: int = 16,
    repeats: int = 7,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    tile: int = 256,
    device: str = "auto",
    classes: int = 3,
) -> dict:
    """One training iteration of ``family`` against multi-class Semi-MoE's, on the same
    ``classes``-class synthetic tiles (2 labeled + 2 unlabeled of ``tile``²), fast path,
    stepped in turn in one process; the ratio is family / Semi-MoE (median of ``repeats``)."""
    from .classes import ClassTable

    if threads:
        torch.set_num_threads(threads)
    images, ids = synthetic_tiles(8, size=tile)
    # Class k = instance id folded onto 1..classes: class 1 the largest share.
    masks = [np.where(m > 0, np.minimum(m, classes), 0).astype(np.uint8) for m in ids]
    table = ClassTable.from_names(["background", *(f"class {k}" for k in range(1, classes + 1))])
    data = TrainingSet(images[:4], masks[:4], images[4:])
    common = dict(
        width=width,
        iterations=10_000,
        checkpoint_every=10**9,
        geometry=Geometry(input_size=tile).to_dict(),
        device=device,
        classes=table.to_list(),
        compile="off",
    )
    names = ["semimoe", family] if family != "semimoe" else ["semimoe"]
    trainers = {
        n: Trainer(TrainConfig(**common, family=n), data, tempfile.mkdtemp(prefix="semimoe-bench-"))
        for n in names
    }
    for tr in trainers.values():  # warm-up
        tr.step()
    times = _timed_steps(trainers, repeats, log)
    med = {n: float(np.median(v)) for n, v in times.items()}
    first = next(iter(trainers.values()))
    out = {
        "family": family,
        "width": width,
        "classes": classes,
        "batch": "2 labeled + 2 unlabeled",
        "tile": tile,
        "device": str(first.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **cpu_description(),
        "split": trainers[names[-1]].config.dca_split,
    }
    for n in names:
        out[f"train_iteration_{n}_s"] = round(med[n], 4)
        out[f"train_iteration_{n}_s_all"] = [round(t, 4) for t in times[n]]
        out[f"parameters_{n}"] = trainers[n].family.parameter_counts(trainers[n].model)["total"]
    out["ratio_to_semimoe"] = round(med[names[-1]] / med["semimoe"], 3)
    # Each repeat stepped both in turn: the median of the per-repeat ratios is robust to
    # load that changes between repeats (a shared CPU).
    pairs = np.array(times[names[-1]]) / np.array(times["semimoe"])
    out["ratio_to_semimoe_paired_median"] = round(float(np.median(pairs)), 3)
    for tr in trainers.values():
        tr.close()
    return out


def predict_variants(loaded: LoadedModel) -> dict[str, Predictor]:
    """The prediction paths ``bench`` compares, each a step on from the one before.

    ``today``: the network as trained, bf16 autocast where the CPU has bf16 units,
    channels-last (the default before :mod:`.inference.optimize`); ``fold``: + batch norm
    folded, phase kernels precomputed; ``optimized`` (the default): + bf16 weights;
    ``reference``: fp32, NCHW, literal layers (upstream's way).
    """
    ref_model = copy.deepcopy(loaded.model)
    ref_model.literal = True
    ref = dataclasses.replace(loaded, model=ref_model)
    today = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
    preds = {
        "today": Predictor(today, PredictOptions(precision="auto", optimize=False)),
        "fold": Predictor(loaded, PredictOptions(precision="auto")),
        "optimized": Predictor(loaded, PredictOptions(precision="auto")),
        "reference": Predictor(ref, PredictOptions(precision="fp32", fast=False, optimize=False)),
    }
    fold = preds["fold"]
    net = inference_model(
        loaded.model, amp=fold.amp, channels_last=fold.channels_last, bf16_weights=False
    )
    fold.net, fold.steps = net.model, net.steps
    return preds


def predict_bench(
    model: torch.nn.Module,
    family,
    mean: list[float],
    std: list[float],
    device: torch.device,
    tile_image: np.ndarray,
    *,
    rounds: int = 3,
    predict_size: int = 1024,
    tile: int = 256,
    log: Callable[[str], None] = print,
) -> dict:
    """Prediction throughput of each path of :func:`predict_variants`, in interleaved rounds
    (one image of ``predict_size``^2 at working scale, tiles of ``tile``, overlap tile / 4),
    medians; ratios against ``today`` and against the fp32 reference."""
    rng = np.random.default_rng(1)
    reps = max(1, predict_size // tile)
    big = np.tile(tile_image, (reps, reps, 1))
    big = np.clip(big.astype(np.int16) + rng.integers(-5, 6, big.shape), 0, 255).astype(np.uint8)
    loaded = LoadedModel(
        model.eval(), Geometry(scale=1.0, tile=tile), mean, std, {}, device, family
    )
    preds = predict_variants(loaded)
    outs = {k: p.predict_image(big[:tile, :tile], instances=False) for k, p in preds.items()}
    ptimes: dict[str, list[float]] = {k: [] for k in preds}
    for r in range(rounds):
        for k, p in preds.items():
            t = time.perf_counter()
            out = p.predict_image(big, instances=False)
            _sync(device)
            ptimes[k].append(time.perf_counter() - t)
            outs[k] = out
        log(f"predict round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in ptimes.items()))
    mpx = big.shape[0] * big.shape[1] / 1e6
    n_tiles = len(outs["today"]["tiles"])
    med = {k: float(np.median(v)) for k, v in ptimes.items()}
    mask_from = family.mask_from
    steps = {
        k: {
            "mpx_per_s": round(mpx / med[k], 4),
            "tiles_per_s": round(n_tiles / med[k], 3),
            "speedup_vs_today": round(med["today"] / med[k], 3),
            "steps": preds[k].steps,
            "max_prob_diff_vs_today": float(
                np.abs(outs[k][mask_from] - outs["today"][mask_from]).max()
            ),
            "mask_agreement_vs_today": float((outs[k]["mask"] == outs["today"]["mask"]).mean()),
            "seconds_all": [round(t, 4) for t in ptimes[k]],
        }
        for k in preds
    }
    return {
        "predict_mpx_per_s": steps["optimized"]["mpx_per_s"],
        "predict_today_mpx_per_s": steps["today"]["mpx_per_s"],
        "predict_reference_mpx_per_s": steps["reference"]["mpx_per_s"],
        "predict_speedup": round(med["reference"] / med["optimized"], 2),
        "predict_speedup_vs_today": steps["optimized"]["speedup_vs_today"],
        "predict_paths": steps,
        "predict_image": list(big.shape[:2]),
        "predict_tile": tile,
        "predict_overlap": tile // 4,
        "predict_tiles": n_tiles,
    }
