"""Realism check of generated jets: the reference JetClass-trained ParticleNet models applied to them.

The reference weights (``shared/reference/weights/ParticleNet_{kin,kinpid,full}.pt``) were trained on
the real JetClass (MadGraph + Pythia + Delphes). If our Pythia jets and feature definitions are
realistic, those models separate our classes about as well as they separate JetClass's. For each
feature set and detector level this reports the AUC of each signal class against QCD with the
JetClass score p_X / (p_X + p_QCD), plus top vs QCD in the TopLandscape window ([550, 650] GeV)
with the ``top`` recipe (expected ~0.99 for the kin model).

    .venv/bin/python benchmarks/realism.py --jets-per-class 200 --workers 2 --out benchmarks/realism.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from jettag.data.features import FEATURE_SETS, build_inputs
from jettag.data.generate import cached_dataset
from jettag.data.store import read_store

JETCLASS = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]
_SHARED = Path(__file__).resolve().parents[2] / "shared"  # the project's shared/ beside the checkout
WEIGHTS = Path(os.environ.get("JETTAG_REFERENCE", _SHARED / "reference")) / "weights"


def load_model(feature_set: str) -> torch.nn.Module:
    """weaver-core's ParticleNet with the reference configuration and weights (no pickle)."""
    from weaver.nn.model.ParticleNet import ParticleNet

    model = ParticleNet(
        input_dims=len(FEATURE_SETS[feature_set]),
        num_classes=10,
        conv_params=[(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
        fc_params=[(256, 0.1)],
        use_fusion=False,
        use_fts_bn=True,
        use_counts=True,
    )
    state = torch.load(WEIGHTS / f"ParticleNet_{feature_set}.pt", map_location="cpu", weights_only=True)
    state = {k.removeprefix("mod."): v for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, jets, feature_set: str, batch: int = 128) -> np.ndarray:
    """Softmax outputs; jets are batched by multiplicity and each batch is cut to its longest jet.

    weaver's ParticleNet masks padded particles (they are shifted out of every kNN neighbourhood and
    excluded from the pooling), so cutting padding changes no output, only the cost, which grows
    with the padded length.
    """
    inputs = build_inputs(jets, feature_set)
    n = inputs["mask"][:, 0].sum(axis=1)
    order = np.argsort(n, kind="stable")
    probs = np.zeros((len(n), 10), dtype=np.float32)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        length = int(n[idx].max())
        pts, fts, mask = (
            torch.from_numpy(inputs[k][idx, :, :length]) for k in ("points", "features", "mask")
        )
        probs[idx] = torch.softmax(model(pts, fts, mask.float()), dim=1).numpy()
    return probs


def aucs(probs: np.ndarray, labels: np.ndarray, signal_index: dict[str, int], classes: list[str]) -> dict:
    """AUC of each signal class vs QCD with score p_X / (p_X + p_QCD) (JetClass's convention)."""
    out = {}
    qcd = labels == classes.index("QCD")
    for name, k in signal_index.items():
        sig = labels == classes.index(name)
        sel = sig | qcd
        score = probs[sel, k] / (probs[sel, k] + probs[sel, 0] + 1e-12)
        out[name] = {
            "auc": float(roc_auc_score(sig[sel], score)),
            "n_sig": int(sig.sum()),
            "n_qcd": int(qcd.sum()),
            "mean_p_signal": float(probs[sig, k].mean()),
        }
    return out


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "0")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(int(mem) / 1e6, 1),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jets-per-class", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/realism.md")
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.workers))
    models = {fs: load_model(fs) for fs in ("kin", "kinpid", "full")}
    results: dict = {"machine": machine(), "jetclass": {}, "top": {}}
    for detector in ("none", "simple"):
        path = cached_dataset(
            "jetclass",
            10 * args.jets_per_class,
            seed=args.seed,
            detector=detector,
            workers=args.workers,
            progress=True,
        )
        jets = read_store(path)
        labels = np.asarray(jets.label)
        for fs, model in models.items():
            probs = predict(model, jets, fs)
            results["jetclass"][f"{detector}/{fs}"] = aucs(
                probs, labels, {c: i for i, c in enumerate(JETCLASS) if c != "QCD"}, JETCLASS
            )
        path = cached_dataset(
            "top",
            2 * args.jets_per_class,
            seed=args.seed,
            detector=detector,
            workers=args.workers,
            progress=True,
        )
        top = read_store(path)
        for fs, model in models.items():
            probs = predict(model, top, fs)
            results["top"][f"{detector}/{fs}"] = aucs(
                probs, np.asarray(top.label), {"Top": JETCLASS.index("Tbqq")}, ["QCD", "Top"]
            )
        print(
            json.dumps({k: v for k, v in results["jetclass"].items() if k.startswith(detector)}, indent=0)[
                :2000
            ]
        )
    write_markdown(results, args)


def write_markdown(results: dict, args: argparse.Namespace) -> None:
    m = results["machine"]
    lines = [
        "# Realism of generated jets: reference JetClass ParticleNet on our Pythia 8 jets",
        "",
        f"Command: `.venv/bin/python benchmarks/realism.py --jets-per-class {args.jets_per_class} "
        f"--workers {args.workers} --seed {args.seed} --out {args.out}`",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM; {m['date_utc']}; "
        f"load: `{m['uptime']}`",
        "",
        "Score p_X / (p_X + p_QCD); AUC of each class against the QCD jets of the same sample. "
        "`none` = particle level (d0err/dzerr nominal), `simple` = the parametrised detector.",
        "",
        "## jetclass recipe (pT 500-1000 GeV, |eta| < 2)",
        "",
        "| class | " + " | ".join(results["jetclass"]) + " |",
        "|---|" + "---|" * len(results["jetclass"]),
    ]
    for c in JETCLASS[1:]:
        row = [f"{results['jetclass'][k][c]['auc']:.3f}" for k in results["jetclass"]]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## top recipe (TopLandscape window, pT 550-650 GeV): Top vs QCD dijets, score Tbqq",
        "",
        "| detector/features | AUC | n top | n QCD | mean p_Tbqq of tops |",
        "|---|---|---|---|---|",
    ]
    for k, v in results["top"].items():
        t = v["Top"]
        lines.append(f"| {k} | {t['auc']:.3f} | {t['n_sig']} | {t['n_qcd']} | {t['mean_p_signal']:.2f} |")
    lines += ["", "Raw numbers:", "", "```json", json.dumps(results, indent=1), "```", ""]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
