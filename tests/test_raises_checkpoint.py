"""Checkpoint and fine-tuning layers: every refusal names the checkpoint file and the field or tensor.

A tiny PFN is saved once per test into ``tmp_path``; each case damages one part of the checkpoint
(the JSON, a field, the weights file, the optimizer file) and must be refused naming that part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from jettag.models import create_model
from jettag.train import checkpoint as ckpt
from jettag.train.checkpoint import CheckpointError
from jettag.train.trainer import _init_from, _init_source


def _id(text: str) -> str:
    """A test id from a message pattern: word characters only, so that the node id can be passed back
    to pytest on a command line (mutmut runs tests by node id; regex escapes in ids broke that)."""
    return re.sub(r"\W+", "_", text).strip("_")


def _pfn(phi: int = 8) -> torch.nn.Module:
    return create_model("pfn", num_classes=2, features="kin", phi_sizes=[phi, phi], f_sizes=[8])


def _save(ck_dir: Path, model: torch.nn.Module | None = None, with_state: bool = True) -> Path:
    model = model if model is not None else _pfn()
    optimizer = torch.optim.AdamW(model.parameters()) if with_state else None
    meta = {"model": "pfn", "epoch": 1, "batch": 0, "step": 3, "bad_epochs": 0, "best": 0.5,
            "classes": ["QCD", "top"]}
    extra = {"note": torch.ones(2)} if with_state else None  # a tensor in the optimizer file
    return ckpt.save_checkpoint(ck_dir, "last", model, meta, optimizer, extra)


def _edit_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(ck_dir: Path) -> None:
        path = ck_dir / "last.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))
    return apply


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda meta: meta.__setitem__(key, value)


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda ck_dir: (ck_dir / name).write_bytes(data)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda ck_dir: (ck_dir / name).unlink()


# (damage, resume, pattern): {f} is replaced by the damaged file's path
CASES = [
    (_remove("last.json"), False, r"{d}/last\.json: no such checkpoint$"),
    (_write("last.json", b"{not json"), False, r"{d}/last\.json: corrupt checkpoint metadata \("),
    (_write("last.json", b"[1, 2]"), False, r"{d}/last\.json: not a jettag checkpoint \(no token\)$"),
    (_edit_json(lambda m: m.pop("shapes")), False, r"{d}/last\.json: field 'shapes' is missing$"),
    (_edit_json(_set("format_version", "1")), False, r"{d}/last\.json: field 'format_version' must be int, "
                                                     r"got '1'$"),
    (_edit_json(_set("format_version", 99)), False, r"{d}/last\.json: format_version 99 is newer than this "
                                                   r"jettag reads \(1\)"),
    (_edit_json(lambda m: m.pop("state")), True, r"{d}/last\.json: weight-only checkpoint, cannot resume"),
    (_edit_json(_set("epoch", True)), True, r"{d}/last\.json: field 'epoch' must be int, got True$"),
    (_edit_json(_set("best", "0.5")), True, r"{d}/last\.json: field 'best' must be float or int or null, "
                                           r"got '0\.5'$"),
    (_edit_json(_set("model", "mipart")), False,
     r"{d}/last\.json: checkpoint is for model 'mipart', not 'pfn'$"),
    (_remove("last.safetensors"), False, r"{d}/last\.safetensors: missing \(the checkpoint is incomplete\)$"),
    (_write("last.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"), False,
     r"{d}/last\.safetensors: corrupt or not a safetensors file"),
    (_edit_json(_set("token", "0" * 32)), False,
     r"{d}/last\.safetensors: belongs to a different save than its JSON \(token [0-9a-f]{32} != 0{32}\)"),
    (_edit_json(lambda m: m["state"].__setitem__("extra", {"__tensor__": "s.gone"})), True,
     r"{d}/last\.optim\.safetensors: missing tensor 's\.gone'$"),
    (_remove("last.optim.safetensors"), True, r"{d}/last\.optim\.safetensors: missing \(the checkpoint is "),
]


@pytest.mark.parametrize(("damage", "resume", "pattern"), CASES, ids=[_id(c[2][4:40]) for c in CASES])
def test_damaged_checkpoint_refused_naming_file_and_field(tmp_path: Path, damage: Callable[[Path], None],
                                                          resume: bool, pattern: str) -> None:
    ck_dir = tmp_path / "checkpoints"
    _save(ck_dir)
    damage(ck_dir)
    with pytest.raises(CheckpointError) as err:
        ckpt.load_checkpoint(ck_dir, "last", _pfn(), "pfn", with_state=resume)
    assert re.search(pattern.replace("{d}", re.escape(str(ck_dir))), str(err.value)), str(err.value)


def test_weights_of_another_shape_refused_naming_the_tensor(tmp_path: Path) -> None:
    _save(tmp_path, _pfn(phi=8))
    with pytest.raises(CheckpointError, match=r"last\.safetensors: does not fit PFN: .*phi\.0\.weight"):
        ckpt.load_checkpoint(tmp_path, "last", _pfn(phi=16), "pfn")


def test_unstorable_state_named_by_its_path() -> None:
    with pytest.raises(TypeError, match=r"^cannot store set at s\.scheduler\.1 in a checkpoint$"):
        ckpt.flatten_state({"scheduler": [0, {1, 2}]}, {})


# ------------------------------------------------------------------ fine-tuning (train.init_from)
def _source_run(run: Path, model_name: str, model: torch.nn.Module) -> Path:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model_name, "overrides": {}}}))
    ckpt.save_checkpoint(run / "checkpoints", "best", model, {"model": model_name})
    return run


def test_init_from_a_run_of_another_model(tmp_path: Path) -> None:
    run = _source_run(tmp_path / "pre", "part", _pfn())
    cfg = {"model": {"name": "pfn"}, "train": {"init_from": str(run)}}
    pattern = rf"^{re.escape(str(run))}: init_from run has model 'part', this run 'pfn'$"
    with pytest.raises(CheckpointError, match=pattern):
        _init_source(cfg)


def test_init_from_weights_that_do_not_fit_the_backbone(tmp_path: Path) -> None:
    run = _source_run(tmp_path / "pre", "pfn", _pfn(phi=8))
    source = _init_source({"model": {"name": "pfn"}, "train": {"init_from": str(run)}})
    assert source[1] == "best"
    pattern = rf"^{re.escape(str(run))}/checkpoints/best\.safetensors: does not fit PFN: .*phi\.0\.weight"
    with pytest.raises(CheckpointError, match=pattern):
        _init_from(_pfn(phi=16), source)


def test_init_from_a_directory_that_is_no_run(tmp_path: Path) -> None:
    from jettag.train.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: not a run directory"):
        _init_source({"model": {"name": "pfn"}, "train": {"init_from": str(tmp_path)}})
