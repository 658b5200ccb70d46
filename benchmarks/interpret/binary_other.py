"""Binary attention split by where the largest weight goes: the query itself or another particle.

Reads DIR/attention.npz of `jettag interpret` and prints, per group, the share of (query, block,
head) entries whose largest weight exceeds 0.5 (0.9) and sits on another particle (the paper's
"attends to at most one other particle") or on the query itself, trained and untrained.

    python benchmarks/interpret/binary_other.py runs/interp_part [more dirs...]
"""

from __future__ import annotations

import sys

import numpy as np


def summary(path: str) -> list[str]:
    a = np.load(f"{path}/attention.npz")
    lines = []
    for g in [k[: -len("_max")] for k in a.files if k.endswith("_max") and not k.startswith("untrained_")]:
        cells = []
        for p in ("", "untrained_"):
            mx, am, qi = a[p + g + "_max"], a[p + g + "_argmax"], a[p + "query_index"]
            other = am != qi[None, None, :]
            cells.append(f"{p or 'trained_'}: >0.5 other {np.mean((mx > 0.5) & other):.3f} self "
                         f"{np.mean((mx > 0.5) & ~other):.3f}, >0.9 other {np.mean((mx > 0.9) & other):.4f} "
                         f"self {np.mean((mx > 0.9) & ~other):.4f}")
        lines.append(f"{path} {g}: " + " | ".join(cells))
    return lines


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(summary(p)))
