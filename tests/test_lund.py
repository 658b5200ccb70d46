"""Lund trees, the ``lund`` input kind, LundNet-3/5 and the seed 003 recipes.

The trees are checked against an independent recursive declustering written here on FastJet's own
C/A clustering (per jet through the SWIG PseudoJet interface, walking ``has_parents`` as the
reference ``JetTree`` does), on random jets, hand-made edge cases and a small Pythia top500 sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

pytest.importorskip("fastjet")

from jettag.cli import main
from jettag.data.kinds import get_kind
from jettag.data.kinds import lund as lund_kind
from jettag.data.store import JetDataError, make_jets, read_store, write_store
from jettag.models import create_model
from jettag.physics import kinematics as kin
from jettag.physics.lund import lund_graphs, lund_trees

MOMENTA = ("part_px", "part_py", "part_pz", "part_energy")
CUTS = [(None, None), (0.0, None), (None, -3.0), (-1.0, -4.0)]


# ---------------------------------------------------------------------------------------------
# the independent reference: recursive declustering of FastJet's C/A history, one jet at a time
def reference_tree(px, py, pz, e, ln_kt_min=None, ln_delta_min=None) -> tuple[np.ndarray, list]:
    """(features (k, 5) float64, [(parent, child)]) in preorder (harder branch first)."""
    import fastjet

    jet_def = fastjet.JetDefinition(fastjet.cambridge_algorithm, 1000.0)
    particles = [fastjet.PseudoJet(*map(float, p4)) for p4 in zip(px, py, pz, e)]
    seq = fastjet.ClusterSequence(particles, jet_def)
    (jet,) = seq.inclusive_jets()
    nodes: list[list[float]] = []
    edges: list[tuple[int, int]] = []

    def log(x: float) -> float:
        return math.log(max(x, 1e-30))

    def walk(pj, parent: int) -> None:
        while True:
            j1, j2 = fastjet.PseudoJet(), fastjet.PseudoJet()
            if not pj.has_parents(j1, j2):
                return
            if j2.pt() > j1.pt():
                j1, j2 = j2, j1
            dy = j2.rap() - j1.rap()
            dphi = (j2.phi() - j1.phi() + math.pi) % (2 * math.pi) - math.pi
            delta = math.hypot(dy, dphi)
            if ln_delta_min is not None and log(delta) < ln_delta_min:
                return
            if ln_kt_min is None or log(j2.pt() * delta) >= ln_kt_min:
                break
            pj = j1  # below the kt cut: follow the harder branch
        if dphi != 0:
            psi = math.atan(dy / dphi)
        else:
            psi = math.copysign(math.pi / 2, dy) if dy != 0 else 0.0
        me = len(nodes)
        nodes.append([log(j2.pt() * delta), log(delta), log(j2.pt() / (j1.pt() + j2.pt())),
                      0.5 * math.log(max(abs((j1 + j2).m2()), 1e-60)), psi])
        if parent >= 0:
            edges.append((parent, me))
        walk(j1, me)
        walk(j2, me)

    walk(jet, -1)
    return np.array(nodes, dtype=np.float64).reshape(-1, 5), edges


def assert_same_tree(features: np.ndarray, edges: np.ndarray, ref_features: np.ndarray, ref_edges: list,
                     what: str) -> None:
    """Same node features (float32 rounding) and the same edges up to the numbering of the nodes."""
    assert features.dtype == np.float32 and features.shape == ref_features.shape, what
    # match every reference node to the node with the nearest features (continuous values: unique)
    dist = np.abs(features[None, :, :].astype(np.float64) - ref_features[:, None, :]).max(axis=2)
    mapping = dist.argmin(axis=1) if len(ref_features) else np.zeros(0, np.int64)
    assert len(set(mapping.tolist())) == len(mapping), f"{what}: nodes do not match one to one"
    # float32 storage: one float32 ulp relative (2^-23); atol 1e-9 for values near 0 (psi), where the
    # two float64 computations (wrapped phi difference vs atan2 of cross and dot) differ by ~1e-12
    np.testing.assert_allclose(features[mapping], ref_features, rtol=2.0**-23, atol=1e-9, err_msg=what)
    mapped = sorted((int(mapping[a]), int(mapping[b])) for a, b in ref_edges)
    assert sorted(map(tuple, edges.tolist())) == mapped, f"{what}: edges differ"


def check_against_reference(jets: ak.Array, ln_kt_min=None, ln_delta_min=None) -> int:
    trees = lund_trees(jets, ln_kt_min, ln_delta_min)
    for k in range(len(jets)):
        cols = [ak.to_numpy(jets[k][f]) for f in MOMENTA]
        ref_features, ref_edges = reference_tree(*cols, ln_kt_min, ln_delta_min)
        features = ak.to_numpy(trees.features[k]).reshape(-1, 5)
        edges = ak.to_numpy(trees.edges[k]).reshape(-1, 2)
        what = f"jet {k}, cuts {ln_kt_min}, {ln_delta_min}"
        assert_same_tree(features, edges, ref_features, ref_edges, what)
    return int(ak.sum(ak.num(trees.features)))


def small_jets() -> ak.Array:
    """Jets of 1, 2 and 3 particles, a jet whose two branches tie exactly in pT (mirror images in
    phi), and one straddling phi = pi."""
    base = random_jets(3, seed=11, min_len=8, max_len=8)
    px, py, pz, e = (ak.to_list(base[f]) for f in MOMENTA)
    jets_px, jets_py, jets_pz, jets_e = [], [], [], []
    for n in (1, 2, 3):
        jets_px.append(px[0][:n])
        jets_py.append(py[0][:n])
        jets_pz.append(pz[0][:n])
        jets_e.append(e[0][:n])
    # tie: particles a1, a2 and their mirror images b1, b2 (py -> -py), so the branches a = a1 + a2 and
    # b = b1 + b2 have bit-identical pT
    a = np.array([[300.0, 30.0, 100.0], [100.0, 25.0, 40.0]])
    tie = np.concatenate([a, a * [1, -1, 1]])
    jets_px.append(list(tie[:, 0]))
    jets_py.append(list(tie[:, 1]))
    jets_pz.append(list(tie[:, 2]))
    jets_e.append(list(np.sqrt((tie**2).sum(axis=1) + 0.14**2)))
    # phi wrap: particles around phi = pi
    pt = np.array([200.0, 120.0, 60.0, 20.0, 5.0])
    phi = np.pi + np.array([-0.05, 0.04, -0.2, 0.15, 0.01])
    wx, wy, wz, we = kin.from_pt_eta_phi_m(pt, np.array([0.1, 0.0, 0.2, -0.1, 0.05]), phi, np.full(5, 0.14))
    for lst, v in ((jets_px, wx), (jets_py, wy), (jets_pz, wz), (jets_e, we)):
        lst.append(list(v))
    return make_jets(ak.Array(jets_px), ak.Array(jets_py), ak.Array(jets_pz), ak.Array(jets_e),
                     label=np.zeros(len(jets_px), np.int32))


@pytest.fixture(scope="module")
def top500(tmp_path_factory: pytest.TempPathFactory) -> ak.Array:
    pytest.importorskip("pythia8mc")
    from jettag.data.generate import cached_dataset

    return read_store(cached_dataset("top500", 40, seed=3, cache_dir=tmp_path_factory.mktemp("lundgen")))


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ln_kt_min", "ln_delta_min"), CUTS)
def test_trees_match_recursive_declustering_on_random_and_edge_case_jets(ln_kt_min, ln_delta_min) -> None:
    jets = ak.concatenate([small_jets(), random_jets(60, seed=4, min_len=1, max_len=50)])
    n_nodes = check_against_reference(jets, ln_kt_min, ln_delta_min)
    assert n_nodes > 100  # the cuts keep a real tree to compare


def test_trees_match_recursive_declustering_on_pythia_top_and_qcd_jets(top500) -> None:
    labels = ak.to_numpy(top500.label)
    assert set(labels.tolist()) == {0, 1}  # QCD and top jets
    for cuts in CUTS:
        check_against_reference(top500, *cuts)


def test_small_jets_tie_and_wrap() -> None:
    assert len(lund_trees(small_jets()[:0])) == 0  # no jets: no trees
    trees = lund_trees(small_jets())
    assert ak.num(trees.features).tolist() == [0, 1, 2, 3, 4]
    assert ak.num(trees.edges).tolist() == [0, 0, 1, 2, 3]
    assert ak.to_list(trees.edges[2]) == [[0, 1]]  # root first, parents before children
    tie_root = ak.to_numpy(trees.features[3][0])
    assert tie_root[2] == np.float32(np.log(0.5))  # z of two branches with equal pT
    # wrap: every Delta is a small angle, not ~2 pi
    assert ak.to_numpy(trees.features[4][:, 1]).max() < np.log(0.5)


def test_pt_tie_under_the_kt_cut_follows_fastjets_first_parent() -> None:
    """Branches A = a1 + a2 and B = b1 + b2 with bit-identical pT (same px, py; other rapidities). The
    root fails the kt cut (A and B are nearly back-to-back in phi inside, so their pT is small) while
    A's and B's declusterings pass it: which branch the walk follows is decided by the tie, and it
    shows in the sign of psi of the one node kept."""
    pt, phi = np.array([100.0, 80.0, 100.0, 80.0]), np.array([-1.5, 1.5, -1.5, 1.5])
    y = np.array([2.1, 1.9, -2.1, -1.85])  # A merges before B (Delta 3.007 < 3.010)
    px, py, pz, e = kin.from_pt_y_phi_m(pt, y, phi, np.zeros(4))
    px[2:], py[2:] = px[:2], py[:2]  # bit-identical transverse momenta, so pT(A) == pT(B)
    jets = make_jets(ak.Array([px]), ak.Array([py]), ak.Array([pz]), ak.Array([e]), label=np.zeros(1))
    check_against_reference(jets)
    check_against_reference(jets, ln_kt_min=math.log(150.0))
    full = ak.to_numpy(lund_trees(jets).features[0])
    assert full[0, 0] < math.log(150.0) < full[1:, 0].min()  # the root fails the cut, A and B pass
    (kept,) = ak.to_numpy(lund_trees(jets, ln_kt_min=math.log(150.0)).features[0])
    # FastJet's first parent of the root is A (created first): psi = atan(-0.2 / 3) (B's is positive);
    # 1e-6: rapidities and azimuths of float32 momenta
    assert kept[4] == pytest.approx(math.atan(-0.2 / 3.0), abs=1e-6)


def test_delta_cut_ends_the_branch_even_above_a_wider_declustering() -> None:
    """C/A is not angular-ordered here: p1 (y 0) and p2 (y 1) merge first (Delta 1), then p3 joins
    their axis at (0.5, 0) from phi 0.9 (Delta 0.9 < 1). A Delta cut at 0.95 stops the walk at the
    root, so the wider declustering below it is not a node either."""
    px, py, pz, e = kin.from_pt_y_phi_m(np.array([100.0, 100.0, 10.0]), np.array([0.0, 1.0, 0.5]),
                                        np.array([0.0, 0.0, 0.9]), np.zeros(3))
    jets = make_jets(ak.Array([px]), ak.Array([py]), ak.Array([pz]), ak.Array([e]), label=np.zeros(1))
    cut = math.log(0.95)
    full = ak.to_numpy(lund_trees(jets).features[0])
    assert full[0, 1] < cut < full[1, 1]  # root Delta 0.9, its child's 1.0
    assert check_against_reference(jets, ln_delta_min=cut) == 0


def test_features_are_the_documented_quantities_for_two_particles() -> None:
    # two massless particles at (y, phi) = (0, 0) and (0.3, 0.4) with pT 100 and 20
    px, py, pz, e = kin.from_pt_eta_phi_m(np.array([100.0, 20.0]), np.array([0.0, 0.3]),
                                          np.array([0.0, 0.4]), np.zeros(2))
    jets = make_jets(ak.Array([px]), ak.Array([py]), ak.Array([pz]), ak.Array([e]), label=np.zeros(1))
    (features,) = ak.to_numpy(lund_trees(jets).features[0])
    vx, vy, vz, ve = (float(np.float32(v).astype(np.float64).sum()) for v in (px, py, pz, e))
    mass = math.sqrt(ve**2 - vx**2 - vy**2 - vz**2)
    expected = [math.log(20 * 0.5), math.log(0.5), math.log(20 / 120), math.log(mass), math.atan(0.3 / 0.4)]
    # inputs stored as float32: ~1e-7 relative on pT and angles, amplified in ln m by E^2 - p^2
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_bad_input_gets_the_store_error(tmp_path: Path) -> None:
    jets = random_jets(5, seed=1, max_len=10)
    cols = {f: ak.to_list(jets[f]) for f in MOMENTA}
    for f in MOMENTA:
        cols[f][3] = []
    empty = make_jets(*(ak.Array(cols[f]) for f in MOMENTA), label=np.zeros(5, np.int32))
    with pytest.raises(JetDataError, match=r"f\.parquet: 1 jet\(s\) have no constituents, first at row 3"):
        lund_trees(empty, source="f.parquet")
    py = ak.to_list(jets.part_py)
    py[2][1] = float("nan")
    bad = ak.with_field(jets, ak.Array(py), "part_py")
    with pytest.raises(JetDataError, match=r"f\.parquet: field 'part_py' has NaN/inf values in 1 jet\(s\), "
                                           r"first at row 2"):
        lund_trees(bad, source="f.parquet")
    beam = make_jets(ak.Array([[100.0, 0.0]]), ak.Array([[0.0, 0.0]]), ak.Array([[10.0, 30.0]]),
                     ak.Array([[float(np.hypot(100.0, 10.0)), 30.0]]), label=np.zeros(1))
    with pytest.raises(JetDataError, match=r"f\.parquet: fields 'part_px', 'part_py': 1 jet\(s\) have a "
                                           r"constituent with pT = 0 \(along the beam\), first at row 0"):
        lund_trees(beam, source="f.parquet")
    for broken, row in ((bad, 2), (empty, 3)):  # the kind checks the jets before building anything
        with pytest.raises(JetDataError, match=f"f\\.parquet: .* row {row}"):
            get_kind("lund").build(broken, {"path": str(tmp_path)}, create_model("lundnet5"),
                                   source="f.parquet")
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.lund"))


# ---------------------------------------------------------------------------------------------
def test_parameter_counts() -> None:
    for name, dim, expected in (("lundnet3", 3, 391_528), ("lundnet5", 5, 391_724)):
        model = create_model(name, num_classes=2)
        assert model.input_dim == dim
        assert sum(p.numel() for p in model.parameters()) == expected


@pytest.fixture(scope="module")
def graph_data(tmp_path_factory: pytest.TempPathFactory):
    """Jets (the small edge cases first, then random ones), their ``lund`` dataset for LundNet-5, and
    a store path next to which the graphs are cached."""
    jets = ak.concatenate([small_jets(), random_jets(40, seed=2, min_len=1, max_len=30)])
    path = write_store(tmp_path_factory.mktemp("lundgraphs") / "jets.parquet", jets, ["QCD", "Top"], "random")
    data = get_kind("lund").build(jets, {"path": str(path)}, create_model("lundnet5"))
    return jets, data, path


def test_gradients_reach_every_parameter(graph_data) -> None:
    torch.manual_seed(0)
    jets, _, path = graph_data
    model = create_model("lundnet3").train()
    data = get_kind("lund").build(jets, {"path": str(path)}, model)
    assert data.features.shape[1] == 3
    batch = data.batch(np.arange(len(data)))
    loss = torch.nn.functional.cross_entropy(model(*batch.inputs()), batch.label)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def _eval_model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("lundnet5")
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference_forward(model, features, edges, graph, num_nodes) -> torch.Tensor:
    """LundNet in eval mode written out per node and per edge, as the reference's DGL code reads."""
    def bn(m, x):
        return (x - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    src, dst = edges.tolist()
    x = bn(model.bn_fts, features)
    outputs = []
    for block in model.edge_convs:
        new = []
        for i in range(x.shape[0]):
            msgs = []
            for s_, d_ in zip(src, dst):
                if d_ == i:
                    e = torch.relu(bn(block.bns[0], block.theta(x[d_] - x[s_]) + block.phi(x[s_])))
                    msgs.append(torch.relu(bn(block.bns[1], block.fcs[0](e))))
            agg = torch.stack(msgs).mean(0) if msgs else torch.zeros(block.bns[1].num_features)
            sc = x[i] if block.sc is None else bn(block.sc_bn, block.sc(x[i]))
            new.append(torch.relu(agg + sc))
        x = torch.stack(new)
        outputs.append(x)
    lin, _, norm = model.fusion_block
    x = bn(norm, torch.relu(lin(torch.cat(outputs, dim=1))))
    pooled = torch.stack([x[graph == b].mean(0) if int(num_nodes[b]) else torch.zeros(x.shape[1])
                          for b in range(len(num_nodes))])
    return model.fc(pooled)


def test_forward_matches_the_per_node_reference(graph_data) -> None:
    _, data, _ = graph_data
    model = _eval_model(2)
    batch = data.batch(np.arange(6))  # the small jets (0 to 4 nodes) and a random one
    with torch.no_grad():
        # float32, other summation order: a few ulp of O(1) values
        torch.testing.assert_close(model(*batch.inputs()), reference_forward(model, *batch.inputs()),
                                   rtol=1e-5, atol=1e-5)


def test_output_invariant_to_node_numbering(graph_data) -> None:
    _, data, _ = graph_data
    model = _eval_model()
    batch = data.batch(np.arange(len(data)))
    perm = torch.randperm(batch.features.shape[0], generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    edge_perm = torch.randperm(batch.edges.shape[1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(*batch.inputs())
        out = model(batch.features[perm], inv[batch.edges][:, edge_perm], batch.graph[perm], batch.num_nodes)
    # float32 sums in another order: a few ulp of the O(1) logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref[0], ref[5])  # graphs do differ


def test_batch_equals_each_graph_alone(graph_data) -> None:
    _, data, _ = graph_data
    model = _eval_model(1)
    with torch.no_grad():
        together = model(*data.batch(np.arange(len(data))).inputs())
        alone = torch.cat([model(*data.batch(np.array([k])).inputs()) for k in range(len(data))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)  # float32, other summation order
    # the one-particle jet is an empty graph: its output is the classifier's output for zeros
    assert data.sizes()[0] == 0
    with torch.no_grad():
        torch.testing.assert_close(together[0], model.fc(torch.zeros(1, 384))[0])


def test_empty_graphs_in_training_mode() -> None:
    model = create_model("lundnet5").train()
    empty = (torch.zeros(0, 5), torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
             torch.zeros(3, dtype=torch.int64))
    assert model(*empty).shape == (3, 2)
    one = (torch.randn(1, 5), torch.zeros(2, 0, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
           torch.tensor([0, 1]))
    assert torch.isfinite(model(*one)).all()


def test_batch_holds_the_trees_with_offsets(graph_data) -> None:
    jets, data, _ = graph_data
    graphs = lund_graphs(jets)
    index = np.array([7, 0, 3, 12, 4])
    batch = data.batch(index)
    nodes = graphs.num_nodes[index]
    assert batch.num_nodes.tolist() == nodes.tolist()
    assert batch.graph.tolist() == np.repeat(np.arange(len(index)), nodes).tolist()
    expected_edges = []
    first = np.concatenate([[0], np.cumsum(nodes)])
    for pos, k in enumerate(index):
        rows = slice(graphs.node_offsets[k], graphs.node_offsets[k + 1])
        got_features = batch.features[first[pos] : first[pos + 1]].numpy()
        np.testing.assert_array_equal(got_features, graphs.features[rows])
        local = graphs.edges[graphs.edge_offsets[k]:graphs.edge_offsets[k + 1]]
        expected_edges += [(a + first[pos], b + first[pos]) for a, b in local.tolist()]
    got = sorted(map(tuple, batch.edges.T.tolist()))
    assert got == sorted(expected_edges + [(b, a) for a, b in expected_edges])  # both directions
    assert batch.label.tolist() == ak.to_numpy(jets.label)[index].tolist()


def test_graphs_are_cached_beside_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jets = random_jets(30, seed=8, max_len=20)
    store_path = write_store(tmp_path / "jets.parquet", jets, ["QCD", "Top"], "random")
    model = create_model("lundnet3")
    kind = get_kind("lund")
    first = kind.build(jets, {"path": str(store_path)}, model)
    files = list((tmp_path / "jets.parquet.lund").glob("lund-*.npz"))
    assert len(files) == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the Lund graphs were built again")

    monkeypatch.setattr(lund_kind, "lund_graphs", no_rebuild)
    again = kind.build(read_store(store_path), {"path": str(store_path)}, model)
    assert torch.equal(again.features, first.features) and torch.equal(again.edges, first.edges)
    # other cuts are another key
    monkeypatch.undo()
    kind.build(jets, {"path": str(store_path)}, create_model("lundnet3", ln_kt_min=0.0))
    assert len(list((tmp_path / "jets.parquet.lund").glob("lund-*.npz"))) == 2


# ---------------------------------------------------------------------------------------------
def test_recipe_schedule_steps_at_epochs_10_and_20() -> None:
    from jettag.train.config import load_recipe
    from jettag.train.schedule import ScheduleSpec, lr_factor

    for name, model in (("top500_lundnet5", "lundnet5"), ("top500_lundnet3", "lundnet3")):
        cfg = load_recipe(name)
        t = cfg["train"]
        assert cfg["model"]["name"] == model
        assert (t["optimizer"], t["lr"], t["batch_size"], t["epochs"]) == ("adam", 1e-3, 256, 30)
        steps_per_epoch = 7
        factor = lr_factor(ScheduleSpec(**t["schedule"]), t["epochs"] * steps_per_epoch)
        per_epoch = [factor(e * steps_per_epoch + s) for e in range(30) for s in (0, steps_per_epoch - 1)]
        expected = [1.0] * 20 + [0.1] * 20 + [0.01] * 20
        np.testing.assert_allclose(per_epoch, expected, rtol=1e-12)  # powers of 0.1 in float64


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lundtrain")
    data = write_store(root / "jets.parquet", random_jets(160, seed=5, max_len=24), ["QCD", "Top"], "random")
    run = root / "run"
    args = ["train", "top500_lundnet5", f"data.path={data}", "epochs=1", "batch_size=32", "progress=false",
            "--run-dir", str(run)]
    assert main(args) == 0
    return run, data


def test_trains_evaluates_and_exports(trained, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from jettag.models.onnx import run_onnx
    from jettag.train.checkpoint import load_run_model

    run, _ = trained
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "report")]) == 0
    path = tmp_path / "lund.onnx"
    assert main(["export", str(run), "--onnx", str(path)]) == 0
    model, _ = load_run_model(run)
    x = get_kind("lund").example_inputs(model.eval(), batch_size=4, length=17, seed=3)
    with torch.no_grad():
        expected = torch.softmax(model(*x), dim=1).numpy()
    np.testing.assert_allclose(run_onnx(path, *x), expected, rtol=1e-5, atol=1e-6)  # ORT vs torch float32


def test_fine_tuning_with_frozen_backbone(trained, tmp_path: Path) -> None:
    from jettag.train.checkpoint import load_run_model

    run, data = trained
    tuned = tmp_path / "tuned"
    args = ["train", "top500_lundnet5", f"data.path={data}", "epochs=1", "batch_size=32", "progress=false",
            f"train.init_from={run}", "train.freeze_backbone=true", "--run-dir", str(tuned)]
    assert main(args) == 0
    source, _ = load_run_model(run)
    target, _ = load_run_model(tuned)
    src, tgt = source.state_dict(), target.state_dict()
    # frozen = the EdgeConv blocks; the dense head (fusion block, FC 256, output) is retrained
    dense = ("fusion_block.", "fc.")
    for name, value in tgt.items():
        if name.startswith(dense):
            if value.is_floating_point():
                assert not torch.equal(value, src[name]), name  # retrained (the output layer anew)
        else:
            assert torch.equal(value, src[name]), name  # weights and BN statistics from init_from, frozen


def test_seed003_recipes_share_the_jet_definition(top500) -> None:
    from jettag.data.generate.recipes import get_recipe

    for name, pt_min in (("top500", 500.0), ("top2tev", 2000.0), ("wtag", 500.0)):
        r = get_recipe(name)
        window = (r.radius, r.abs_eta_max, r.use_rapidity, r.pt_min, r.pt_max)
        assert window == (0.8, 2.5, True, pt_min, math.inf), name
    assert get_recipe("top500").class_names == ["QCD", "Top"]
    pz = ak.to_numpy(ak.sum(ak.values_astype(top500.part_pz, np.float64), axis=1))
    y = kin.rapidity(pz, ak.to_numpy(top500.jet_energy).astype(np.float64))
    assert np.abs(y).max() < 2.5 and ak.to_numpy(top500.jet_pt).min() >= 500 - 1e-3
