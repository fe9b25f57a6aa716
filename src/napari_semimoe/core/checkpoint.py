"""Checkpoints that load without executing code: safetensors tensors + JSON metadata.

One file holds the weights, the optimiser state and a JSON document (config, normalisation
statistics, training state); it is written by :func:`~.atomic.atomic_path` (a temp file
renamed over the old one), so a crash or a cancel at any moment leaves the last good
checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .atomic import atomic_write_json as atomic_write_json  # where benchmarks import it
from .atomic import atomic_write_text as atomic_write_text
from .errors import CheckpointError, InputError
from .validate import MAX_WIDTH

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT_VERSION = 1
#: JSON files of a run folder besides the checkpoint (prediction needs none of them).
RUN_JSON = ("config.json", "history.json", "split.json")

log = logging.getLogger(__name__)


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

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"json": json.dumps(doc)})
        except SafetensorError as exc:  # its I/O errors (disk full) are OSErrors to callers
            raise OSError(f"{Path(path).name}: {exc}") from exc


def _denied(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: permission denied; it exists but this user may not read it (check its "
        "permissions and those of its folders)"
    )


def _open(path: Path):
    try:
        exists = path.exists()
    except PermissionError:
        raise _denied(path) from None
    if not exists:
        if path.name == CHECKPOINT_NAME and path.parent.is_dir():
            raise CheckpointError(f"{path}: no checkpoint found (has this run trained yet?)")
        raise CheckpointError(f"{path}: no such run folder or checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint file")
    if not os.access(path, os.R_OK):
        raise _denied(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except PermissionError:
        raise _denied(path) from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable napari-semimoe checkpoint ({reason})"
        ) from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(path)
    try:
        return p / CHECKPOINT_NAME if p.is_dir() else p
    except PermissionError:
        raise _denied(p) from None


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (all tensors, document). Never unpickles anything."""
    p = resolve_checkpoint(path)
    with _open(p) as f:
        raw = (f.metadata() or {}).get("json")
        if raw is None:
            raise CheckpointError(f"{p}: safetensors file without napari-semimoe metadata")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"{p}: its metadata is damaged (not JSON: {exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict):
            raise CheckpointError(f"{p}: its metadata is damaged (no 'meta' section)")
        version = doc.get("format_version", 0)
        if not isinstance(version, int):
            raise CheckpointError(f"{p}: its metadata is damaged (format_version {version!r})")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{p}: written by a newer napari-semimoe; please upgrade")
        try:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{p}: its tensors are damaged ({exc})") from None
    return tensors, doc


def damaged_run_files(run: str | Path) -> list[tuple[str, str]]:
    """(name, reason) of each JSON file of the run folder that exists but does not parse.

    Prediction needs only the checkpoint, so these are reported, not fatal."""
    run = Path(run)
    if not run.is_dir():
        return []
    bad = []
    for name in RUN_JSON:
        f = run / name
        if not f.exists():
            continue
        try:
            json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            bad.append((name, reason))
    return bad


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def model_meta(
    p: str | Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The checkpoint's metadata checked against its tensors before a model is built.

    A width, geometry or normalisation that is missing, absurd or inconsistent with the
    tensors is a :class:`CheckpointError`, never a giant allocation; a width or geometry
    missing from ``meta`` is recovered from the tensors or the saved config (and logged).
    ``meta["family"]`` names the model family; checkpoints from before families have none
    and are Semi-MoE; an unknown family is one line listing the known ones."""
    from .families import DEFAULT_FAMILY, get_family  # they import the model, not this

    meta = dict(doc["meta"])
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    # Checkpoints saved before families existed name none: they are all Semi-MoE.
    name = meta.get("family", cfg.get("family", DEFAULT_FAMILY))
    try:
        family = get_family(name if isinstance(name, str) else repr(name))
    except InputError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
    meta["family"] = family.name
    width_tensor = family.width_tensor
    if width_tensor not in tensors:
        raise CheckpointError(f"{p}: holds no model weights ({width_tensor} missing)")
    shape = tuple(tensors[width_tensor].shape)
    if len(shape) != 4 or shape[1:] != (3, 3, 3):
        raise CheckpointError(f"{p}: its weights are damaged ({width_tensor} has shape {shape})")
    real = int(shape[0])
    width = meta.get("width", cfg.get("width"))
    if width is None:
        log.warning("%s: its metadata has no model width; using %d from its weights", p, real)
        width = real
    if not isinstance(width, int) or isinstance(width, bool) or not 2 <= width <= MAX_WIDTH:
        raise CheckpointError(f"{p}: its metadata is damaged (model width {width!r})")
    if width != real:
        raise CheckpointError(
            f"{p}: its metadata says model width {width} but its weights have width {real}; "
            "the checkpoint is damaged"
        )
    meta["width"] = width
    geo = meta.get("geometry", cfg.get("geometry"))
    if not isinstance(geo, dict):
        raise CheckpointError(f"{p}: its metadata is damaged (no working scale / tile size)")
    scale, tile, size = geo.get("scale", 1.0), geo.get("tile", 256), geo.get("input_size")
    if not _finite(scale) or not 1 <= scale <= 1e4:
        raise CheckpointError(f"{p}: its metadata is damaged (working scale {scale!r})")
    for key, v in (("tile", tile), ("input_size", size)):
        if v is None and key == "input_size":
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not 16 <= v <= 8192 or v % 16:
            raise CheckpointError(f"{p}: its metadata is damaged ({key} {v!r})")
    meta["geometry"] = {"scale": float(scale), "input_size": size, "tile": tile}
    for key in ("mean", "std"):
        v = meta.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(_finite(x) for x in v)):
            raise CheckpointError(f"{p}: its metadata is damaged (normalisation {key} {v!r})")
    if any(x <= 0 for x in meta["std"]):
        raise CheckpointError(f"{p}: its metadata is damaged (normalisation std {meta['std']})")
    return meta


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # size mismatch: tensors of another shape than the metadata says
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        raise CheckpointError(
            f"checkpoint tensors do not fit the model its metadata describes ({first or exc})"
        ) from None
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
