"""Training recipes: YAML files in ``configs/`` merged over defaults, plus ``key=value`` overrides.

A recipe only states what differs from ``DEFAULTS``; ``base: other_recipe`` inherits another
recipe first. Overrides use dotted paths (``train.lr=5e-4``) or, when unambiguous, their tail
(``lr=5e-4``, ``epochs=3``, ``schedule.name=cosine``); values are parsed as YAML, so ``bf16=false`` and
``split=[0.8,0.1,0.1]`` work. Unknown keys are errors (a typo must not silently train the default).
``check`` validates the whole resolved config (types, ranges, names against the code's tables,
the device, the model's options) before any data is read or generated. The resolved config is
written to the run directory and is all that is needed to rebuild the model.

``data.streaming`` trains from a stream of row groups (memory bounded by ``data.buffer_size``);
its train/val/test split is then per jet by a hash of (``split_seed``, file name, row), which
``jettag evaluate RUN`` rebuilds (``jettag.data.dataset``), instead of a permutation of all jets.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from jettag.errors import JettagError
from jettag.evaluate.metrics import BEST_METRICS
from jettag.files import atomic_write_text

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
        "event_btag": None,  # event kinds: double-b-tag per-jet efficiency from generator truth (e.g. 0.8)
        # stream row groups through a shuffle buffer instead of holding the data in memory: true |
        # false | "auto" (stream when ``path`` has more than ``stream_above`` jets). Streaming splits
        # ``path`` per jet by a hash of (split_seed, file name, row): see jettag.data.dataset
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
        "drop_path": None,  # stochastic-depth rate of ParT/MIParT (models with residual blocks)
        "bf16": "auto",  # bf16 autocast on GPU ("auto"), true/false
        "compile": False,
        "deterministic": False,
        "early_stopping": None,  # stop after this many epochs without a better ``best_metric`` (null: never)
        "best_metric": "loss",  # validation metric that selects ``best``: a key of BEST_METRICS
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


class ConfigError(JettagError, ValueError):
    """A recipe or override that does not fit the schema."""


def config_dir() -> Path:
    """The recipes shipped with the package (``jettag/configs/``), or ``$JETTAG_CONFIGS`` when set."""
    from importlib.resources import files

    env = os.environ.get("JETTAG_CONFIGS")
    if env:
        return Path(env)
    return Path(str(files("jettag") / "configs"))  # a plain directory in any (non-zipped) install


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
    """Apply ``key=value`` strings (dotted path or a unique tail of one; ``model.overrides.X=...`` is
    free here and checked against the model's options by ``check``)."""
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
        if key not in leaves:  # a unique tail of a path: ``lr``, ``schedule.name``
            matches = [p for p in leaves if p.endswith("." + key)]
            if len(matches) != 1:
                hint = f"ambiguous: {matches}" if matches else f"no such key; known: {leaves}"
                raise ConfigError(f"override {key!r}: {hint}")
            key = matches[0]
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


#: validation metrics that may select ``best`` and drive early stopping -> True when higher is better.
#: The trainer reads the direction from here; every key is in every validation dict (``rej50`` and
#: ``rej30`` of a multi-class run are the geometric means over the signal classes, see ``trainer``).
_BOOL_KEYS = ("data.drop_invalid", "train.class_balanced", "train.compile", "train.deterministic",
              "train.freeze_backbone", "train.progress", "train.bucket")


def _get(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(cfg: dict[str, Any], key: str, minimum: int, optional: bool = False) -> None:
    value = _get(cfg, key)
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        what = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def _number(cfg: dict[str, Any], key: str, low: float, high: float = math.inf, low_open: bool = False,
            high_open: bool = False, optional: bool = False) -> None:
    value = _get(cfg, key)
    if optional and value is None:
        return
    ok = _is_number(value) and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'(' if low_open else '['}{low:g}"
        hi = f"{high:g}{')' if high_open else ']'}" if math.isfinite(high) else "inf)"
        raise ConfigError(f"{key} must be a number in {lo}, {hi}" + (" or null" if optional else "")
                          + f", got {value!r}")


def _choice(key: str, value: Any, known: Any) -> None:
    if not isinstance(value, str) or value not in known:
        raise ConfigError(f"{key}: unknown value {value!r}; known: {', '.join(sorted(known))}")


def _check_keys(cfg: dict[str, Any], defaults: dict[str, Any], path: str) -> None:
    """Every key of ``DEFAULTS`` present, nothing else (a resumed run's config may predate a key)."""
    for key, default in defaults.items():
        where = f"{path}.{key}" if path else key
        if key not in cfg:
            raise ConfigError(f"{where} is missing (a config written by an older jettag? add it)")
        if isinstance(default, dict):
            if not isinstance(cfg[key], dict):
                raise ConfigError(f"{where} must be a mapping, got {cfg[key]!r}")
            if key != "overrides":
                _check_keys(cfg[key], default, where)
    extra = set(cfg) - set(defaults) - ({"recipe", "classes"} if not path else set())
    if extra:
        raise ConfigError(f"{path or 'config'}: unknown key(s) {sorted(extra)}; known: {sorted(defaults)}")


def _check_data_source(key: str, value: Any) -> None:
    """A dataset path that exists, or ``generate:<recipe>:<n_jets>[:seed]`` naming a known recipe
    (the recipe table only: Pythia is not imported and nothing is generated here)."""
    from jettag.data.dataset import GENERATE_PREFIX, parse_generate

    if isinstance(value, str) and value.startswith(GENERATE_PREFIX):
        from jettag.data.generate.recipes import RECIPES

        try:
            recipe, n_jets, seed = parse_generate(value)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
        if recipe not in RECIPES:
            raise ConfigError(f"{key}={value!r}: unknown generation recipe {recipe!r}; "
                              f"known: {', '.join(sorted(RECIPES))}")
        n_classes = len(RECIPES[recipe].classes)
        if n_jets < n_classes or seed < 0:
            raise ConfigError(f"{key}={value!r}: need n_jets >= {n_classes} (one per class of {recipe!r}) "
                              f"and seed >= 0")
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a dataset path (a file, directory or glob) or "
                          f"generate:<recipe>:<n_jets>[:seed], got {value!r}")
    from jettag.data.formats import resolve_dataset

    try:
        resolve_dataset(value)
    except FileNotFoundError as err:
        raise ConfigError(f"{key}: {err}") from None


