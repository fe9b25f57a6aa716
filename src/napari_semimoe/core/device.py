"""Device, precision and thread choices shared by training, prediction and benchmarks."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Callable
from typing import Any

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; explicit names are checked, not trusted."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InputError("device 'mps' asked for, but Apple MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")


def cpu_bf16_units() -> dict[str, bool | None]:
    """Which bf16 units this CPU has, as torch sees them (None: torch cannot tell).

    AMX tiles multiply bf16 several times faster than fp32; AVX512-BF16 alone ~2.3x
    (measured, ``docs/benchmarks.md``)."""
    cpu = getattr(torch, "cpu", None)
    units: dict[str, bool | None] = {}
    for name, probe in (
        ("amx", "_is_amx_tile_supported"),
        ("avx512_bf16", "_is_avx512_bf16_supported"),
    ):
        fn = getattr(cpu, probe, None)
        units[name] = None
        if fn is not None:
            with contextlib.suppress(Exception):
                units[name] = bool(fn())
    return units


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose bf16 matrix units (AMX) or AVX512-BF16 make bf16 autocast pay."""
    return any(cpu_bf16_units().values())


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a precision setting ('auto', 'bf16', 'fp32'), None for fp32."""
    precision = (precision or "auto").lower()
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16"):
        raise InputError(f"unknown precision {precision!r}: use auto, bf16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and (precision == "bf16" or cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_determinism() -> None:
    """Make GPU runs repeat bit for bit (CPU runs already do): deterministic cuDNN/cuBLAS
    kernels, at some cost in speed. Process-wide, as torch's switches are."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # warn_only: an op with no deterministic kernel warns instead of stopping the training
    torch.use_deterministic_algorithms(True, warn_only=True)


def release_memory() -> None:
    """Hand the memory PyTorch keeps cached on a GPU back to the driver.

    Prediction runs in the viewer's process (training runs in a process of its own, whose
    end frees everything); without this the model's activations would stay reserved on the
    GPU after each prediction, out of reach of the training process and other programs.
    """
    gc.collect()  # tensors held only by reference cycles
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        with contextlib.suppress(Exception):
            mps.empty_cache()


def releasing_memory(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: :func:`release_memory` once ``fn`` has returned (its locals are gone)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            release_memory()

    return wrapper


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def adaptive_malloc() -> bool:
    """Serve allocations below 32 MiB from the heap again where the environment turned off
    glibc's adaptive mmap threshold (``MALLOC_TRIM_THRESHOLD_`` set: dask's nanny sets it
    for every worker it starts, by default). Without this every large tensor of a forward
    pass is a fresh ``mmap`` plus page faults, and prediction ran 1.7-1.9x slower in such a
    worker (docs/cohort.md). Returns whether it changed anything; a chosen
    ``MALLOC_MMAP_THRESHOLD_`` is respected."""
    import sys

    env = os.environ
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in env:
        return False
    if "MALLOC_TRIM_THRESHOLD_" not in env:
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False
