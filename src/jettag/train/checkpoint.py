"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint ``checkpoints/<which>`` is three files written atomically (temporary name, then
``os.replace``): ``<which>.safetensors`` (model weights), ``<which>.optim.safetensors`` (optimizer
and RNG tensors, absent for weight-only checkpoints) and ``<which>.json`` (model name, epoch, batch
position, metrics, the optimizer's non-tensor state). All three carry the same random ``token``;
the JSON is replaced last, so a kill in between leaves either the old checkpoint or a mismatch that
``load_checkpoint`` reports instead of silently mixing two saves.

Nested state (an optimizer ``state_dict``, RNG states) is split by ``flatten_state``: every tensor
is stored under its path, the rest becomes JSON with ``{"__tensor__": path}`` placeholders and
explicit markers for tuples and integer keys, so that ``unflatten_state`` restores it exactly.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from jettag.errors import JettagError
from jettag.files import atomic_path
from jettag.models.state import state_mismatch

FORMAT_VERSION = 1


class CheckpointError(JettagError, RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


# ---------------------------------------------------------------- nested state <-> (tensors, JSON)
def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """Move every tensor of ``obj`` into ``tensors`` (keyed by path); return the JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten_state(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, flatten_state(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state``."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states."""
    py = random.getstate()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": np.random.get_state(),  # noqa: NPY002  (legacy global state that user code may use)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---------------------------------------------------------------- save / load
def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _atomic_write_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers (their state-dict keys get prefixes)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    which: str,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: Any | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``<which>.safetensors`` (+ ``.optim.safetensors``) and ``<which>.json``; returns the JSON path.

    ``meta`` must be JSON-able (model name, epoch, step, metrics, ...). ``extra_state`` (scheduler,
    RNG, loader position) may contain tensors; it goes with the optimizer state.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    weights = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    _atomic_save_tensors(weights, ckpt_dir / f"{which}.safetensors", {"token": token})
    info = dict(meta)
    info.update(
        format_version=FORMAT_VERSION,
        token=token,
        shapes={k: list(v.shape) for k, v in weights.items()},
    )
    if optimizer is not None or extra_state:
        tensors: dict[str, torch.Tensor] = {}
        opt_state = optimizer.state_dict() if optimizer is not None else None
        state = {"optimizer": opt_state, **(extra_state or {})}
        info["state"] = flatten_state(state, tensors)
        _atomic_save_tensors(tensors, ckpt_dir / f"{which}.optim.safetensors", {"token": token})
    else:
        stale = ckpt_dir / f"{which}.optim.safetensors"
        if stale.exists():
            stale.unlink()
    _atomic_write_json(info, ckpt_dir / f"{which}.json")
    return ckpt_dir / f"{which}.json"


def _load_tensors(path: Path, token: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the checkpoint is incomplete)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            file_token = (f.metadata() or {}).get("token")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({err})") from err
    if file_token != token:
        raise CheckpointError(
            f"{path}: belongs to a different save than its JSON (token {file_token} != {token}); "
            "the run was probably killed while writing this checkpoint: use the other one (best/last)"
        )
    return tensors


#: JSON fields of every checkpoint, and the extra ones a resumable (``last``) checkpoint needs, with
#: their types (``None`` allowed where listed)
META_FIELDS: dict[str, tuple[type, ...]] = {"token": (str,), "format_version": (int,), "model": (str,),
                                           "shapes": (dict,)}
RESUME_FIELDS: dict[str, tuple[type, ...]] = {"epoch": (int,), "batch": (int,), "step": (int,),
                                             "bad_epochs": (int,), "best": (float, int, type(None)),
                                             "classes": (list,), "state": (dict,)}


def _check_fields(meta: dict[str, Any], fields: dict[str, tuple[type, ...]], path: Path) -> None:
    for name, types in fields.items():
        if name not in meta:
            raise CheckpointError(f"{path}: field {name!r} is missing")
        value = meta[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(f"{path}: field {name!r} must be {want}, got {value!r:.80}")


def read_meta(ckpt_dir: str | os.PathLike, which: str, resume: bool = False) -> dict[str, Any]:
    """The JSON half of a checkpoint, with its fields checked (``resume``: also those of a ``last``
    checkpoint that a run continues from); a problem is a ``CheckpointError`` naming file and field."""
    path = Path(ckpt_dir) / f"{which}.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({err})") from err
    if not isinstance(meta, dict) or "token" not in meta:
        raise CheckpointError(f"{path}: not a jettag checkpoint (no token)")
    _check_fields(meta, META_FIELDS, path)
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta['format_version']} is newer than this "
                              f"jettag reads ({FORMAT_VERSION}): update jettag")
    if resume:
        if "state" not in meta:
            raise CheckpointError(f"{path}: weight-only checkpoint, cannot resume from it")
        _check_fields(meta, RESUME_FIELDS, path)
    return meta


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, skip: tuple[str, ...] = ()
) -> None:
    """Copy ``state`` into ``model`` after checking names and shapes; ``skip`` = key prefixes left as
    initialised (a new head when fine-tuning). Errors list what differs."""
    target = unwrap(model).state_dict()

    def kept(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in d.items() if not any(k == s or k.startswith(s + ".") for s in skip)}

    problems = state_mismatch(kept(target), kept(state))
    if problems:
        name = type(unwrap(model)).__name__
        raise CheckpointError(f"{source}: does not fit {name}: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in kept(target).items():
            v.copy_(state[k])


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    which: str,
    model: nn.Module,
    model_name: str | None = None,
    with_state: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load weights into ``model`` (checking the model name and every shape); return (meta, state).

    ``state`` (optimizer, scheduler, RNG, loader position) is returned when ``with_state``.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir, which, resume=with_state)
    if model_name is not None and meta.get("model") != model_name:
        raise CheckpointError(
            f"{ckpt_dir / which}.json: checkpoint is for model {meta.get('model')!r}, not {model_name!r}"
        )
    weights = _load_tensors(ckpt_dir / f"{which}.safetensors", meta["token"])
    load_weights(model, weights, f"{ckpt_dir / which}.safetensors")
    state = None
    if with_state:
        tensors = _load_tensors(ckpt_dir / f"{which}.optim.safetensors", meta["token"])
        try:
            state = unflatten_state(meta["state"], tensors)
        except KeyError as err:
            raise CheckpointError(f"{ckpt_dir / which}.optim.safetensors: missing tensor {err}") from err
    return meta, state


def build_model_from_config(cfg: dict[str, Any], num_classes: int | None = None) -> nn.Module:
    """The model a run config describes (``num_classes`` from the config unless given), with
    ``train.drop_path`` when set."""
    from jettag.models import create_model

    m = cfg["model"]
    n = num_classes if num_classes is not None else len(cfg["classes"])
    overrides = dict(m.get("overrides") or {})
    drop_path = cfg.get("train", {}).get("drop_path")
    if drop_path is not None:  # stochastic depth: a training option, the identity in eval mode
        overrides["drop_path"] = drop_path
    return create_model(m["name"], num_classes=n, features=cfg["data"]["feature_set"], **overrides)


def load_run_model(run_dir: str | os.PathLike, which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run directory (in eval mode, on CPU) and its resolved config."""
    from jettag.train.config import read_config

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if which == "best" and not (ckpt_dir / "best.json").is_file() and (ckpt_dir / "last.json").is_file():
        which = "last"  # a run killed before its first validation
    model = build_model_from_config(cfg)
    load_checkpoint(ckpt_dir, which, model, model_name=cfg["model"]["name"])
    model.eval()
    return model, cfg
