"""Golden outputs of the MIParT authors' code, for ``tests/test_mipart_reference.py``.

Run (once, with the authors' file present; it is never committed):

    python tools/mipart_golden.py [--reference .reference/example_MIParticleTransformer.py]

The authors' ``example_MIParticleTransformer.py`` (github.com/USST-HEP/MIParT) is read from
``--reference``, else ``$JETTAG_MIPART_REFERENCE``, else ``.reference/`` of this checkout. For
MIParT and MIParT-L the script

1. builds jettag's model and fills every parameter and buffer from a seeded generator
   (``golden_weights``: the same values on every machine and torch version, independent of how
   jettag initialises or orders its modules);
2. copies those weights into the authors' ``MIParticleTransformer`` under its parameter names
   (``to_authors_state_dict``);
3. runs the authors' model in eval mode on five jets of different lengths padded to 48 and
   writes the inputs and its logits to ``tests/data/mipart_golden.npz``.

The test rebuilds jettag's model with ``golden_weights`` and compares with the stored logits.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT / ".reference" / "example_MIParticleTransformer.py"
GOLDEN = ROOT / "tests" / "data" / "mipart_golden.npz"
LENGTHS = [1, 7, 23, 40, 31]  # every jet padded to 48: padding in all of them
PADDED = 48
FEATURES, CLASSES, SEED = 7, 3, 20260
CONFIGS = {  # jettag model name -> the authors' constructor widths
    "mipart": dict(embed_dims=[128, 512, 64], pair_embed_dims=[64, 64, 64]),
    "mipart_l": dict(embed_dims=[128, 512, 128], pair_embed_dims=[128, 128, 128]),
}


def reference_path(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("JETTAG_MIPART_REFERENCE") or DEFAULT_REFERENCE)


def golden_weights(model: torch.nn.Module, seed: int = SEED) -> torch.nn.Module:
    """Every float parameter/buffer of ``model`` from one generator, in sorted-name order.

    Scales keep activations O(1): weights ~U(+-1/sqrt(fan_in)), biases and LayerNorm shifts
    ~0.1 N(0, 1), scales (LayerNorm/BN weights, c_attn, w_resid) ~1 + 0.2 N(0, 1), BN running
    means ~0.5 N(0, 1) and variances in [0.5, 1.5).
    """
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name in sorted(state):
            t = state[name]
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                value = torch.rand(t.shape, generator=g) + 0.5
            elif leaf == "running_mean":
                value = torch.randn(t.shape, generator=g) * 0.5
            elif t.ndim >= 2 and leaf != "cls_token":
                bound = t.shape[1] ** -0.5
                value = (torch.rand(t.shape, generator=g) * 2 - 1) * bound
            elif leaf in ("bias", "cls_token"):
                value = torch.randn(t.shape, generator=g) * 0.1
            else:  # weight of a norm layer, c_attn, w_resid
                value = 1 + 0.2 * torch.randn(t.shape, generator=g)
            t.copy_(value)
    return model.eval()


def jettag_model(name: str) -> torch.nn.Module:
    from jettag.models import create_model

    return golden_weights(create_model(name, num_classes=CLASSES, features=FEATURES))


def golden_inputs() -> tuple[torch.Tensor, ...]:
    from jettag.data.kinds.particles import example_inputs

    return example_inputs(FEATURES, lengths=LENGTHS, length=PADDED, seed=SEED)


def to_authors_key(key: str, n_pair_layers: int) -> str:
    """The authors' name of a jettag MIParT parameter/buffer name."""
    if key.startswith("pair_embed.input_bn."):
        return "pair_embed.embed1.0." + key.removeprefix("pair_embed.input_bn.")
    m = re.fullmatch(r"pair_embed\.layers\.(\d+)\.(linear|bn)\.(.+)", key)
    if m:
        k, pos = int(m.group(1)), 0 if m.group(2) == "linear" else 1
        if k < n_pair_layers:
            return f"pair_embed.embed1.{1 + 3 * k + pos}.{m.group(3)}"
        return f"pair_embed.embed2.{pos}.{m.group(3)}"
    key = key.replace("attn.in_proj.weight", "attn.in_proj_weight").replace("attn.in_proj.bias",
                                                                            "attn.in_proj_bias")
    for src, dst in (("mi_blocks.", "blocks."), ("blocks.", "blocks2."), ("head.cls_blocks.", "cls_blocks."),
                     ("head.norm.", "norm."), ("head.fc.", "fc.0."), ("head.cls_token", "cls_token")):
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def to_authors_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """jettag MIParT weights in the authors' naming; pair-MLP weights get their Conv1d kernel dim."""
    n_pair = len(model.pair_embed.layers) - 1
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if re.fullmatch(r"pair_embed\.layers\.\d+\.linear\.weight", key):
            value = value.unsqueeze(-1)
        out[to_authors_key(key, n_pair)] = value
    return out


def load_reference(path: Path) -> types.ModuleType:
    """The authors' module; its only weaver import (a logger) is served by weaver-core if installed."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the MIParT authors' example_MIParticleTransformer.py is not there")
    if importlib.util.find_spec("weaver") is None:  # the file imports weaver's logger and nothing else
        import logging

        for name in ("weaver", "weaver.utils", "weaver.utils.logger"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["weaver.utils.logger"]._logger = logging.getLogger("mipart_reference")
    spec = importlib.util.spec_from_file_location("mipart_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_model(reference: types.ModuleType, name: str, model: torch.nn.Module) -> torch.nn.Module:
    """The authors' MIParticleTransformer with ``model``'s weights (strict load), in eval mode."""
    import logging

    logging.getLogger("weaver").setLevel(logging.WARNING)
    theirs = reference.MIParticleTransformer(
        input_dim=FEATURES, num_classes=CLASSES, pair_input_dim=4, use_pre_activation_pair=False,
        num_heads=8, num_MIlayers=5, num_layers=5, num_cls_layers=2, block_params=None,
        cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0}, fc_params=[],
        activation="gelu", trim=False, for_inference=False, **CONFIGS[name])
    theirs.load_state_dict(to_authors_state_dict(model), strict=True)
    return theirs.eval()


def authors_logits(reference: types.ModuleType, name: str, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    theirs = authors_model(reference, name, jettag_model(name))
    _, features, vectors, mask = inputs
    with torch.no_grad():
        return theirs(features, v=vectors, mask=mask.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="path of example_MIParticleTransformer.py")
    parser.add_argument("--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    reference = load_reference(reference_path(args.reference))
    inputs = golden_inputs()
    arrays = {name: t.numpy() for name, t in zip(("points", "features", "vectors", "mask"), inputs)}
    for name in CONFIGS:
        arrays[f"{name}_logits"] = authors_logits(reference, name, inputs).numpy()
    arrays["seed"] = np.array(SEED)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for name in CONFIGS:
        print(name, arrays[f"{name}_logits"].round(4).tolist())


if __name__ == "__main__":
    main()
