"""Training recipes: YAML files in ``configs/`` merged over defaults, plus ``key=value`` overrides.

A recipe only states what differs from ``DEFAULTS``; ``base: other_recipe`` inherits another
recipe first. Overrides use dotted paths (``train.lr=5e-4``) or, when unambiguous, the bare leaf
name (``lr=5e-4``, ``epochs=3``); values are parsed as YAML, so ``bf16=false`` and
``split=[0.8,0.1,0.1]`` work. Unknown keys are errors (a typo must not silently train the default).
The resolved config is written to the run directory and is all that is needed to rebuild the model.

``data.streaming`` trains from a stream of row groups (memory bounded by ``data.buffer_size``);
its train/val/test split is then per jet by a hash of (``split_seed``, file name, row), which
``jettag evaluate RUN`` rebuilds (``jettag.train.datasets``), instead of a permutation of all jets.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "model": {"name": "mipart", "overrides": {}},
    "data": {
        # a dataset path (any format ``jettag.data.formats`` reads) or generate:<recipe>:<n_jets>[:seed]
        "path": None,
        "val": None,  # separate validation/test datasets; when null, split ``path``
        "test": None,
        "split": [0.8, 0.1, 0.1],  # train/val/test fractions of ``path``
        "split_seed": 0,  # fixed across training seeds: every run of a recipe shares one test set
        "feature_set": "kin",
        "max_len": 128,
        "drop_invalid": False,
        "max_jets": None,  # use a random subset of N jets of ``path`` (quick runs), before the split
        "generate_workers": 2,
        "detector": "none",
        # stream row groups through a shuffle buffer instead of holding the data in memory: true |
        # false | "auto" (stream when ``path`` has more than ``stream_above`` jets). Streaming splits
        # ``path`` per jet by a hash of (split_seed, file name, row): see jettag.train.datasets
        "streaming": "auto",
        "stream_above": 2_000_000,
        "buffer_size": 100_000,  # jets per shuffle buffer when streaming (memory scales with it)
    },
    "train": {
        "seed": 0,
        "epochs": 20,
        "batch_size": 512,
        "eval_batch_size": 1024,
        "optimizer": "ranger",  # adamw | ranger | radam | adam
        "lr": 1e-3,
        "lr_head": None,  # fine-tuning: separate lr of the (new) head
        "weight_decay": 0.01,
        "betas": [0.95, 0.999],
        "schedule": {
            "name": "flat+decay",
            "warmup": 0.1,
            "flat_fraction": 0.7,
            "final_factor": 0.01,
            "min_factor": 1e-3,
            "cycles": 1,
            "gamma": 1.0,
        },
        "grad_clip": None,  # max global grad norm
        "grad_accum": 1,  # micro-batches per optimizer step
        "class_balanced": False,  # weight the loss by inverse class frequency
        "label_smoothing": 0.0,
        "drop_path": None,  # passed to the model when it has a drop_path option
        "bf16": "auto",  # bf16 autocast on GPU ("auto"), true/false
        "compile": False,
        "deterministic": False,
        "early_stopping": None,  # patience in epochs (on ``best_metric``)
        "best_metric": "loss",  # validation metric that selects ``best``: loss | acc | auc
        "init_from": None,  # fine-tuning: a run directory whose best weights initialise the model
        "freeze_backbone": False,
        "max_steps": None,  # stop after this many optimizer steps (tests, kill simulation)
        "log_every": 20,
        "save_every": 0,  # also write ``last`` every N optimizer steps (0: at epoch ends only)
        "device": "auto",
        "progress": True,
        "bucket": True,
    },
}


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema."""


def config_dir() -> Path:
    """``configs/`` of the source tree (or ``$JETTAG_CONFIGS``)."""
    env = os.environ.get("JETTAG_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "configs"


def _merge(base: dict, update: dict, path: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}.{key}" if path else key
        if key not in out:
            raise ConfigError(f"{source}: unknown key {where!r}; known here: {sorted(out)}")
        if isinstance(out[key], dict) and key != "overrides":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where!r} must be a mapping, got {value!r}")
            out[key] = _merge(out[key], value, where, source)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe by name (``configs/<name>.yaml``) or path, merged over ``DEFAULTS`` (and its base)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = config_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise ConfigError(f"recipe {str(name_or_path)!r} not found ({path}); known recipes: {known}")
    if str(path) in _seen:
        raise ConfigError(f"{path}: recipe inheritance loop {_seen}")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    base_name = raw.pop("base", None)
    raw.pop("description", None)
    base = load_recipe(base_name, (*_seen, str(path))) if base_name else copy.deepcopy(DEFAULTS)
    cfg = _merge(base, raw, "", str(path))
    cfg["recipe"] = path.stem
    return cfg


def _leaf_paths(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.items():
        p = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and key != "overrides":
            out.extend(_leaf_paths(value, p))
        else:
            out.append(p)
    return out


def _parse_value(raw: str) -> Any:
    """YAML scalar/list parsing, plus floats like ``5e-4`` that YAML 1.1 leaves as strings."""
    if raw == "":
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (dotted path or unique leaf name; ``model.overrides.X=...`` free)."""
    cfg = copy.deepcopy(cfg)
    leaves = _leaf_paths({k: v for k, v in cfg.items() if k != "recipe"})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        if key.startswith("model.overrides."):
            cfg["model"]["overrides"][key.removeprefix("model.overrides.")] = value
            continue
        if "." not in key:
            matches = [p for p in leaves if p.split(".")[-1] == key]
            if len(matches) != 1:
                hint = f"ambiguous: {matches}" if matches else "no such key"
                raise ConfigError(f"override {key!r}: {hint}; use a dotted path, e.g. train.{key}")
            key = matches[0]
        if key not in leaves:
            raise ConfigError(f"override {key!r}: no such key; known: {leaves}")
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return cfg


def resolve(recipe: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Recipe + overrides, checked."""
    cfg = apply_overrides(load_recipe(recipe), overrides)
    check(cfg)
    return cfg


def check(cfg: dict[str, Any]) -> None:
    """Value checks that YAML cannot express; messages name the key."""
    t, d = cfg["train"], cfg["data"]
    if d["path"] is None:
        raise ConfigError("data.path is not set (a dataset path, or generate:<recipe>:<n_jets>[:seed])")
    for key in ("epochs", "batch_size", "grad_accum"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {t[key]!r}")
    split = d["split"]
    if len(split) != 3 or any(x < 0 for x in split) or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"data.split must be three non-negative fractions summing to 1, got {split}")
    if not float(t["lr"]) > 0:
        raise ConfigError(f"train.lr must be > 0, got {t['lr']}")


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config (atomically: a crash never leaves a half-written config.yaml)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The resolved config of a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ConfigError(f"{path}: not a jettag run config (no 'model' section)")
    return cfg
