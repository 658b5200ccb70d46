"""Remaining layers: store, features, models, optimizer, schedule and data-spec refusals.

Each names what it is about: the file, the field, the jet row (with the chunk's row offset), the
tensor shape or the unknown name, with the known ones listed.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.data import features as F
from jettag.data import formats, store
from jettag.data.dataset import parse_generate
from jettag.data.store import JetDataError
from jettag.models import create_model
from jettag.models.registry import feature_dim, model_options
from jettag.train.optim import Lookahead, build_optimizer, find_head, param_groups
from jettag.train.schedule import ScheduleSpec, lr_factor


def _jets_with(field: str, row: int, index: int, value: float, n: int = 8) -> ak.Array:
    jets = random_jets(n, seed=21, min_len=2, max_len=5)
    values = ak.to_list(jets[field])
    values[row][index] = value
    return ak.with_field(jets, ak.Array(values), field)


# ------------------------------------------------------------------ store validation (row offsets)
@pytest.mark.parametrize(("field", "value", "offset", "pattern"), [
    ("part_energy", -1.0, 0, r"^f\.parquet: field 'part_energy' is negative in jet at row 6$"),
    ("part_energy", -1.0, 300, r"^f\.parquet: field 'part_energy' is negative in jet at row 306$"),
    ("part_pz", np.inf, 1000, r"^f\.parquet: field 'part_pz' .* row 1006"),
])
def test_validate_jets_names_field_and_offset_row(field: str, value: float, offset: int,
                                                  pattern: str) -> None:
    jets = _jets_with(field, 6, 1, value)
    with pytest.raises(JetDataError, match=pattern):
        store.validate_jets(jets, "f.parquet", row_offset=offset)


def test_validate_jets_names_missing_fields() -> None:
    jets = random_jets(3, seed=1, max_len=4)
    jets = ak.zip({f: jets[f] for f in jets.fields if f != "part_pz"}, depth_limit=1)
    with pytest.raises(JetDataError, match=r"^f\.parquet: missing field\(s\) \['part_pz'\]; present: "):
        store.validate_jets(jets, "f.parquet")


def _events(ranks: list[int], events: list[int]) -> ak.Array:
    return ak.Array({"event_jet_index": ranks, "event_index": events, "label": [0] * len(ranks)})


@pytest.mark.parametrize(("jets", "pattern"), [
    (ak.Array({"label": [0, 1]}), r"^ev\.parquet: no 'event_jet_index'/'event_index' fields"),
    (_events([0, 1, 0, 0], [0, 0, 1, 1]),
     r"^ev\.parquet: 4 rows do not form whole events of 2 jets .* first bad row 3$"),
    (_events([0, 1, 0], [0, 0, 1]),
     r"^ev\.parquet: 3 rows do not form whole events of 2 jets .* first bad row 2$"),
    (_events([0, 1, 0, 1], [0, 0, 1, 2]),
     r"^ev\.parquet: field 'event_index' differs within the event at rows 2\.\.$"),
])
def test_group_events_names_the_first_bad_row(jets: ak.Array, pattern: str) -> None:
    with pytest.raises(JetDataError, match=pattern):
        store.group_events(jets, "ev.parquet")


def test_store_paths_and_metadata(tmp_path) -> None:
    with pytest.raises(JetDataError, match=r"empty\.parquet: nothing to write \(no jets\)$"):
        store.write_store(tmp_path / "empty.parquet", iter([]), ["a", "b"], "test")
    assert not (tmp_path / "empty.parquet").exists() and not (tmp_path / "empty.parquet.tmp").exists()
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"none: directory holds no \.parquet files$"):
        store.resolve_paths(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"nothing\*\.parquet: no such file, directory or glob"):
        store.resolve_paths(str(tmp_path / "nothing*.parquet"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(JetDataError, match=r"plain\.parquet: not a jettag store file \(no 'jettag' metadata"):
        store.read_metadata(tmp_path / "plain.parquet")
    jets = random_jets(4, seed=2, max_len=4)
    a = store.write_store(tmp_path / "a.parquet", jets, ["QCD", "top"], "test")
    b = store.write_store(tmp_path / "b.parquet", jets, ["QCD", "W"], "test")
    with pytest.raises(JetDataError, match=r"b\.parquet: classes \['QCD', 'W'\] differ from .*a\.parquet: "):
        formats.dataset_classes([a, b])


# ------------------------------------------------------------------ features
def test_features_name_the_jet_row_and_feature() -> None:
    jets = _jets_with("part_pid", 5, 0, 0)
    pattern = (r"^f\.parquet: field 'part_pid' is 0 \(unknown particle id\) for 1 particle\(s\), "
               r"first in jet at row 5;")
    with pytest.raises(JetDataError, match=pattern):
        F.particle_features(jets, "kinpid", source="f.parquet")
    jets = _jets_with("part_px", 3, 0, np.nan)  # features of that particle are NaN
    pattern = r"^f\.parquet: feature '\w+' is not finite for 1 particle\(s\), first in jet at row 3"
    with pytest.raises(JetDataError, match=pattern):
        F.particle_features(jets, "kin", source="f.parquet")


def test_features_arguments_named() -> None:
    jets = random_jets(3, seed=1, max_len=4)
    with pytest.raises(ValueError, match=r"^unknown feature set 'kinn'; known: \["):
        F.feature_names("kinn")
    with pytest.raises(ValueError, match=r"^max_len must be >= 1, got 0$"):
        F.particle_features(jets, "kin", max_len=0)
    with pytest.raises(JetDataError, match=r"^f\.parquet: feature set 'full' needs field\(s\) \['part_d0"):
        F.particle_features(jets, "full", source="f.parquet")
    with pytest.raises(JetDataError, match=r"^f\.parquet: field 'label' is missing \(present: "):
        F.build_inputs(ak.zip({f: jets[f] for f in jets.fields if f != "label"}, depth_limit=1), "kin",
                       source="f.parquet")
    with pytest.raises(ValueError, match=r"^a jet has 3 particles, more than the padded length 2$"):
        F.pad_flat(np.zeros((3, 1), np.float32), np.array([0, 3]), 2)


# ------------------------------------------------------------------ models
@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: create_model("bert"), r"^unknown model 'bert'; available: .*pfn"),
    (lambda: model_options("bert"), r"^unknown model 'bert'; available: .*pfn"),
    (lambda: create_model("pfn", num_classes=0), r"^num_classes must be >= 1, got 0$"),
    (lambda: feature_dim(0), r"^input dimension must be positive, got 0$"),
    (lambda: feature_dim("kinn"), r"^unknown feature set 'kinn'; use one of \["),
])
def test_model_registry_names_the_problem(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(("shapes", "pattern"), [
    ({"features": (2, 5, 4), "mask": (2, 1, 4)}, r"^PFN: features must be \(batch, 7, particles\)"),
    ({"features": (2, 7, 4), "mask": (2, 4)},
     r"^PFN: mask must be \(batch, 1, particles\) = \(2, 1, 4\), got \(2, 4\)$"),
])
def test_model_input_shapes_named(shapes: dict, pattern: str) -> None:
    model = create_model("pfn", num_classes=2, features="kin", phi_sizes=[8], f_sizes=[8])
    inputs = {k: torch.zeros(s) for k, s in shapes.items()}
    with pytest.raises(ValueError, match=pattern):
        model(None, inputs["features"], None, inputs["mask"])


# ------------------------------------------------------------------ optimizer, schedule, data specs
def test_optimizer_and_schedule_names() -> None:
    model = create_model("pfn", num_classes=2, features="kin", phi_sizes=[8], f_sizes=[8])
    groups = param_groups(model, 1e-3, 0.0)
    with pytest.raises(ValueError, match=r"^unknown optimizer 'sgd'; known: adamw"):
        build_optimizer("sgd", groups)
    with pytest.raises(ValueError, match=r"^Lookahead: need 0 <= alpha <= 1 and k >= 1, got alpha=1\.5"):
        Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=1.5)
    with pytest.raises(ValueError, match=r"^ReLU: no nn\.Linear found to act as the classification head$"):
        find_head(torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"^unknown lr schedule 'nosuch'; known: "):
        lr_factor(ScheduleSpec(name="nosuch"), 10)
    with pytest.raises(ValueError, match=r"^schedule 'cosine': total_steps must be >= 1, got 0$"):
        lr_factor(ScheduleSpec(name="cosine"), 0)


def test_lookahead_state_with_other_slow_weights() -> None:
    """A (damaged) state whose slow weights do not match the parameters is refused."""
    opt = Lookahead(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
    state = opt.state_dict()
    state["slow"] = state["slow"][:1]
    with pytest.raises(ValueError, match=r"^Lookahead state has 1 slow tensors, the model has 2$"):
        opt.load_state_dict(state)


@pytest.mark.parametrize(("spec", "pattern"), [
    ("generate:top", r"^data spec 'generate:top': expected generate:<recipe>:<n_jets>\[:seed\]$"),
    ("generate:top::1", r"expected generate:<recipe>:<n_jets>\[:seed\]$"),
    ("generate:top:ten", r"^data spec 'generate:top:ten': n_jets and seed must be integers$"),
])
def test_generate_spec_named(spec: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_generate(spec)


# ------------------------------------------------------------------ refusals reached by direct calls
def test_transfer_method_and_lr_factor_refused() -> None:
    from jettag.studies.transfer import parse_group
    from jettag.train.transfer import transfer_overrides

    with pytest.raises(ValueError, match=r"^fine-tuning lr factor must be > 0, got 0$"):
        transfer_overrides("finetune", 1e-3, 0)
    with pytest.raises(ValueError, match=r"^unknown transfer method 'thaw'; known: "):
        transfer_overrides("thaw", 1e-3)
    with pytest.raises(ValueError, match=r"^not a transfer group name: 'nonsense'$"):
        parse_group("nonsense")


def test_generation_plan_shard_and_detector_refused(tmp_path) -> None:
    from jettag.data.generate.detector import apply_detector
    from jettag.data.generate.recipes import get_recipe
    from jettag.data.generate.runner import plan
    from jettag.errors import UsageError

    with pytest.raises(UsageError, match=r"^--shard 3 outside 0\.\.1$"):
        plan(get_recipe("top"), 10, tmp_path, shards=[3], num_shards=2)
    with pytest.raises(ValueError, match=r"^unknown detector 'cms'; choose one of \['none', 'simple'\]$"):
        apply_detector("cms", None, np.random.default_rng(0))  # type: ignore[arg-type]


def test_lund_inputs_of_the_wrong_shape_refused() -> None:
    from jettag.data.kinds.lund import LundGraphData

    z = torch.zeros(0)
    with pytest.raises(ValueError, match=r"^node_offsets and edge_offsets must have n_jets \+ 1 entries$"):
        LundGraphData(torch.zeros(3, 5), torch.tensor([0, 3]), torch.zeros(0, 2), torch.tensor([0, 0]),
                      torch.tensor([0, 1]))
    model = create_model("lundnet5", num_classes=2, features="kin")
    with pytest.raises(ValueError, match=r"^LundNet: features must be \(nodes, 5\), got \(4, 3\)$"):
        model.forward_features(torch.zeros(4, 3), z.long(), z.long(), z.long())


def test_attention_capture_needs_eval_mode() -> None:
    from jettag.models.layers import capture_attention

    model = create_model("part", num_classes=2, features="kin", embed_dims=[8], pair_embed_dims=[4],
                         num_heads=1, num_layers=1, num_cls_layers=1)
    with pytest.raises(ValueError, match=r"^capture_attention needs the model in eval mode"), \
            capture_attention(model.train()):
        pass


def test_weaver_interop_refusals(tmp_path) -> None:
    from jettag.models.weaver import WeaverCheckpointError, read_weaver_checkpoint, to_weaver_state_dict

    pattern = r"^weaver interop supports ParticleTransformer and ParticleNet, not PFN$"
    with pytest.raises(TypeError, match=pattern):
        to_weaver_state_dict(create_model("pfn", num_classes=2, features="kin"))
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(WeaverCheckpointError, match=r"list\.pt: expected a state dict of tensors, got list$"):
        read_weaver_checkpoint(path)
