"""Streaming benchmark: peak memory of ``jettag train`` on N and 10N jets, streaming and in memory.

The stores hold ``tests/jetfactory.random_jets`` (valid random 4-vectors around a jet axis, 2
classes, 10 to 100 constituents per jet, uniform: mean 55), written once in the canonical store
format in row groups of ``--row-group`` jets and kept in ``--cache``. Each measurement is a fresh
``python -m jettag.cli train top_pfn`` process (a narrow PFN, phi 32-32 and F 32, so that the data
path weighs in the speed; 1 epoch, batch 512, split 0.8/0.1/0.1) whose peak
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
           "batch_size=512", "model.overrides.phi_sizes=[32,32]", "model.overrides.f_sizes=[32]",
           "progress=false", "--run-dir", str(run)]
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


def loader_only(store: Path, buffer: int) -> dict:
    """Seconds of one epoch of the train part without a model: the stream (reading and building
    features included) against the in-memory path (feature build once, then batching)."""
    from functools import partial

    from jettag.data.dataset import split_rows
    from jettag.data.features import required_fields
    from jettag.data.kinds.particles import JetTensors
    from jettag.data.loader import BatchLoader, StreamingLoader

    select = partial(split_rows, fractions=[0.8, 0.1, 0.1], seed=0, part="train")
    build = partial(JetTensors.from_jets, feature_set="kin")
    t0 = time.perf_counter()
    columns = [*required_fields("kin"), "label"]
    stream = StreamingLoader(store, build, 512, columns, select, buffer_size=buffer)
    n_stream = sum(len(b) for b in stream)
    t1 = time.perf_counter()
    data = JetTensors.from_store(store, "kin")
    t2 = time.perf_counter()
    n_memory = sum(len(b) for b in BatchLoader(data, 512))
    t3 = time.perf_counter()
    return {"stream_jets_per_s": round(n_stream / (t1 - t0), 1), "memory_build_s": round(t2 - t1, 2),
            "memory_batching_jets_per_s": round(n_memory / (t3 - t2), 1), "load1": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jets", type=int, default=20_000, help="N (the larger store has 10 N)")
    p.add_argument("--buffer", type=int, default=10_000, help="data.buffer_size of the streaming runs")
    p.add_argument("--row-group", type=int, default=5_000)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "jettag-bench-streaming"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "streaming_result.json"))
    p.add_argument("--no-train", action="store_true", help="only the loader epochs (keep the runs of --out)")
    p.add_argument("--streaming-only", action="store_true",
                   help="measure the streaming runs again and keep the in-memory runs of --out")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sizes = (args.jets, 10 * args.jets)
    stores = {n: make_store(cache / f"jets_{n}.parquet", n, args.row_group) for n in sizes}
    results = []
    if args.no_train or args.streaming_only:
        results = [r for r in json.loads(Path(args.out).read_text())["runs"]
                   if args.no_train or not r["streaming"]]
    if not args.no_train:
        with tempfile.TemporaryDirectory() as tmp:
            for n, store in stores.items():
                for streaming in (True,) if args.streaming_only else (True, False):
                    r = {"jets": n, "streaming": streaming,
                         **measure(store, streaming, args.buffer, Path(tmp))}
                    print(json.dumps(r), flush=True)
                    results.append(r)
    loader = {"jets": args.jets, **loader_only(stores[args.jets], args.buffer)}
    print(json.dumps(loader), flush=True)
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
           "buffer_size": args.buffer, "row_group": args.row_group, "runs": results, "loader_only": loader}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
