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
"""

from __future__ import annotations

from torch import nn

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
