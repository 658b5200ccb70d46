"""Config layer: every refusal of ``jettag.train.config`` names the key (and the file) it is about.

One parametrised table of bad values run through ``check`` on a config that is valid apart from the
one edit, plus the recipe-file and run-directory errors. Cheap: no data is read, no model trained
(``check`` builds the model on the meta device only).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from jetfactory import random_jets

from jettag.data.store import write_store
from jettag.train import config as C
from jettag.train.config import ConfigError, apply_overrides, check, load_recipe, read_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "jets.parquet"
    return write_store(path, random_jets(8, seed=1, max_len=6), ["QCD", "top"], "random")


@pytest.fixture()
def cfg(store: Path) -> dict[str, Any]:
    """A valid resolved config (a small PFN on the tiny store): each case breaks one thing."""
    out = copy.deepcopy(C.DEFAULTS)
    out["model"]["name"] = "pfn"
    out["data"]["path"] = str(store)
    check(out)  # valid as built: the refusals below come from the one edit each makes
    return out


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return edit


def _delete(key: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        section, last = key.split(".")
        del cfg[section][last]
    return edit


# (edit, pattern the message must match): the pattern names the key and the offending value
CHECK_CASES = [
    (_delete("train.lr"), r"^train\.lr is missing"),
    (_set("train.schedule", "cosine"), r"^train\.schedule must be a mapping, got 'cosine'"),
    (_set("data.extra_key", 1), r"^data: unknown key\(s\) \['extra_key'\]"),
    (_set("stray", 1), r"^config: unknown key\(s\) \['stray'\]"),
    (_set("train.compile", "yes"), r"^train\.compile must be true or false, got 'yes'"),
    (_set("data.path", None), r"^data\.path is not set"),
    (_set("data.split", [0.5, 0.5]), r"^data\.split must be three non-negative fractions .*\[0\.5, 0\.5\]"),
    (_set("data.split", [0.0, 0.5, 0.5]), r"^data\.split \[0\.0, 0\.5, 0\.5\]: the train fraction"),
    (_set("data.max_len", 0), r"^data\.max_len must be an integer >= 1, got 0"),
    (_set("data.max_jets", 2.5), r"^data\.max_jets must be an integer >= 1 or null, got 2\.5"),
    (_set("data.feature_set", "kinn"), r"^data\.feature_set: unknown value 'kinn'; known: .*kin"),
    (_set("data.detector", 3), r"^data\.detector: unknown value 3"),
    (_set("train.seed", 2**32), r"^train\.seed must be < 2\*\*32, got 4294967296"),
    (_set("train.lr", 0), r"^train\.lr must be a number in \(0, inf\), got 0"),
    (_set("train.lr_head", float("nan")), r"^train\.lr_head must be a number in \(0, inf\) or null, got nan"),
    (_set("train.schedule.warmup", 1.0), r"^train\.schedule\.warmup must be a number in \[0, 1\), got 1\.0"),
    (_set("train.bf16", "maybe"), r"^train\.bf16 must be auto, true or false, got 'maybe'"),
    (_set("train.init_from", ""), r"^train\.init_from must be a run directory or null, got ''"),
    (_set("train.optimizer", "sgd"), r"^train\.optimizer: unknown value 'sgd'; known: .*adamw"),
    (_set("train.device", "tpu"), r"^train\.device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"),
    (_set("train.device", "cuda:x"), r"^train\.device='cuda:x': "),
    (_set("model.name", "bert"), r"^model\.name: unknown value 'bert'; known: .*pfn"),
    (_set("model.overrides", {"nope": 1}), r"^model\.overrides: 'pfn' has no option\(s\) \['nope'\]"),
    (_set("model.overrides", {"phi_sizes": "wide"}),
     r"^model 'pfn' with overrides \{'phi_sizes': 'wide'\}: "),
    (_set("data.path", 7), r"^data\.path must be a dataset path .* got 7"),
    (_set("data.path", "/nonexistent/jets.parquet"), r"^data\.path: /nonexistent/jets\.parquet: no such"),
    (_set("data.val", "generate:top:x"), r"^data\.val: "),
    (_set("data.test", "generate:nosuch:10"), r"^data\.test='generate:nosuch:10': unknown generation recipe "
                                              r"'nosuch'"),
    (_set("data.path", "generate:top:1"), r"^data\.path='generate:top:1': need n_jets >= 2"),
]


@pytest.mark.parametrize(("edit", "pattern"), CHECK_CASES, ids=[c[1][1:30] for c in CHECK_CASES])
def test_check_names_the_key(cfg: dict, edit: Callable[[dict], None], pattern: str) -> None:
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert re.search(pattern, str(err.value)), str(err.value)


def test_check_refuses_a_non_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^a config must be a mapping, got list$"):
        check([])  # type: ignore[arg-type]


def test_drop_path_twice_with_different_values(cfg: dict) -> None:
    cfg["model"]["name"] = "part"
    cfg["train"]["drop_path"] = 0.1
    cfg["model"]["overrides"] = {"drop_path": 0.2}
    pattern = r"^train\.drop_path=0\.1 and model\.overrides\.drop_path=0\.2 differ"
    with pytest.raises(ConfigError, match=pattern):
        check(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU accepts cuda (asserted below)")
def test_cuda_index_past_the_visible_gpus(cfg: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg["train"]["device"] = "cuda:3"
    with pytest.raises(ConfigError, match=r"^train\.device='cuda:3': only 1 GPU\(s\) visible"):
        check(cfg)


# ------------------------------------------------------------------ recipe files and overrides
@pytest.mark.parametrize(("text", "pattern"), [
    ("- a\n- b\n", r"{path}: a recipe must be a YAML mapping"),
    ("train:\n  lrr: 1\n", r"{path}: unknown key 'train\.lrr'; known here: .*'lr'"),
    ("train:\n  schedule: cosine\n", r"{path}: 'train\.schedule' must be a mapping, got 'cosine'"),
    ("base: {path}\n", r"{path}: recipe inheritance loop"),
])
def test_recipe_file_errors_name_the_file_and_key(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text.format(path=path))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert re.search(pattern.format(path=re.escape(str(path))), str(err.value)), str(err.value)


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"^recipe 'top_pfnn' not found .*known recipes: .*'top_pfn'"):
        load_recipe("top_pfnn")


@pytest.mark.parametrize(("item", "pattern"), [
    ("lr", r"^override 'lr' is not key=value$"),
    ("nosuchkey=1", r"^override 'nosuchkey': no such key; known: "),
    ("name=pfn", r"^override 'name': ambiguous: \['model\.name', 'train\.schedule\.name'\]"),
])
def test_override_errors_name_the_override(item: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(C.DEFAULTS, [item])


@pytest.mark.parametrize(("content", "pattern"), [
    (None, r"{run}: not a run directory \(no config\.yaml\)"),
    ("train: {}\n", r"{run}/config\.yaml: not a jettag run config \(no 'model' section\)"),
    ("- 1\n", r"{run}/config\.yaml: not a jettag run config"),
])
def test_read_config_names_the_run_directory(tmp_path: Path, content: str | None, pattern: str) -> None:
    if content is not None:
        (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(ConfigError) as err:
        read_config(tmp_path)
    assert re.search(pattern.format(run=re.escape(str(tmp_path))), str(err.value)), str(err.value)
