"""Streaming benchmark: peak memory of ``jettag train`` on N and 10N jets, streaming and in memory.

The stores hold ``tests/jetfactory.random_jets`` (valid random 4-vectors around a jet axis, 2
classes, 10 to 100 constituents per jet, uniform: mean 55), written once in the canonical store
format in row groups of ``--row-group`` jets and kept in ``--cache``. Each measurement is a fresh
``python -m jettag.cli train top_pfn`` process (1 epoch, batch 512, split 0.8/0.1/0.1) whose peak
resident set size is the kernel's ``ru_maxrss`` of that child (``os.wait4``), so nothing of this
script is counted. Training jets/s is the epoch's ``jets_per_s`` from the run's ``log.csv`` (the
validation pass excluded). The 1-minute load average is recorded before and after each run: the
machine may be shared, so jets/s are indicative, while the RSS is what the streaming design must
hold (RSS of 10N within 20% of N when streaming).

Usage: ``.venv/bin/python benchmarks/streaming.py [--jets 20000] [--buffer 10000] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from jetfactory import random_jets  # noqa: E402

from jettag.data.store import write_store  # noqa: E402

CHUNK = 20_000


def make_store(path: Path, n: int, row_group: int) -> Path:
    """``n`` random jets in chunks of 20k (seeded by chunk), written once."""
    if path.is_file():
        return path

    def chunks():
        for k, start in enumerate(range(0, n, CHUNK)):
            yield random_jets(min(CHUNK, n - start), seed=1000 + k, min_len=10, max_len=100)

    return write_store(path, chunks(), ["QCD", "top"], "jetfactory.random_jets", row_group_size=row_group)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def measure(store: Path, streaming: bool, buffer: int, workdir: Path) -> dict:
    run = workdir / f"{store.stem}-{'stream' if streaming else 'memory'}"
    cmd = [sys.executable, "-m", "jettag.cli", "train", "top_pfn", f"data.path={store}",
           f"data.streaming={str(streaming).lower()}", f"data.buffer_size={buffer}", "epochs=1",
           "batch_size=512", "progress=false", "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    rows = list(csv.DictReader(open(run / "log.csv")))
    val = [r for r in rows if r["split"] == "val"][-1]
    return {"command": " ".join(["jettag", *cmd[3:]]), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "train_jets_per_s": round(float(val["jets_per_s"]), 1), "wall_s": round(wall, 1),
            "val_auc": round(float(val["auc"]), 4), "load1_before": load0, "load1_after": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jets", type=int, default=20_000, help="N (the larger store has 10 N)")
    p.add_argument("--buffer", type=int, default=10_000, help="data.buffer_size of the streaming runs")
    p.add_argument("--row-group", type=int, default=5_000)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "jettag-bench-streaming"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "streaming_result.json"))
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sizes = (args.jets, 10 * args.jets)
    stores = {n: make_store(cache / f"jets_{n}.parquet", n, args.row_group) for n in sizes}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, store in stores.items():
            for streaming in (True, False):
                r = {"jets": n, "streaming": streaming, **measure(store, streaming, args.buffer, Path(tmp))}
                print(json.dumps(r), flush=True)
                results.append(r)
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
           "buffer_size": args.buffer, "row_group": args.row_group, "runs": results}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
