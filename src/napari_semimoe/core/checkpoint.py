"""Checkpoints that load without executing code: safetensors tensors + JSON metadata.

One file holds the weights, the optimiser state and a JSON document (config, normalisation
statistics, training state); it is written to a temporary file and renamed over the old one,
so a crash or a cancel at any moment leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT_VERSION = 1


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text via a temp file + rename, so readers never see a half-written file."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    _atomic_replace(Path(path), write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save weights (+ optimiser tensors, + ``extra`` tensors) and ``meta`` (JSON) atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(extra or {})
    opt_meta: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        sd = opt.state_dict()
        scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            scalars["state"][str(pid)] = {}
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    tensors[f"optim.{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars["state"][str(pid)][k] = float(v)
        opt_meta[name] = scalars
    doc = {"format_version": FORMAT_VERSION, "meta": meta, "optimizers": opt_meta}
    _atomic_replace(
        Path(path), lambda tmp: save_file(tensors, tmp, metadata={"json": json.dumps(doc)})
    )


def _open(path: Path):
    if not path.exists():
        if path.name == CHECKPOINT_NAME and path.parent.is_dir():
            raise CheckpointError(f"{path}: no checkpoint found (has this run trained yet?)")
        raise CheckpointError(f"{path}: no such run folder or checkpoint file")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable napari-semimoe checkpoint ({exc})") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (all tensors, document). Never unpickles anything."""
    p = resolve_checkpoint(path)
    with _open(p) as f:
        raw = (f.metadata() or {}).get("json")
        if raw is None:
            raise CheckpointError(f"{p}: safetensors file without napari-semimoe metadata")
        doc = json.loads(raw)
        if doc.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{p}: written by a newer napari-semimoe; please upgrade")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    return tensors, doc


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit this model (missing {len(missing)}, unexpected "
            f"{len(unexpected)} tensors; was it trained with another --width?)"
        )


def load_optimizer_state(
    opt: torch.optim.Optimizer, name: str, tensors: dict[str, torch.Tensor], doc: dict
) -> None:
    saved = doc.get("optimizers", {}).get(name)
    if saved is None:
        return
    state: dict[int, dict[str, Any]] = {}
    for pid, scalars in saved["state"].items():
        st: dict[str, Any] = {k: torch.tensor(v) for k, v in scalars.items()}
        prefix = f"optim.{name}.{pid}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                st[k[len(prefix) :]] = v.clone()
        state[int(pid)] = st
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
