"""weaver-core checkpoint interop for ParT and ParticleNet.

weaver (and particle_transformer's wrappers, which add a ``mod.`` prefix) store pointwise layers
as ``Conv1d``/``Conv2d`` with kernel 1; jettag stores them as ``Linear``. The mapping below renames
keys and reshapes those weights; everything else (BatchNorm buffers, LayerNorms, attention
projections, scales) is copied as is.

- ``load_weaver_state_dict(model, path_or_dict)``: a weaver-trained state dict (``.pt`` read with
  ``torch.load(weights_only=True)``, never unpickled) into a jettag ``part``/``particlenet``.
- ``to_weaver_state_dict(model, prefix="mod.")``: a jettag model's weights in weaver naming.

A checkpoint of another model, or of the same model with other widths / feature count / class
count, raises ``WeaverCheckpointError`` naming the offending keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from jettag.errors import JettagError
from jettag.models.part import ParticleTransformer
from jettag.models.particlenet import ParticleNet
from jettag.models.registry import JetModel
from jettag.models.state import state_mismatch

_PREFIXES = ("module.", "_orig_mod.", "mod.")


class WeaverCheckpointError(JettagError, ValueError):
    """A weaver checkpoint that does not fit the jettag model it is loaded into."""


def _kind(model: JetModel) -> str:
    if isinstance(model, ParticleTransformer):
        return "part"
    if isinstance(model, ParticleNet):
        return "particlenet"
    raise TypeError(f"weaver interop supports ParticleTransformer and ParticleNet, "
                    f"not {type(model).__name__}")


def _pair_index(match: re.Match, to_jettag: bool) -> str:
    n = int(match.group(1))
    if to_jettag:
        if n == 0:
            return f"pair_embed.input_bn.{match.group(2)}"
        layer, pos = divmod(n - 1, 3)
        part = {0: "linear", 1: "bn"}.get(pos)
        if part is None:  # the activation has no parameters
            raise KeyError(match.group(0))
        return f"pair_embed.layers.{layer}.{part}.{match.group(2)}"
    raise AssertionError


def weaver_key_to_jettag(kind: str, key: str) -> str:
    """The jettag name of a weaver parameter/buffer name (prefix already removed)."""
    if kind == "part":
        key = key.replace("attn.in_proj_weight", "attn.in_proj.weight").replace(
            "attn.in_proj_bias", "attn.in_proj.bias")
        m = re.fullmatch(r"pair_embed\.embed\.(\d+)\.(.+)", key)
        if m:
            return _pair_index(m, True)
        for src, dst in (("cls_blocks.", "head.cls_blocks."), ("norm.", "head.norm."), ("fc.0.", "head.fc."),
                         ("cls_token", "head.cls_token")):
            if key.startswith(src):
                return dst + key[len(src):]
        return key
    return key  # ParticleNet keeps weaver's names


def jettag_key_to_weaver(kind: str, key: str) -> str:
    """The weaver name of a jettag parameter/buffer name (without prefix)."""
    if kind == "part":
        m = re.fullmatch(r"pair_embed\.input_bn\.(.+)", key)
        if m:
            return f"pair_embed.embed.0.{m.group(1)}"
        m = re.fullmatch(r"pair_embed\.layers\.(\d+)\.(linear|bn)\.(.+)", key)
        if m:
            n = 1 + 3 * int(m.group(1)) + (0 if m.group(2) == "linear" else 1)
            return f"pair_embed.embed.{n}.{m.group(3)}"
        for src, dst in (("head.cls_blocks.", "cls_blocks."), ("head.norm.", "norm."), ("head.fc.", "fc.0."),
                         ("head.cls_token", "cls_token")):
            if key.startswith(src):
                return dst + key[len(src):]
    return key


def _conv_dims(kind: str, jettag_key: str) -> int:
    """How many trailing kernel dims weaver's tensor has for this weight (0 if not a conv)."""
    if kind == "part" and re.fullmatch(r"pair_embed\.layers\.\d+\.linear\.weight", jettag_key):
        return 1
    if kind == "particlenet":
        if re.fullmatch(r"edge_convs\.\d+\.convs\.\d+\.weight", jettag_key):
            return 2
        if re.fullmatch(r"edge_convs\.\d+\.sc\.weight", jettag_key):
            return 1
    return 0


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def read_weaver_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A weaver ``.pt`` state dict, read safely (tensors only); unwraps a ``{"model": ...}`` dict."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeaverCheckpointError(f"{path}: not a tensor-only torch checkpoint ({err})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeaverCheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def convert_weaver_state_dict(model: JetModel, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
                              ) -> dict[str, torch.Tensor]:
    """weaver-named tensors -> jettag-named tensors for ``model``, validated key by key."""
    kind = _kind(model)
    state = _strip_prefix(state)
    other = "particlenet" if kind == "part" else "part"
    looks_other = any(k.startswith("edge_convs.") for k in state) if kind == "part" else any(
        k.startswith(("blocks.", "pair_embed.")) for k in state)
    if looks_other:
        raise WeaverCheckpointError(
            f"{source}: this is a weaver {other} checkpoint, but the model is {type(model).__name__}")
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        try:
            new = weaver_key_to_jettag(kind, key)
        except KeyError:
            unexpected.append(key)
            continue
        if new not in target:
            unexpected.append(key)
            continue
        nd = _conv_dims(kind, new)
        if nd and value.ndim == target[new].ndim + nd:
            value = value.reshape(value.shape[: value.ndim - nd])
        converted[new] = value
    problems = state_mismatch(target, converted, shown=lambda k: jettag_key_to_weaver(kind, k))
    if unexpected:  # weaver names with no jettag counterpart
        problems.append(f"not in {type(model).__name__} ({len(unexpected)}): {', '.join(sorted(unexpected))}")
    if problems:
        raise WeaverCheckpointError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))
    return converted


def load_weaver_state_dict(model: JetModel, checkpoint: str | Path | Mapping[str, torch.Tensor]) -> JetModel:
    """Load weaver weights (a path or a state dict, with or without ``mod.``) into ``model`` in place."""
    if isinstance(checkpoint, (str, Path)):
        source = str(checkpoint)
        state = read_weaver_checkpoint(checkpoint)
    else:
        source, state = "state dict", dict(checkpoint)
    converted = convert_weaver_state_dict(model, state, source)
    model.load_state_dict(converted, strict=True)
    return model


def to_weaver_state_dict(model: JetModel, prefix: str = "mod.") -> dict[str, torch.Tensor]:
    """``model``'s weights named and shaped as weaver-core's module (``prefix`` as particle_transformer)."""
    kind = _kind(model)
    out = {}
    for key, value in model.state_dict().items():
        nd = _conv_dims(kind, key)
        value = value.detach().clone()
        if nd:
            value = value.reshape(*value.shape, *([1] * nd))
        out[prefix + jettag_key_to_weaver(kind, key)] = value
    return out
