"""Transfer learning (seed 003): what each model retrains when its feature extractor is frozen, and
the overrides of the two methods.

A transfer run starts from a source run's best weights (``train.init_from``) with a fresh output
layer (``find_head``: the last ``nn.Linear``, never copied). Then either

* **fine-tuning**: every weight trains, at the recipe's learning rate divided by a factor (10, or 3
  when the source was trained on W jets, as in seed 003): ``transfer_overrides("finetune", ...)``;
* **frozen**: the feature extractor (LundNet's and ParticleNet's EdgeConv blocks, the attention
  blocks of ParT and MIParT, PFN's per-particle network) keeps the source's weights and the *dense
  head* (``transfer_head_modules``) is retrained at the recipe's learning rate
  (``train.freeze_backbone=true``). Normalisation layers of the frozen part stay in eval mode, so
  their running statistics stay the source's too and the frozen part is a fixed function.

The dense head per model (``TRANSFER_HEADS``, by class name; a model may name its own with a
``transfer_head`` attribute):

| model | dense head (retrained when frozen) |
|---|---|
| LundNet-3/5 | ``fusion_block`` (Linear 448 -> 384, ReLU, BN), ``fc`` (FC 256 + dropout, output) |
| ParticleNet | ``fusion_block`` when configured, ``fc`` (FC 256 + dropout, output) |
| ParT, MIParT | ``head.fc`` (the output Linear after the class-attention blocks) |
| PFN | ``f`` (the F network on the summed latent), ``fc`` (output) |

Any other model: its classification head alone (``find_head``).

Before any data is read, ``check_init_source`` refuses a source run that cannot start this run:
one trained on another feature set (its input layer reads other features, e.g. ``kin`` pre-training
for a ``kinpid`` target) or a model without a replaceable head (no ``nn.Linear`` classifier to
re-initialise for the new classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from jettag.train.checkpoint import CheckpointError
from jettag.train.optim import find_head

#: per model class, the modules retrained by the frozen method (those the model has)
TRANSFER_HEADS: dict[str, tuple[str, ...]] = {
    "LundNet": ("fusion_block", "fc"),
    "ParticleNet": ("fusion_block", "fc"),
    "ParticleTransformer": ("head.fc",),
    "MIParticleTransformer": ("head.fc",),
    "PFN": ("f", "fc"),
}

#: the two transfer methods and the from-scratch reference
METHODS = ("scratch", "finetune", "frozen")

#: fine-tuning divides the recipe's lr by this (seed 003: 10, 3 for the W source)
FINETUNE_LR_FACTOR = 10.0


def transfer_head_modules(model: nn.Module) -> tuple[str, ...]:
    """Names of the modules the frozen method retrains: ``model.transfer_head`` if set, else
    ``TRANSFER_HEADS`` by class name (the entries the model has), else the classification head."""
    names = getattr(model, "transfer_head", None)
    if names is None:
        modules = dict(model.named_modules())
        names = tuple(n for n in TRANSFER_HEADS.get(type(model).__name__, ()) if n in modules)
    return tuple(names) or (find_head(model),)


def in_modules(param_name: str, modules: tuple[str, ...]) -> bool:
    """Whether a parameter (or buffer) name lies inside one of ``modules``."""
    return any(param_name == m or param_name.startswith(m + ".") for m in modules)


def _stay_in_eval(module: nn.Module, args: tuple) -> None:
    module.train(False)


def freeze_all_but(model: nn.Module, keep: tuple[str, ...]) -> list[str]:
    """Freeze every parameter outside ``keep`` (``requires_grad=False``) and keep the normalisation
    layers outside ``keep`` in eval mode (a forward pre-hook: the trainer's ``model.train()`` cannot
    turn them back), so that their running statistics stay as loaded. Returns the frozen names."""
    frozen = []
    for name, p in model.named_parameters():
        if not in_modules(name, keep):
            p.requires_grad_(False)
            frozen.append(name)
    for name, m in model.named_modules():
        is_norm = isinstance(m, nn.modules.batchnorm._NormBase)
        if is_norm and not in_modules(name, keep) and not getattr(m, "_jettag_frozen", False):
            m.register_forward_pre_hook(_stay_in_eval)
            m._jettag_frozen = True  # one hook, however often the groups are built
            m.train(False)
    return frozen


def transfer_overrides(method: str, lr: float, factor: float = FINETUNE_LR_FACTOR) -> tuple[str, ...]:
    """The ``key=value`` overrides of a transfer method on top of the target recipe (whose lr is
    ``lr``), besides ``train.init_from``: fine-tuning at ``lr / factor``, frozen at ``lr``."""
    if method == "scratch":
        return ()
    if method == "finetune":
        if not factor > 0:
            raise ValueError(f"fine-tuning lr factor must be > 0, got {factor}")
        return (f"train.lr={lr / factor:.6g}",)
    if method == "frozen":
        return ("train.freeze_backbone=true",)
    raise ValueError(f"unknown transfer method {method!r}; known: {', '.join(METHODS)}")


def replaceable_head(model: nn.Module, source: str) -> str:
    """The module name of ``model``'s classification head, which fine-tuning re-initialises; a
    ``CheckpointError`` naming ``source`` when the model has none (no ``nn.Linear`` classifier)."""
    name = type(model).__name__
    try:
        head = find_head(model)
        module = model.get_submodule(head)
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: model {name} has no replaceable head to fine-tune ({err})"
                              ) from None
    if not isinstance(module, nn.Linear):
        raise CheckpointError(f"{source}: model {name} has no replaceable head to fine-tune: its classifier "
                              f"{head!r} is a {type(module).__name__}, not an nn.Linear")
    return head


def check_init_source(cfg: dict[str, Any], src_dir: Path, src_cfg: dict[str, Any]) -> None:
    """Refuse (``CheckpointError``, before any data is read) a source run trained on other features
    than this run's ``data.feature_set``, or a model without a replaceable head."""
    from jettag.train.checkpoint import build_model_from_config

    src_feat = (src_cfg.get("data") or {}).get("feature_set")
    feat = cfg.get("data", {}).get("feature_set")
    if src_feat is not None and feat is not None and src_feat != feat:
        raise CheckpointError(
            f"{src_dir / 'config.yaml'}: data.feature_set is {src_feat!r}, this run's is {feat!r}: the "
            f"pre-trained input layer reads other features (pre-train with data.feature_set={feat} or "
            f"fine-tune with data.feature_set={src_feat})")
    if "data" in cfg:  # the target model as it will be built (2 classes: the head is replaced anyway)
        replaceable_head(build_model_from_config(cfg, num_classes=2), f"{src_dir}: init_from")
