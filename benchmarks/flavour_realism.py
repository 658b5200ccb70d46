"""Realism at GENERATOR_VERSION 4 (tracks + clusters with EM/hadronic layers): the reference
JetClass ParticleNet models on generated top vs QCD jets at ``--detector simple``.

Reuses ``benchmarks/realism.py`` (weights, prediction, AUC with p_Tbqq / (p_Tbqq + p_QCD)) for the
``top`` recipe only, the acceptance check of issue 12 (kin AUC >= 0.98).

    .venv/bin/python benchmarks/flavour_realism.py --jets-per-class 150 --seed 7 \
        --out benchmarks/flavour_realism.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realism import JETCLASS, aucs, load_model, machine, predict

from jettag.data.generate import GENERATOR_VERSION, cached_dataset
from jettag.data.store import read_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jets-per-class", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/flavour_realism.json")
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.workers))
    path = cached_dataset("top", 2 * args.jets_per_class, seed=args.seed, detector="simple",
                          workers=args.workers, progress=False)
    top = read_store(path)
    out = {"machine": machine(), "generator_version": GENERATOR_VERSION, "sample": str(path),
           "command": " ".join(sys.argv), "top/simple": {}}
    for fs in ("kin", "kinpid", "full"):
        probs = predict(load_model(fs), top, fs)
        out["top/simple"][fs] = aucs(probs, np.asarray(top.label), {"Top": JETCLASS.index("Tbqq")},
                                     ["QCD", "Top"])["Top"]
        print(fs, out["top/simple"][fs], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
