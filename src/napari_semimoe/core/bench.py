"""Speed of the default (fast) path against a plain fp32 reference, measured in one run.

Both paths are stepped in turn (interleaved), so a noisy, shared machine slows both alike
and the ratios stay meaningful. Medians are reported.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from .data import Geometry, TrainingSet
from .device import cpu_bf16_units, cpu_has_fast_bf16
from .inference import LoadedModel, PredictOptions, Predictor
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
) -> dict:
    """Time the fast and the reference path, stepped in turn in one process, on ``device``."""
    if threads:
        torch.set_num_threads(threads)
    images, masks = synthetic_tiles(8, size=tile)
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

    # Prediction: a predict_size^2 working-scale image, tiles of `tile`, overlap tile / 4.
    rng = np.random.default_rng(1)
    reps = max(1, predict_size // tile)
    big = np.tile(images[0], (reps, reps, 1))
    big = np.clip(big.astype(np.int16) + rng.integers(-5, 6, big.shape), 0, 255).astype(np.uint8)
    model = trainers["fast"].model
    dev = trainers["fast"].device
    ref_model = trainers["fast"].family.build(trainers["fast"].config).to(dev)
    ref_model.load_state_dict(model.state_dict())
    ref_model.literal = True
    g = Geometry(scale=1.0, tile=tile)
    mean, std = trainers["fast"].mean, trainers["fast"].std
    preds = {
        "fast": Predictor(
            LoadedModel(model.eval(), g, mean, std, {}, dev), PredictOptions(precision="auto")
        ),
        "reference": Predictor(
            LoadedModel(ref_model.eval(), g, mean, std, {}, dev),
            PredictOptions(precision="fp32", fast=False),
        ),
    }
    for p in preds.values():
        p.predict_image(big[:tile, :tile], instances=False)
    ptimes: dict[str, list[float]] = {k: [] for k in preds}
    for r in range(max(3, repeats // 2)):
        for k, p in preds.items():
            t = time.perf_counter()
            p.predict_image(big, instances=False)
            ptimes[k].append(time.perf_counter() - t)
        log(
            f"predict repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in ptimes.items())
        )
    mpx = big.shape[0] * big.shape[1] / 1e6
    pf, pr = mpx / float(np.median(ptimes["fast"])), mpx / float(np.median(ptimes["reference"]))
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
        "predict_mpx_per_s": round(pf, 4),
        "predict_reference_mpx_per_s": round(pr, 4),
        "predict_speedup": round(pf / pr, 2),
        "predict_image": list(big.shape[:2]),
        "predict_tile": tile,
        "predict_overlap": tile // 4,
    }
