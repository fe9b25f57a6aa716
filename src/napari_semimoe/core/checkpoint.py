"""Checkpoints that load without executing code: safetensors tensors + JSON metadata.

One file holds the weights, the optimiser state and a JSON document (config, normalisation
statistics, training state); it is written to a temporary file and renamed over the old one,
so a crash or a cancel at any moment leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT_VERSION = 1


#: Temporary files of the atomic writer: ``.NAME.XXXXXXXX.tmp`` next to NAME (the runfolder
#: module removes the ones an interrupted write left, by this pattern).
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _create_temp(path: Path) -> tuple[str, int]:
    """A new, empty temp file next to ``path`` and its mode: created 0666, so that the
    kernel applies the user's umask (mkstemp's 0600 would make shared runs unreadable)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
        return str(tmp), mode
    raise FileExistsError(f"{path.parent}: cannot create a temporary file")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (power loss); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            if os.fstat(fh.fileno()).st_mode & 0o777 != mode:  # a writer that made its own
                os.chmod(tmp, mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata={"json": json.dumps(doc)})
        except SafetensorError as exc:  # its I/O errors (disk full) are OSErrors to callers
            raise OSError(f"{Path(path).name}: {exc}") from exc

    _atomic_replace(Path(path), write)


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
