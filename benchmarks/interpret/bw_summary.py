"""b/W subjet attention of a `jettag interpret` output with its spread over jets.

Reads DIR/subjets.npz (three-subjet jets with a truth b/W assignment, ``n3_source == 1``) and prints,
per attention group, the mean over jets of (attention mass - uniform value) for b -> W, W -> b and
W -> other W (head and block mean per jet), trained and untrained, with the standard error over
jets, and the paired difference trained - untrained with its standard error.

    python benchmarks/interpret/bw_summary.py runs/interp_part [more dirs...]
"""

from __future__ import annotations

import sys

import numpy as np


def summary(path: str) -> list[str]:
    a = np.load(f"{path}/subjets.npz")
    good = a["n3_source"] == 1
    groups = sorted({k[len("n3_"):-len("_b_to_w")] for k in a.files if k.endswith("_b_to_w")
                     and k.startswith("n3_") and "untrained" not in k and "uniform" not in k})
    lines = [f"{path}: {int(good.sum())} truth-resolved top jets of {len(good)} three-subjet jets"]
    for g in groups:
        for key in ("b_to_w", "w_to_b", "w_to_w"):
            u = a[f"n3_uniform_{key}"][good]
            t = a[f"n3_{g}_{key}"][good].mean(axis=(1, 2)) - u
            n = a[f"n3_untrained_{g}_{key}"][good].mean(axis=(1, 2)) - u
            d = t - n
            se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
            lines.append(f"  {g:8s} {key:7s} uniform {u.mean():.3f}  trained-uniform {t.mean():+.3f} +- "
                         f"{se(t):.3f}"
                         f"  untrained-uniform {n.mean():+.3f} +- {se(n):.3f}"
                         f"  trained-untrained {d.mean():+.3f} +- {se(d):.3f}")
        w = a["n3_" + g + "_within"][a["n3_label"] == a["n3_label"].max()].mean(axis=(1, 2))
        wu = a["n3_untrained_" + g + "_within"][a["n3_label"] == a["n3_label"].max()].mean(axis=(1, 2))
        u = a["n3_uniform"][a["n3_label"] == a["n3_label"].max()]
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
        lines.append(f"  {g:8s} within  uniform {u.mean():.3f}  trained-uniform {(w - u).mean():+.3f} +- "
                     f"{se(w - u):.3f}  untrained-uniform {(wu - u).mean():+.3f} +- {se(wu - u):.3f}")
    return lines


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(summary(p)))
