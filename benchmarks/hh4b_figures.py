"""Attention maps and Grad-CAM of trained hh4b event runs (seed 002), per class, as PNG files.

    python benchmarks/hh4b_figures.py RUN_DIR [RUN_DIR ...] --out benchmarks/hh4b_figures

For each run: its test events (rebuilt from ``config.yaml``), the mean attention matrices per class
(``jettag.interpret.event.attention_maps``) and Grad-CAM of the H_hh4b logit per class
(``grad_cam``), written as ``<run>_attention.png`` and ``<run>_gradcam.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from jettag.data.dataset import load_splits
    from jettag.data.kinds import get_kind
    from jettag.interpret.event import attention_maps, event_figures, grad_cam
    from jettag.train.checkpoint import load_run_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in map(Path, args.runs):
        model, cfg = load_run_model(run)
        model.eval()
        test = load_splits(cfg, ("test",))[0]["test"]
        data = get_kind(model.input_kind).build(test, cfg["data"], model, "cpu", source=str(run))
        classes = list(cfg["classes"])
        maps = attention_maps(model, data, classes)
        target = classes.index("H_hh4b")
        cams = {}
        for c, name in enumerate(classes):
            idx = np.flatnonzero(data.labels.numpy() == c)
            if len(idx):
                cams[name] = grad_cam(model, data.batch(idx), target)
        for key, fig in event_figures(maps, cams).items():
            path = out / f"{run.name}_{key}.png"
            fig.savefig(path, dpi=90)
            print(path)


if __name__ == "__main__":
    main()
