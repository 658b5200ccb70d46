"""Generation speed: jets/s per core for every recipe, the share of time outside Pythia, 1 -> 2 workers.

The reference implementation measured in the same run is the textbook per-particle loop: one
``pythia.next()`` per event, a Python loop over ``pythia.event`` to collect final-state particles,
and one FastJet ``ClusterSequence`` per event; the ratio compares its events/s (generation,
particle collection and clustering of the same QCD process) with ours.

    .venv/bin/python benchmarks/generate.py --out benchmarks/generate.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from jettag.data.generate import generate
from jettag.data.generate.recipes import RECIPES, get_recipe, pythia_settings

# jets per recipe for the one-worker measurement (hh4b: events, two jets each): large enough that
# Pythia's init is a small part
JETS = {
    "top": 1000,
    "qg": 200,
    "qg_bc": 200,
    "jetclass": 500,
    "wtag": 600,
    "top2tev": 400,
    "flavour": 400,
    "hh4b": 150,
}


def machine() -> dict:

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    mem = next((ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), "0")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(int(mem) / 1e6, 1),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_recipe(name: str, n: int, workers: int, detector: str = "none", chunk_size: int = 1000) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"jettag-bench-{name}-"))
    try:
        start = time.perf_counter()
        manifest = generate(
            name, n, out, workers=workers, detector=detector, chunk_size=chunk_size, progress=False
        )
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = sum(c["seconds_total"] for c in manifest["per_class"].values())
    pythia = sum(c["seconds_pythia"] for c in manifest["per_class"].values())
    return {
        "recipe": name,
        "unit": "events (2 jets each)" if get_recipe(name).event is not None else "jets",
        "jets": n,
        "workers": workers,
        "detector": detector,
        "wall_s": wall,
        "jets_per_s": n / wall,
        "jets_per_s_per_core": n / total,
        "outside_pythia_share": 1 - pythia / total,
        "per_class_jets_per_s": {k: c["jets"] / c["seconds_total"] for k, c in manifest["per_class"].items()},
        "events": {k: c["generated_events"] for k, c in manifest["per_class"].items()},
    }


def reference_loop(n_events: int) -> dict:
    """The per-particle reference: event loop in Python, one ClusterSequence per event."""
    import fastjet

    from jettag.data.generate.clustering import warm_up
    from jettag.data.generate.pythia import make_pythia, next_events

    recipe = get_recipe("top")
    settings = pythia_settings(recipe, recipe.classes[0], seed=99)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, recipe.radius)
    pythia = make_pythia(settings)
    warm_up()  # FastJet loaded and its banner swallowed before either clock starts
    start = time.perf_counter()
    n_jets = 0
    for _ in range(n_events):
        if not pythia.next():
            continue
        parts = []
        for i in range(pythia.event.size()):
            p = pythia.event[i]
            if p.isFinal() and p.idAbs() not in (12, 14, 16):
                parts.append(fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e()))
        seq = fastjet.ClusterSequence(parts, jetdef)
        n_jets += sum(1 for j in seq.inclusive_jets(recipe.pt_min) if j.pt() < recipe.pt_max)
    ref_s = time.perf_counter() - start
    # ours on the same process and number of events: batch generation, flat arrays, one FastJet call
    from jettag.data.generate.clustering import cluster
    from jettag.data.generate.particles import visible_final_state
    from jettag.data.generate.pythia import ChargeTable

    pythia = make_pythia(settings)
    charges = ChargeTable(pythia)
    start = time.perf_counter()
    ev = next_events(pythia, n_events)
    parts = visible_final_state(ev, charges, 1e9)
    jets = cluster(parts, ev.n_events, recipe.radius, recipe.pt_min)
    ours_s = time.perf_counter() - start
    return {
        "events": n_events,
        "reference_s": ref_s,
        "ours_s": ours_s,
        "speedup": ref_s / ours_s,
        "reference_jets": n_jets,
        "ours_jets_above_pt_min": len(jets.event),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/generate.md")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the jet counts (quick runs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res: dict = {"machine": machine(), "uptime_start": uptime(), "single": [], "scaling": [], "detector": []}
    res["reference"] = reference_loop(max(20, int(200 * args.scale)))
    print(json.dumps(res["reference"]), flush=True)
    for name in args.recipes:
        r = run_recipe(name, max(len(get_recipe(name).classes), int(JETS[name] * args.scale)), 1)
        res["single"].append(r)
        print(json.dumps(r), flush=True)
    n = max(4, int(1000 * args.scale))
    res["detector"].append(run_recipe("top", n, 1, detector="simple"))
    n = max(4, int(2000 * args.scale))  # long enough that two process start-ups (~2 s each) weigh little
    for workers in (1, 2):  # 4 chunks per class, 8 in all, so both workers have work to the end
        res["scaling"].append(run_recipe("top", n, workers, chunk_size=max(1, n // 8)))
        print(json.dumps(res["scaling"][-1]), flush=True)
    res["uptime_end"] = uptime()
    write_markdown(res, args)


def write_markdown(res: dict, args: argparse.Namespace) -> None:
    m = res["machine"]
    ref = res["reference"]
    lines = [
        "# Generation speed (Pythia 8 + FastJet, jettag generate)",
        "",
        f"Command: `.venv/bin/python benchmarks/generate.py --out {args.out}"
        + (f" --scale {args.scale}" if args.scale != 1.0 else "")
        + "`",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM; {m['date_utc']}.",
        "",
        f"Load at start: `{res['uptime_start']}`; at end: `{res['uptime_end']}` (2 cores: a load above "
        "2 means other work competed and the rates are lower bounds).",
        "",
        "## Against the per-particle reference loop (same run, same QCD process, same events)",
        "",
        f"{ref['events']} events: reference loop {ref['reference_s']:.2f} s, jettag {ref['ours_s']:.2f} s "
        f"-> **{ref['speedup']:.1f}x** (generation + particle collection + clustering).",
        "",
        "## Jets/s per core, one worker (particle level, default MPI setting of each recipe)",
        "",
        "| recipe | jets | jets/s per core | share outside Pythia | per class jets/s |",
        "|---|---|---|---|---|",
    ]
    for r in res["single"] + res["detector"]:
        label = r["recipe"] + (" (detector simple)" if r["detector"] != "none" else "")
        label += f" [{r['unit']}]" if r.get("unit", "jets") != "jets" else ""
        per = ", ".join(f"{k} {v:.0f}" for k, v in r["per_class_jets_per_s"].items())
        lines.append(
            f"| {label} | {r['jets']} | {r['jets_per_s_per_core']:.1f} | "
            f"{100 * r['outside_pythia_share']:.1f}% | {per} |"
        )
    lines += [
        "",
        '"Outside Pythia" is everything except `Pythia.init()` and `Pythia.nextBatch()`: flattening,',
        "particle selection, impact parameters, detector, clustering, truth matching and store assembly (the",
        "parquet write after a chunk is outside the chunk clock; it costs under 1% more).",
        "",
        "## Scaling, top recipe",
        "",
        "| workers | jets | wall s | jets/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    base = res["scaling"][0]["jets_per_s"]
    for r in res["scaling"]:
        lines.append(
            f"| {r['workers']} | {r['jets']} | {r['wall_s']:.1f} | {r['jets_per_s']:.1f} | "
            f"{r['jets_per_s'] / base:.2f}x |"
        )
    lines += [
        "",
        "GPU figures: not applicable (generation runs on CPUs).",
        "",
        "Raw numbers:",
        "",
        "```json",
        json.dumps(res, indent=1),
        "```",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
