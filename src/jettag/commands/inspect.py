"""``jettag inspect``: what is in a dataset, for any supported layout.

A first look at a downloaded or generated sample answers most "why does training not work"
questions before any training: wrong classes or class balance, a pT window that is not the one
expected, empty or truncated jets. The statistics are streamed chunk by chunk through the same
readers training uses, so what is shown is what the model would see; only four numbers per jet
are kept (for exact quantiles).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from jettag.commands.convert import add_qg_convention

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
STAT_FIELDS = ("jet_pt", "jet_eta", "jet_mass", "jet_nparticles")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show format, classes, jet counts and kinematic statistics of datasets",
        description=(
            "For each PATH (a file, a directory or a glob: one dataset), print its format(s), class "
            "counts, number of jets, and statistics (mean, std, min, quantiles, max) of jet pT, eta, "
            "mass and constituent multiplicity."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="dataset files, directories or globs")
    p.add_argument(
        "--json", action="store_true", help="print a JSON list (one object per PATH) instead of text"
    )
    p.add_argument("--chunk-size", type=int, default=100_000, metavar="N", help="jets read at once")
    p.add_argument("--max-jets", type=int, default=None, metavar="N", help="look at the first N jets only")
    p.add_argument(
        "--drop-invalid",
        action="store_true",
        help="skip (and count) jets with NaN/inf momenta or no constituents instead of failing",
    )
    add_qg_convention(p)
    p.set_defaults(func=run, drop_invalid_advice="pass --drop-invalid")


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation, min, quantiles and max of one per-jet quantity."""
    if len(values) == 0:
        return {}
    v = values.astype(np.float64)
    out = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
    for q, x in zip(QUANTILES, np.quantile(v, QUANTILES)):
        out[f"q{round(q * 100):02d}"] = float(x)
    out["max"] = float(v.max())
    return out


def inspect_dataset(
    path: str,
    chunk_size: int = 100_000,
    max_jets: int | None = None,
    drop_invalid: bool = False,
    qg_convention: str = "part",
) -> dict[str, Any]:
    """Everything ``jettag inspect`` shows about one dataset, as a JSON-ready dict."""
    import awkward as ak

    from jettag.data import formats, store

    files = formats.resolve_dataset(path)
    described = [formats.describe(f) for f in files]
    classes = formats.dataset_classes(files)
    report = store.DropReport()
    columns: dict[str, list[np.ndarray]] = {f: [] for f in STAT_FIELDS}
    counts = np.zeros(len(classes), dtype=np.int64)
    for jets in formats.iter_jets(
        files,
        chunk_size=chunk_size,
        drop_invalid=drop_invalid,
        max_jets=max_jets,
        report=report,
        qg_convention=qg_convention,
    ):
        for f in STAT_FIELDS:
            columns[f].append(ak.to_numpy(jets[f]))
        counts += np.bincount(ak.to_numpy(jets["label"]), minlength=len(classes))[: len(classes)]
    stats = {f: summarize(np.concatenate(v) if v else np.zeros(0)) for f, v in columns.items()}
    return {
        "path": str(path),
        "files": [{"path": d["path"], "format": d["format"], "jets": d["jets"]} for d in described],
        "formats": sorted({d["format"] for d in described}),
        "classes": classes,
        "class_counts": dict(zip(classes, counts.tolist())),
        "jets": int(counts.sum()),
        "jets_in_files": int(sum(d["jets"] for d in described)),
        "dropped": {"empty": report.empty, "non_finite": report.non_finite} if drop_invalid else None,
        "stats": stats,
    }


def _format_text(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}"]
    lines.append(f"  format:  {', '.join(info['formats'])} ({len(info['files'])} file(s))")
    lines.append(
        f"  jets:    {info['jets']}"
        + (f" (of {info['jets_in_files']} in the files)" if info["jets"] != info["jets_in_files"] else "")
    )
    if info["dropped"] is not None:
        d = info["dropped"]
        lines.append(f"  dropped: {d['empty']} without constituents, {d['non_finite']} with NaN/inf momenta")
    total = max(info["jets"], 1)
    lines.append("  classes:")
    for name, n in info["class_counts"].items():
        lines.append(f"    {name:<12s} {n:>10d}  ({100 * n / total:5.1f}%)")
    header = ["mean", "std", "min", *[f"q{round(q * 100):02d}" for q in QUANTILES], "max"]
    lines.append("  " + f"{'':<16s}" + "".join(f"{h:>10s}" for h in header))
    for field, s in info["stats"].items():
        if s:
            lines.append("  " + f"{field:<16s}" + "".join(f"{s[h]:>10.4g}" for h in header))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    results = [inspect_dataset(p, args.chunk_size, args.max_jets, args.drop_invalid, args.qg_convention)
               for p in args.paths]
    if args.json:
        print(json.dumps(results, indent=2))  # always a list, one entry per PATH
    else:
        print("\n\n".join(_format_text(r) for r in results))
    return 0