def _check_model(cfg: dict[str, Any]) -> None:
    """Model name, override keys and a trial build on the meta device (no memory, no data).

    ``train.drop_path`` needs a model with a ``drop_path`` option: ParT and MIParT(-L), whose
    blocks are identity shortcut + residual branch. PFN has no residual blocks, and ParticleNet's
    EdgeConv shortcuts are learned projections (every block changes the width), so dropping a
    block's EdgeConv branch would leave a linear map of its input: no stochastic depth there.
    """
    import torch

    from jettag.models.registry import create_model, list_models, model_options

    m, t = cfg["model"], cfg["train"]
    _choice("model.name", m["name"], list_models())
    options = model_options(m["name"])
    overrides = dict(m["overrides"])
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise ConfigError(f"model.overrides: {m['name']!r} has no option(s) {unknown}; "
                          f"it accepts: {', '.join(options)}")
    if t["drop_path"] is not None:
        if "drop_path" not in options:
            having = [n for n in list_models() if "drop_path" in model_options(n)]
            raise ConfigError(f"train.drop_path={t['drop_path']}: model {m['name']!r} has no stochastic "
                              f"depth (models with it: {', '.join(having)}); leave train.drop_path null")
        if overrides.get("drop_path", t["drop_path"]) != t["drop_path"]:
            raise ConfigError(f"train.drop_path={t['drop_path']} and model.overrides.drop_path="
                              f"{overrides['drop_path']} differ: set one of them")
        overrides["drop_path"] = t["drop_path"]
    try:
        with torch.device("meta"):
            create_model(m["name"], num_classes=2, features=cfg["data"]["feature_set"], **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {m['name']!r} with overrides {overrides}: {err}") from None


def _check_device(device: Any) -> None:
    import torch

    if device in ("auto", "cpu"):
        return
    if not isinstance(device, str) or not (device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:<index>, got {device!r}")
    try:
        index = torch.device(device).index
    except RuntimeError as err:
        raise ConfigError(f"train.device={device!r}: {err}") from None
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={device!r} but torch sees no CUDA GPU here (torch "
                          f"{torch.__version__}, CUDA build: {torch.version.cuda}); use device=auto or cpu")
    if index is not None and index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={device!r}: only {torch.cuda.device_count()} GPU(s) visible")


def check(cfg: dict[str, Any]) -> None:
    """Check a resolved config completely, before any data is read or generated.

    Every key of ``DEFAULTS`` is checked for type and range, every name against the table the code
    uses (models, optimizers, schedules, feature sets, generation recipes, detectors, metrics),
    ``model.overrides`` against the model's options, the device against the machine; the first
    problem is raised as a ``ConfigError`` naming the key.
    """
    from jettag.data.features import FEATURE_SETS
    from jettag.data.generate.detector import DETECTORS
    from jettag.train.optim import OPTIMIZERS
    from jettag.train.schedule import SCHEDULES

    if not isinstance(cfg, dict):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    _check_keys(cfg, DEFAULTS, "")
    d, t, sched = cfg["data"], cfg["train"], cfg["train"]["schedule"]
    for key in _BOOL_KEYS:
        if not isinstance(_get(cfg, key), bool):
            raise ConfigError(f"{key} must be true or false, got {_get(cfg, key)!r}")

    # ---- data
    if d["path"] is None:
        raise ConfigError("data.path is not set (a dataset path, or generate:<recipe>:<n_jets>[:seed])")
    split = d["split"]
    if (not isinstance(split, list) or len(split) != 3 or not all(_is_number(x) and x >= 0 for x in split)
            or abs(sum(split) - 1) > 1e-6):
        raise ConfigError(f"data.split must be three non-negative fractions summing to 1, got {split!r}")
    if split[0] == 0 or (split[1] == 0 and d["val"] is None):
        raise ConfigError(f"data.split {split}: the train fraction, and the val fraction unless data.val "
                          "is set, must be > 0")
    _int(cfg, "data.split_seed", 0)
    _choice("data.feature_set", d["feature_set"], FEATURE_SETS)
    _int(cfg, "data.max_len", 1)
    _int(cfg, "data.max_jets", 1, optional=True)
    _int(cfg, "data.generate_workers", 1)
    _choice("data.detector", d["detector"], DETECTORS)

    # ---- train: integers and numbers
    _int(cfg, "train.seed", 0)
    if t["seed"] >= 2**32:
        raise ConfigError(f"train.seed must be < 2**32, got {t['seed']}")
    for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "log_every"):
        _int(cfg, f"train.{key}", 1)
    _int(cfg, "train.save_every", 0)
    _int(cfg, "train.max_steps", 1, optional=True)
    _int(cfg, "train.early_stopping", 1, optional=True)
    _number(cfg, "train.lr", 0, low_open=True)
    _number(cfg, "train.lr_head", 0, low_open=True, optional=True)
    _number(cfg, "train.weight_decay", 0)
    _number(cfg, "train.grad_clip", 0, low_open=True, optional=True)
    _number(cfg, "train.label_smoothing", 0, 1, high_open=True)
    _number(cfg, "train.drop_path", 0, 1, high_open=True, optional=True)
    betas = t["betas"]
    if not (isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {betas!r}")
    if t["bf16"] not in ("auto", True, False):
        raise ConfigError(f"train.bf16 must be auto, true or false, got {t['bf16']!r}")
    if t["init_from"] is not None and not (isinstance(t["init_from"], str) and t["init_from"]):
        raise ConfigError(f"train.init_from must be a run directory or null, got {t['init_from']!r}")
    if t["best_metric"] not in BEST_METRICS:
        raise ConfigError(f"train.best_metric: unknown metric {t['best_metric']!r}; "
                          f"known: {', '.join(BEST_METRICS)} (loss lower is better, the others higher)")

    # ---- train: names
    _choice("train.optimizer", t["optimizer"], OPTIMIZERS)
    _choice("train.schedule.name", sched["name"], SCHEDULES)
    _number(cfg, "train.schedule.warmup", 0, 1, high_open=True)
    _number(cfg, "train.schedule.flat_fraction", 0, 1)
    _number(cfg, "train.schedule.final_factor", 0, 1, low_open=True)
    _number(cfg, "train.schedule.min_factor", 0, 1)
    _int(cfg, "train.schedule.cycles", 1)
    _number(cfg, "train.schedule.gamma", 0, low_open=True)

    # ---- what needs the machine, the model registry and the data tables
    _check_device(t["device"])
    _check_model(cfg)
    _check_data_source("data.path", d["path"])
    for key in ("val", "test"):
        if d[key] is not None:
            _check_data_source(f"data.{key}", d[key])


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config (atomically: a crash never leaves a half-written config.yaml)."""
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))


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
