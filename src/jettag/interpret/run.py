"""``interpret_run``: attention maps, binary-attention statistics, subjet flows, eta-phi drawings and
saliency of one trained run on a set of jets, written as PNG figures, npz arrays, ``stats.json``
and ``report.md`` (what ``jettag interpret`` does).

Outputs in ``out``:

- ``attention.npz``: per group (``particle``, ``mi``) the per-class mean maps ``{g}_heat``
  (C, L, H, P, P), ``pair_counts`` (C, P, P), and the per-query arrays of the trained model
  (``{g}_max``, ``{g}_entropy`` (L, H, Q), ``query_class``, ``query_jet``, ``query_nreal`` (Q,))
  and the same with the prefix ``untrained_`` for a freshly initialised model of the same
  architecture (seeded);
- ``saliency.npz``: per real token ``grad_x_input``, ``integrated_gradients``, ``jet``, ``label``
  and (particles) ``deta``, ``dphi``, ``pt``, (Lund) ``node``; per jet ``logit``,
  ``baseline_logit``;
- ``subjets.npz`` (attention models, FastJet present): per jet ``within`` (J, L, H), ``uniform``,
  ``label``, and for three-subjet classes ``b_to_w``, ``w_to_b`` with their uniform values;
- ``jets.npz``: the drawn jets' coordinates and maps;
- ``stats.json`` (all statistics, computed from the arrays above) and ``report.md``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from jettag.data.store import JetDataError
from jettag.errors import UsageError
from jettag.interpret import drawing
from jettag.interpret.attention import AttentionSummary, attention_modules, binary_stats, capture_batch
from jettag.interpret.saliency import attributions
from jettag.physics import kinematics as kin

MAP_GROUPS = ("particle", "mi")
GROUP_LABEL = {"particle": "block", "mi": "MI"}


def default_subjets(name: str) -> int:
    """Exclusive subjets of a class: 3 for a top class, 2 otherwise (W, Z, H, QCD)."""
    return 3 if "top" in name.lower() or name.lower() in ("t", "tbqq", "tbl") else 2


def _select(labels: np.ndarray, classes: list[str], wanted: Sequence[str] | None, per_class: int
            ) -> np.ndarray:
    names = list(wanted) if wanted else classes
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise UsageError(f"--classes {', '.join(unknown)}: not classes of the run ({', '.join(classes)})")
    idx = [np.flatnonzero(labels == classes.index(c))[:per_class] for c in names]
    return np.sort(np.concatenate(idx)) if idx else np.zeros(0, np.int64)


def load_jets(run_dir: Path, cfg: dict[str, Any], data: str | None) -> tuple[ak.Array, list[str], str]:
    """The jets to interpret (``data`` or the run's test split), with the run's classes. Fields the
    run's feature set needs are checked by the kind's ``build`` (before anything is written)."""
    from jettag.data.dataset import run_jets

    return run_jets(cfg, run_dir, data)


def particle_coordinates(jets: ak.Array, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Flat (delta eta, delta phi, pT, type) of the first ``lengths[k]`` particles of each jet."""
    keep = ak.local_index(jets["part_px"]) < ak.Array(lengths)[:, None]
    px, py, pz = (ak.to_numpy(ak.flatten(jets[f][keep])).astype(np.float64)
                  for f in ("part_px", "part_py", "part_pz"))
    jet = np.repeat(np.arange(len(jets)), lengths)
    jeta = ak.to_numpy(jets["jet_eta"]).astype(np.float64)[jet]
    jphi = ak.to_numpy(jets["jet_phi"]).astype(np.float64)[jet]
    pid = ak.to_numpy(ak.flatten(jets["part_pid"][keep])) if "part_pid" in jets.fields else np.zeros(len(px))
    charge = (ak.to_numpy(ak.flatten(jets["part_charge"][keep])) if "part_charge" in jets.fields
              else np.zeros(len(px)))
    return {"deta": kin.eta(px, py, pz) - jeta, "dphi": kin.delta_phi(kin.phi(px, py), jphi),
            "pt": kin.pt(px, py), "type": drawing.particle_type(pid, charge), "jet": jet}


def _flows(maps: dict[str, np.ndarray], n_real: np.ndarray, p4: list[np.ndarray], labels: np.ndarray,
           n_sub: list[int], flows: dict[str, Any]) -> None:
    from jettag.interpret import subjets as S

    for n in sorted(set(n_sub[int(lab)] for lab in labels)):
        rows = [k for k in range(len(labels)) if n_sub[int(labels[k])] == n]
        lab, mom = S.exclusive_subjets([p4[k] for k in rows], n)
        for r, k in enumerate(rows):
            if lab[r][0] < 0:
                continue
            m = int(n_real[k])
            rec: dict[str, Any] = {"label": int(labels[k]), "n": n}
            for g, a in maps.items():
                att = a[:, k, :, :m, :m]
                rec[f"{g}_within"], rec["uniform"] = S.subjet_flow(att, lab[r])
                if n == 3:
                    b = S.b_candidate(mom[r])
                    w = np.array([s for s in range(3) if s != b])
                    rec[f"{g}_b_to_w"], rec["uniform_b_to_w"] = S.between(att, lab[r], np.array([b]), w)
                    rec[f"{g}_w_to_b"], rec["uniform_w_to_b"] = S.between(att, lab[r], w, np.array([b]))
            flows.setdefault(n, []).append(rec)


def interpret_run(run_dir: str | Path, out: str | Path, data: str | None = None, jets_per_class: int = 200,
                  classes: Sequence[str] | None = None, threshold: float = 0.5, draw_jets: int = 2,
                  blocks: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                  subjets: int | None = None, ig_steps: int = 32, batch_size: int = 64, seed: int = 0,
                  which: str = "best") -> dict[str, Any]:
    """Everything ``jettag interpret`` writes; returns the statistics (also in ``stats.json``)."""
    from jettag.data.kinds import get_kind
    from jettag.progress import progress
    from jettag.train.checkpoint import build_model_from_config, load_run_model

    run_dir, out = Path(run_dir), Path(out)
    model, cfg = load_run_model(run_dir, which)
    all_jets, class_names, source = load_jets(run_dir, cfg, data)
    labels_all = np.asarray(ak.to_numpy(all_jets["label"]), dtype=np.int64)
    sel = _select(labels_all, class_names, classes, jets_per_class)
    if len(sel) == 0:
        raise JetDataError(f"{source}: no jets of the chosen classes")
    jets = all_jets[sel]
    kind = get_kind(model.input_kind)
    tensors = kind.build(jets, cfg["data"], model, "cpu", source=source)
    groups = {g: v for g, v in attention_modules(model).items() if g in MAP_GROUPS}
    use_subjets = bool(groups) and importlib.util.find_spec("fastjet") is not None
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    untrained = build_model_from_config(cfg) if groups else None
    if untrained is not None:
        calibrate_batchnorm(untrained, tensors, batch_size)
    n_cls = len(class_names)
    max_len = int(cfg["data"].get("max_len", 128))
    summary = AttentionSummary(n_cls, max_len)
    summary_u = AttentionSummary(n_cls, max_len)
    sal: dict[str, list[np.ndarray]] = {k: [] for k in ("grad_x_input", "integrated_gradients", "jet",
                                                         "label", "node", "logit", "baseline_logit")}
    flows: dict[int, list[dict[str, Any]]] = {}
    n_sub = [subjets or default_subjets(c) for c in class_names]
    drawn: dict[int, list[int]] = {c: [] for c in range(n_cls)}
    drawn_maps: dict[str, list[np.ndarray]] = {g: [] for g in groups}
    lengths = np.zeros(len(jets), dtype=np.int64)
    particles = model.input_kind == "particles"
    names = kind.input_names
    starts = list(range(0, len(jets), batch_size))
    bar = progress(total=len(starts), desc="interpret", unit="batch")
    for start in starts:
        index = np.arange(start, min(start + batch_size, len(jets)))
        batch = tensors.batch(index)
        labels = batch.label.numpy()
        inputs = batch.inputs()
        if particles:
            n_real = batch.mask[:, 0].sum(-1).numpy()
        else:
            n_real = batch.num_nodes.numpy()
        lengths[index] = n_real
        if groups:
            _, maps = capture_batch(model, inputs)
            _, maps_u = capture_batch(untrained, inputs)
            maps = {g: maps[g] for g in groups}
            summary.add(maps, n_real, labels)
            summary_u.add({g: maps_u[g] for g in groups}, n_real, labels)
            np_maps = {g: t.numpy() for g, t in maps.items()}
            for k, lab in enumerate(labels):
                if len(drawn[int(lab)]) < draw_jets:
                    drawn[int(lab)].append(int(index[k]))
                    for g, a in np_maps.items():
                        drawn_maps[g].append(np.pad(a[:, k], [(0, 0), (0, 0)] +
                                                    [(0, max_len - a.shape[-1])] * 2))
            if use_subjets:
                vec = batch.vectors.numpy().transpose(0, 2, 1).astype(np.float64)
                p4 = [vec[k, : n_real[k]] for k in range(len(labels))]
                _flows(np_maps, n_real, p4, labels, n_sub, flows)
        res = attributions(model, names, inputs, batch.label, steps=ig_steps)
        if particles:
            real = batch.mask[:, 0].numpy()
            for key in ("grad_x_input", "integrated_gradients"):
                sal[key].append(res[key].numpy()[real])
            sal["jet"].append(np.nonzero(real)[0] + start)
            sal["node"].append(np.nonzero(real)[1])
        else:
            graph = batch.graph.numpy()
            first = np.r_[0, np.cumsum(n_real)[:-1]]
            for key in ("grad_x_input", "integrated_gradients"):
                sal[key].append(res[key].numpy())
            sal["jet"].append(graph + start)
            sal["node"].append(np.arange(len(graph)) - first[graph])
        sal["label"].append(labels[sal["jet"][-1] - start])
        sal["logit"].append(res["logit"].numpy())
        sal["baseline_logit"].append(res["baseline_logit"].numpy())
        bar.update(1)
    bar.close()

    stats: dict[str, Any] = {"run": str(run_dir), "data": source, "classes": class_names,
                             "jets": {c: int((labels_all[sel] == k).sum())
                                      for k, c in enumerate(class_names)},
                             "model": cfg["model"]["name"], "threshold": threshold}
    figures: list[str] = []
    sal_arr = {k: np.concatenate(v) for k, v in sal.items()}
    coords = particle_coordinates(jets, lengths) if particles else None
    if coords is not None:
        for k in ("deta", "dphi", "pt"):
            sal_arr[k] = coords[k]
    np.savez_compressed(out / "saliency.npz", **sal_arr)
    stats["saliency"] = saliency_stats(sal_arr, n_cls)
    n_jets = np.bincount(labels_all[sel], minlength=n_cls)
    shown = [class_names.index(c) for c in (classes or class_names)]
    token = "particle" if particles else "node"
    for key, label in (("grad_x_input", "gradient x input"),
                       ("integrated_gradients", "integrated gradients")):
        path = out / f"saliency_{key}.png"
        title = f"{cfg['model']['name']}: {label} per {token}, target: true class"
        if particles:
            drawing.saliency_figure(path, sal_arr["deta"], sal_arr["dphi"], sal_arr[key], sal_arr["label"],
                                    n_jets, class_names, title)
        else:
            drawing.node_saliency_figure(path, sal_arr["node"], sal_arr[key], sal_arr["label"], class_names,
                                         title)
        figures.append(path.name)

    if not groups:
        stats["attention"] = None
        stats["no_attention_reason"] = (f"model {cfg['model']['name']!r} ({type(model).__name__}) has no "
                                        "attention modules; only saliency is shown")
    else:
        arrays = {f"{g}_heat": h for g, h in summary.heat_maps().items()}
        arrays["pair_counts"] = summary.pair_counts
        arrays.update(summary.arrays(""))
        arrays.update(summary_u.arrays("untrained_"))
        np.savez_compressed(out / "attention.npz", **arrays)
        stats["attention"] = attention_stats(arrays, list(groups), n_cls)
        for g in groups:
            lab = GROUP_LABEL[g]
            for c in shown:
                path = out / f"heat_{g}_{class_names[c]}.png"
                title = f"{cfg['model']['name']} {g} attention, {class_names[c]} ({n_jets[c]} jets)"
                drawing.heat_map_figure(path, arrays[f"{g}_heat"][c], title, lab)
                figures.append(path.name)
            path = out / f"binary_{g}.png"
            drawing.binary_figure(path, arrays[f"{g}_max"], arrays[f"untrained_{g}_max"],
                                  f"{cfg['model']['name']} {g}: largest weight per query")
            figures.append(path.name)
        if coords is not None:
            figures += _draw_jets(out, cfg, class_names, drawn, drawn_maps, coords, lengths, groups, blocks,
                                  heads, threshold)
        if flows:
            stats["subjets"] = _subjet_outputs(out, flows, list(groups), class_names, cfg, figures)
        else:
            stats["subjets"] = None
    stats["figures"] = figures
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "report.md").write_text(report_markdown(stats))
    return stats


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, tensors: Any, batch_size: int) -> None:
    """Give an untrained model the normalisation statistics of the jets it will see: the running mean
    and variance of every BatchNorm become the cumulative averages over ``tensors`` (forward passes
    in train mode, no weights change), then eval mode. Without this the input and pair BatchNorms of
    a fresh model pass the raw features (ln kT of order -10..5) straight into the attention bias."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, len(tensors), batch_size):
        model(*tensors.batch(np.arange(start, min(start + batch_size, len(tensors)))).inputs())
    model.eval()


def _draw_jets(out: Path, cfg: dict[str, Any], class_names: list[str], drawn: dict[int, list[int]],
               drawn_maps: dict[str, list[np.ndarray]], coords: dict[str, np.ndarray], lengths: np.ndarray,
               groups: dict[str, list[str]], blocks: Sequence[int] | None, heads: Sequence[int] | None,
               threshold: float) -> list[str]:
    figures = []
    starts = np.r_[0, np.cumsum(lengths)]
    order = [j for c in range(len(class_names)) for j in drawn[c]]
    saved: dict[str, np.ndarray] = {"jet": np.array(order)}
    for g in groups:
        maps = np.stack(drawn_maps[g]) if drawn_maps[g] else np.zeros((0,))
        saved[f"{g}_maps"] = maps
        lay, nh = maps.shape[1], maps.shape[2]
        blk = [b for b in (blocks if blocks is not None else sorted({0, lay // 2, lay - 1})) if b < lay]
        hd = [h for h in (heads if heads is not None else range(min(nh, 8))) if h < nh]
        for r, j in enumerate(order):
            c = next(k for k, v in drawn.items() if j in v)
            s = slice(starts[j], starts[j + 1])
            path = out / f"jet_{g}_{class_names[c]}_{j}.png"
            title = f"{cfg['model']['name']} {class_names[c]} jet {j}"
            drawing.jet_figure(path, coords["deta"][s], coords["dphi"][s], coords["pt"][s], coords["type"][s],
                               maps[r], blk, hd, threshold, title, GROUP_LABEL[g])
            figures.append(path.name)
    for k in ("deta", "dphi", "pt", "type", "jet"):
        saved[f"particle_{k}"] = coords[k]
    np.savez_compressed(out / "jets.npz", **saved)
    return figures


def saliency_stats(a: dict[str, np.ndarray], n_cls: int) -> dict[str, Any]:
    """Per class mean attribution per jet and the completeness of integrated gradients."""
    n_jets = len(a["logit"])
    ig_sum = np.bincount(a["jet"], weights=a["integrated_gradients"], minlength=n_jets)
    diff = a["logit"] - a["baseline_logit"]
    err = np.abs(ig_sum - diff)
    per_class = {}
    jet_label = np.zeros(n_jets, dtype=np.int64)
    jet_label[a["jet"]] = a["label"]
    for c in range(n_cls):
        sel = a["label"] == c
        nj = max(1, int((jet_label == c).sum()))
        per_class[str(c)] = {
            "mean_grad_x_input_per_jet": float(a["grad_x_input"][sel].sum() / nj),
            "mean_integrated_gradients_per_jet": float(a["integrated_gradients"][sel].sum() / nj)}
    return {"per_class": per_class,
            "completeness_max_abs_error": float(err.max()) if n_jets else 0.0,
            "completeness_mean_abs_diff": float(np.abs(diff).mean()) if n_jets else 0.0}


def attention_stats(arrays: dict[str, np.ndarray], groups: list[str], n_cls: int) -> dict[str, Any]:
    """Binary-attention statistics per group, block and head, for all queries and per class, trained
    and untrained, computed from the per-query arrays."""
    out: dict[str, Any] = {}
    for prefix, name in (("", "trained"), ("untrained_", "untrained")):
        cls = arrays[f"{prefix}query_class"]
        nreal = arrays[f"{prefix}query_nreal"]
        for g in groups:
            mx, ent = arrays[f"{prefix}{g}_max"], arrays[f"{prefix}{g}_entropy"]
            on_self = arrays[f"{prefix}{g}_argmax"] == arrays[f"{prefix}query_index"]
            entry = {"all": binary_stats(mx, ent, nreal, on_self)}
            for c in range(n_cls):
                sel = cls == c
                entry[str(c)] = binary_stats(mx[..., sel], ent[..., sel], nreal[sel], on_self[..., sel])
            out.setdefault(name, {})[g] = entry
    return out


def _subjet_outputs(out: Path, flows: dict[int, list[dict[str, Any]]], groups: list[str],
                    class_names: list[str], cfg: dict[str, Any], figures: list[str]) -> dict[str, Any]:
    arrays: dict[str, np.ndarray] = {}
    stats: dict[str, Any] = {}
    for n, recs in flows.items():
        arrays[f"n{n}_label"] = np.array([r["label"] for r in recs])
        arrays[f"n{n}_uniform"] = np.array([r["uniform"] for r in recs])
        for g in groups:
            arrays[f"n{n}_{g}_within"] = np.stack([r[f"{g}_within"] for r in recs])
            if n == 3:
                for key in ("b_to_w", "w_to_b"):
                    arrays[f"n{n}_{g}_{key}"] = np.stack([r[f"{g}_{key}"] for r in recs])
                    arrays[f"n{n}_uniform_{key}"] = np.array([r[f"uniform_{key}"] for r in recs])
    np.savez_compressed(out / "subjets.npz", **arrays)
    for n in flows:
        lab = arrays[f"n{n}_label"]
        for c in sorted(set(lab.tolist())):
            sel = lab == c
            entry: dict[str, Any] = {"subjets": n, "jets": int(sel.sum()),
                                     "uniform_within": float(arrays[f"n{n}_uniform"][sel].mean())}
            for g in groups:
                entry[f"{g}_within_per_block"] = arrays[f"n{n}_{g}_within"][sel].mean(axis=(0, 2)).tolist()
                if n == 3:
                    for key in ("b_to_w", "w_to_b"):
                        per_block = arrays[f"n{n}_{g}_{key}"][sel].mean(axis=(0, 2))
                        entry[f"{g}_{key}_per_block"] = per_block.tolist()
                        entry[f"uniform_{key}"] = float(arrays[f"n{n}_uniform_{key}"][sel].mean())
            stats[f"{class_names[c]}"] = entry
    for g in groups:
        cls = [c for c in range(len(class_names)) if class_names[c] in stats]
        within = np.array([stats[class_names[c]][f"{g}_within_per_block"] for c in cls])
        uniform = np.array([stats[class_names[c]]["uniform_within"] for c in cls])
        path = out / f"subjets_{g}.png"
        names = [f"{class_names[c]} ({stats[class_names[c]]['subjets']} subjets)" for c in cls]
        drawing.subjet_figure(path, within, uniform, names,
                              f"{cfg['model']['name']} {g}: attention within own kT subjet")
        figures.append(path.name)
    return stats


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def report_markdown(stats: dict[str, Any]) -> str:
    """A short Markdown summary of ``stats``."""
    lines = [f"# jettag interpret: {stats['model']}", "",
             f"Run `{stats['run']}`, data {stats['data']}; jets per class: "
             + ", ".join(f"{c} {n}" for c, n in stats["jets"].items()), ""]
    if stats.get("attention") is None:
        lines += [f"No attention maps: {stats['no_attention_reason']}.", ""]
    else:
        lines += ["## Binary attention (largest weight per query, all blocks and heads pooled)", "",
                  "| group | model | mean max | frac > 0.5 | frac > 0.9 | max on self | mean entropy "
                  "| uniform entropy |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, groups in stats["attention"].items():
            for g, entry in groups.items():
                a = entry["all"]
                keys = ("mean_max", "frac_max_gt_0.5", "frac_max_gt_0.9", "frac_max_on_self", "mean_entropy")
                cells = [np.mean(a[k]) for k in keys]
                lines.append(f"| {g} | {name} | " + " | ".join(_fmt(x) for x in cells)
                             + f" | {_fmt(a['uniform_entropy'])} |")
        lines.append("")
        if stats.get("subjets"):
            lines += ["## Subjets (exclusive kT; attention mass a query puts on its own subjet, block means)",
                      ""]
            for c, e in stats["subjets"].items():
                for key, v in e.items():
                    if key.endswith("_per_block"):
                        lines.append(f"- {c} ({e['subjets']} subjets, {e['jets']} jets) {key}: "
                                     + ", ".join(_fmt(x) for x in v))
                lines.append(f"- {c}: uniform attention would give {_fmt(e['uniform_within'])} within"
                             + (f", b->W {_fmt(e['uniform_b_to_w'])}, W->b {_fmt(e['uniform_w_to_b'])}"
                                if "uniform_b_to_w" in e else ""))
            lines += ["", "The b subjet is a kinematic candidate (the subjet left out of the pair whose mass "
                      "is closest to m_W), not generator truth.", ""]
    s = stats["saliency"]
    lines += ["## Saliency", "",
              f"Integrated gradients completeness: max |sum of attributions - (logit - baseline logit)| = "
              f"{s['completeness_max_abs_error']:.2g} (mean |logit - baseline logit| "
              f"{s['completeness_mean_abs_diff']:.3g}).", "", "Figures: " + ", ".join(stats["figures"]), ""]
    return "\n".join(lines)
