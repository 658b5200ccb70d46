"""The ``event`` / ``event_subjets`` input kinds on a real generated hh4b sample, and an event model
trained, evaluated and predicted through the unchanged commands."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jettag.cli import main
from jettag.data.generate import cached_dataset
from jettag.data.kinds import get_kind
from jettag.data.kinds.event import TEV, double_b_tag
from jettag.data.store import JetDataError, group_events, read_store
from jettag.errors import UsageError
from jettag.models import create_model


@pytest.fixture(scope="module")
def hh4b_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 events per class, one chunk each (the signal at 600 GeV); MPI off keeps it fast
    return cached_dataset("hh4b", 18, seed=11, cache_dir=tmp_path_factory.mktemp("hh4b"), mpi=False,
                          chunk_size=6)


@pytest.fixture(scope="module")
def rows(hh4b_path: Path) -> ak.Array:
    return read_store(hh4b_path)


def test_event_batches_from_a_generated_store(rows: ak.Array) -> None:
    model = create_model("xattn_event", 3)
    data = get_kind("event").build(rows, {"max_len": 50}, model)
    assert len(data) == len(rows) // 2 == 18
    batch = data.batch(np.arange(len(data)))
    assert batch.particles.shape == (18, 2, 50, 4) and batch.tokens.shape == (18, 3, 6)
    assert batch.label.tolist() == ak.to_numpy(rows.label)[::2].tolist()
    n = np.minimum(ak.to_numpy(rows.jet_nparticles), 50).reshape(-1, 2)
    assert batch.mask.sum(-1).numpy().tolist() == n.tolist()
    assert data.sizes().tolist() == n.sum(1).tolist()
    # the sum token is the stored event system (the generator's own sum of the two jets);
    # the store keeps float32, its jets' (pt, eta, phi, m) round trip gives ~1e-4 relative
    tok = batch.tokens.numpy().astype(np.float64)
    lead = rows[::2]
    np.testing.assert_allclose(tok[:, 2, 0] * TEV, ak.to_numpy(lead.event_mass), rtol=2e-3)
    np.testing.assert_allclose(tok[:, 2, 3] * TEV, ak.to_numpy(lead.event_pt), rtol=2e-3, atol=0.5)
    np.testing.assert_allclose(tok[:, 0, 3] * TEV, ak.to_numpy(lead.jet_pt), rtol=1e-6)
    assert (tok[:, 2, 5] == 0).all() and (np.abs(tok[:, :2, 5]) <= np.pi / 2 + 1e-6).all()
    assert model(*batch.inputs()).shape == (18, 3)
    sub = get_kind("event_subjets").build(rows, {}, create_model("mixer_event", 3)).batch(np.arange(4))
    assert sub.subjets.shape[:3] == (4, 2, 10) and sub.mask[:, :, 0].all()
    # subjets hardest first (pT in units of 100 GeV), the hardest below the jet's pT
    pt = sub.subjets[..., 2].numpy()
    assert (np.diff(pt, axis=-1) <= 0).all()
    assert (pt[..., 0] * 100 <= ak.to_numpy(rows.jet_pt)[:8].reshape(4, 2) * (1 + 1e-4)).all()


def test_rows_not_forming_events_and_degenerate_jets(rows: ak.Array) -> None:
    model = create_model("xattn_event", 3)
    kind = get_kind("event")
    with pytest.raises(JetDataError, match="do not form whole events"):
        kind.build(rows[1:], {}, model, source="odd.parquet")
    with pytest.raises(JetDataError, match="do not form whole events"):
        kind.build(rows[np.r_[1, 0, 2:len(rows)]], {}, model, source="swapped.parquet")
    # a jet of one constituent: no principal axis, theta 0, finite inputs
    one = ak.with_field(rows, ak.concatenate([rows.part_px[:1, :1], rows.part_px[1:]]), "part_px")
    for f in ("part_py", "part_pz", "part_energy"):
        one = ak.with_field(one, ak.concatenate([rows[f][:1, :1], rows[f][1:]]), f)
    b = kind.build(one, {}, model).batch(np.arange(2))
    assert b.mask[0, 0].sum() == 1 and b.tokens[0, 0, 5] == 0
    assert all(torch.isfinite(t).all() for t in b.inputs())


def test_double_b_tag(rows: ak.Array) -> None:
    rng = np.random.default_rng(0)
    nb = rng.integers(0, 3, (20000, 2))
    keep = double_b_tag(nb, np.arange(20000), 0.8, seed=0)
    assert not keep[(nb == 0).any(1)].any()
    both = (nb > 0).all(1)
    # 0.8^2 per event, binomial sd on ~8900 events is ~0.005: 4 sd
    assert keep[both].mean() == pytest.approx(0.64, abs=0.02)
    assert (double_b_tag(nb, np.arange(20000), 1.0, seed=0) == both).all()
    model = create_model("xattn_event", 3)
    tagged = get_kind("event").build(rows, {"event_btag": 1.0}, model)
    expect = (ak.to_numpy(rows.jet_nbhadrons).reshape(-1, 2) > 0).all(1)
    assert len(tagged) == expect.sum() and 0 < expect.sum() < 18
    with pytest.raises(UsageError, match=r"event_btag=1\.5"):
        get_kind("event").build(rows, {"event_btag": 1.5}, model)
    with pytest.raises(JetDataError, match="jet_nbhadrons"):
        untagged = rows[[f for f in rows.fields if f != "jet_nbhadrons"]]
        get_kind("event").build(untagged, {"event_btag": 0.8}, model)


def test_event_model_trains_and_scores_through_the_commands(hh4b_path: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "hh4b_mixer_event", f"data.path={hh4b_path}", "data.split=[0.5,0.25,0.25]",
                 "train.epochs=1", "train.batch_size=8", "train.progress=false", "--run-dir", str(run)]) == 0
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(run), str(hh4b_path), "--out", str(out)]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == 18  # one score per event, not per row
    from jettag.data.dataset import load_splits
    from jettag.train.checkpoint import load_run_model

    _, cfg = load_run_model(run)
    splits = load_splits(cfg)[0]
    assert sum(len(v) for v in splits.values()) == 36
    for name, part in splits.items():  # every split holds whole events (the split is by event)
        assert len(group_events(part, name)) == len(part) // 2


def test_interpret_an_event_run(hh4b_path: Path, tmp_path: Path) -> None:
    """``jettag interpret`` on an event model: attention maps per class, Grad-CAM, and integrated
    gradients per constituent and kinematics token that sum to the logit difference (completeness)."""
    run = tmp_path / "run"
    assert main(["train", "hh4b_xattn_event", f"data.path={hh4b_path}", "data.split=[0.5,0.25,0.25]",
                 "model.overrides.dim=20", "train.epochs=1", "train.batch_size=8", "train.progress=false",
                 "--run-dir", str(run)]) == 0
    out = tmp_path / "interp"
    assert main(["interpret", str(run), "--data", str(hh4b_path), "--out", str(out), "--jets", "4",
                 "--ig-steps", "32"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["events"] == sum(e["events"] for e in stats["per_class"].values()) <= 12
    for e in stats["per_class"].values():
        cross = np.array(e["attention"]["cross"])
        assert cross.shape == (3, 3) and np.allclose(cross.sum(-1), 1, atol=1e-5)  # float32 softmax rows
    heads = np.load(out / "attention.npz")
    for c, e in stats["per_class"].items():  # every head kept; the statistics are the head means
        assert heads[f"{c}_cross"].shape == (5, 3, 3)  # the recipe's 5 heads
        assert np.allclose(heads[f"{c}_cross"].mean(0), e["attention"]["cross"], atol=1e-6)
    sal = np.load(out / "saliency.npz")
    total = sal["integrated_gradients_sub"].sum((1, 2)) + sal["integrated_gradients_kin"].sum(1)
    diff = sal["logit"] - sal["baseline_logit"]
    # 32 Gauss-Legendre nodes on a smooth path: the quadrature error is far below 2% of the difference
    assert np.allclose(total, diff, atol=0.02 * max(1.0, np.abs(diff).max()))
    assert stats["saliency"]["completeness_warning"] is None
    assert {"attention.png", "gradcam.png", "saliency.png"} <= set(stats["figures"])
    assert (out / "report.md").read_text().startswith("# jettag interpret: xattn_event (events)")
