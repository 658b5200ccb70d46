"""Loader benchmark: jettag's store -> padded batches against weaver-core's own data loader.

Measured in one run on the same ~100k jets:

(a) jettag: canonical store -> ``JetTensors.from_store`` (feature building) -> ``BatchLoader``
    padded ``kin`` batches of 512, with and without length bucketing; jets/s of the first epoch
    (features included) and of a later epoch (features already built, as in training), and the
    padding waste = padded pairs / real pairs = sum_batches B * P^2 / sum_jets n_i^2. Also the
    ``StreamingLoader`` (features rebuilt while streaming, like weaver does every epoch).
(b) weaver-core 0.5.3: ``weaver.utils.dataset.SimpleIterDataset`` + ``torch.utils.data.DataLoader``
    reading the same jets from a weaver-style parquet with ParT's TopLandscape ``top_kin.yaml``, with
    the options of ParT's ``train_TopLandscape.sh`` (``--num-workers 1 --fetch-step 1 --in-memory``,
    batch 512; 1 worker is also weaver's default), first epoch (load + preprocessing) and a later
    one.

The jets are ``tests/jetfactory.random_jets`` (valid random 4-vectors around a jet axis) with
multiplicities drawn like real top/QCD jets: half "QCD" with mean 40, half "top" with mean 70, each
a gamma distribution of shape 12, rounded and clipped to [3, 200] (mean ~55, ~3% above 128).

Usage: ``.venv/bin/python benchmarks/loader.py [--jets 100000] [--cache DIR] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import awkward as ak
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from jetfactory import random_jets  # noqa: E402

from jettag.data.features import particle_features, required_fields  # noqa: E402
from jettag.data.kinds.particles import JetTensors  # noqa: E402
from jettag.data.loader import BatchLoader, StreamingLoader  # noqa: E402
from jettag.data.store import write_store  # noqa: E402

BATCH = 512
CONFIG = REPO / "benchmarks" / "configs" / "top_kin.yaml"


def realistic_lengths(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(multiplicities, labels): label 1 ("top") mean 70, label 0 ("QCD") mean 40, gamma shape 12."""
    rng = np.random.default_rng(seed)
    top = rng.random(n) < 0.5
    lengths = rng.gamma(shape=12.0, scale=np.where(top, 70.0, 40.0) / 12.0)
    return np.clip(np.rint(lengths), 3, 200).astype(np.int64), top.astype(np.int32)


def make_dataset(n: int, seed: int = 0) -> ak.Array:
    """random_jets grouped by multiplicity (it draws multiplicities uniformly), then shuffled back."""
    lengths, labels = realistic_lengths(n, seed)
    order = np.argsort(lengths, kind="stable")
    parts = []
    for length in np.unique(lengths):
        count = int((lengths == length).sum())
        parts.append(random_jets(count, seed=int(length), min_len=int(length), max_len=int(length)))
    jets = ak.concatenate(parts)  # in order of increasing multiplicity = order of `order`
    jets = ak.with_field(jets, labels[order], "label")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    return jets[inverse]


def write_weaver_parquet(jets: ak.Array, path: Path) -> None:
    """The same jets as ParT's converted TopLandscape parquet (deta times sign(jet eta))."""
    feats, _, offsets = particle_features(jets, "kin", max_len=10_000, deta_sign_flip=True)
    counts = np.diff(offsets)
    table = {f: jets[f] for f in ("part_px", "part_py", "part_pz", "part_energy")}
    table["part_deta"] = ak.unflatten(np.ascontiguousarray(feats[:, 5]), counts)
    table["part_dphi"] = ak.unflatten(np.ascontiguousarray(feats[:, 6]), counts)
    for f in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles", "label"):
        table[f] = jets[f]
    ak.to_parquet(ak.zip(table, depth_limit=1), path, row_group_size=50_000)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def consume(batches, limit: int | None = None) -> int:
    """Iterate batches, touching every tensor (so lazy work is paid), and count jets."""
    n = 0
    for k, batch in enumerate(batches):
        if isinstance(batch, (tuple, list)):  # weaver: (X dict, y dict, Z dict)
            x, y, _ = batch
            n += len(next(iter(y.values())))
            for t in x.values():
                t.view(-1)[-1].item()
        else:
            n += len(batch)
            batch.features.view(-1)[-1].item()
        if limit is not None and k + 1 == limit:
            break
    return n


def bench_jettag(store_path: Path, n_jets: int) -> dict:
    """Raw seconds of one jettag measurement (and the padding waste, which does not vary)."""
    out: dict = {}
    for bucket in (True, False):
        t0 = time.perf_counter()
        data = JetTensors.from_store(store_path, "kin")
        t1 = time.perf_counter()
        loader = BatchLoader(data, BATCH, shuffle=True, seed=0, bucket=bucket)
        n0 = consume(loader)
        t2 = time.perf_counter()
        waste = loader.padding_waste()
        loader.set_epoch(1)
        n1 = consume(loader)
        t3 = time.perf_counter()
        assert n0 == n1 == n_jets
        out["bucketed" if bucket else "unbucketed"] = {
            "feature_build_s": t1 - t0, "first_epoch_s": t2 - t0, "later_epoch_s": t3 - t2,
            "padded_pairs_over_real_pairs": round(waste, 4), "batches": len(loader),
        }
        del data, loader
    t0 = time.perf_counter()
    build = partial(JetTensors.from_jets, feature_set="kin")
    columns = [*required_fields("kin"), "label"]
    n = consume(StreamingLoader(store_path, build, BATCH, columns, buffer_size=50_000))
    t1 = time.perf_counter()
    assert n == n_jets
    out["streaming_bucketed"] = {"epoch_s": t1 - t0}
    return out


def bench_weaver(parquet: Path, n_jets: int, workdir: Path) -> dict:
    """Raw seconds of one weaver-core measurement: a fresh dataset + DataLoader, two epochs."""
    from torch.utils.data import DataLoader
    from weaver.utils.dataset import SimpleIterDataset

    config = workdir / "top_kin.yaml"  # weaver may write *.auto.yaml beside its config
    shutil.copy(CONFIG, config)
    t0 = time.perf_counter()
    dataset = SimpleIterDataset(
        {"_": [str(parquet)]}, str(config), batch_size=BATCH, for_training=True,
        load_range_and_fraction=((0, 1), 1, 1), fetch_by_files=False, fetch_step=1,
        infinity_mode=True, in_memory=True, remake_weights=True, name="train",
    )
    loader = DataLoader(dataset, batch_size=BATCH, drop_last=True, pin_memory=False, num_workers=1,
                        persistent_workers=True, prefetch_factor=None)
    steps = n_jets // BATCH
    n0 = consume(iter(loader), steps)
    t1 = time.perf_counter()
    n1 = consume(iter(loader), steps)
    t2 = time.perf_counter()
    assert n0 == n1 == steps * BATCH
    del loader, dataset
    return {"first_epoch_s": t1 - t0, "later_epoch_s": t2 - t1, "jets_per_epoch": n0}


def best(runs: list[dict], key: str, n: int) -> dict:
    """Fastest of the repeats (the least disturbed by the other users of a shared machine)."""
    times = [r[key] for r in runs]
    return {key: round(min(times), 3), key.replace("_s", "_jets_per_s"): round(n / min(times)),
            key.replace("_s", "_all_runs_s"): [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jettag-bench-loader")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "loader_result.json")
    parser.add_argument("--repeats", type=int, default=2, help="repeats; the fastest of each is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)

    args.cache.mkdir(parents=True, exist_ok=True)
    store_path = args.cache / f"store_{args.jets}.parquet"
    weaver_path = args.cache / f"weaver_{args.jets}.parquet"
    t0 = time.perf_counter()
    if not (store_path.exists() and weaver_path.exists()):
        jets = make_dataset(args.jets)
        write_store(store_path, jets, ["QCD", "top"], "benchmarks/loader.py synthetic")
        write_weaver_parquet(jets, weaver_path)
        del jets
    gen_s = time.perf_counter() - t0
    lengths = ak.to_numpy(ak.from_parquet(store_path, columns=["jet_nparticles"])["jet_nparticles"])
    kept = np.minimum(lengths, 128).astype(np.float64)

    load_before = uptime()
    jettag_runs, weaver_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternate, so that load changes hit both sides alike
            jettag_runs.append(bench_jettag(store_path, args.jets))
            weaver_runs.append(bench_weaver(weaver_path, args.jets, Path(tmp)))
    load_after = uptime()
    jettag: dict = {}
    for mode in ("bucketed", "unbucketed"):
        runs = [r[mode] for r in jettag_runs]
        jettag[mode] = {**best(runs, "feature_build_s", args.jets), **best(runs, "first_epoch_s", args.jets),
                        **best(runs, "later_epoch_s", args.jets),
                        "padded_pairs_over_real_pairs": runs[0]["padded_pairs_over_real_pairs"],
                        "batches": runs[0]["batches"]}
        del jettag[mode]["feature_build_jets_per_s"]
    jettag["streaming_bucketed"] = best([r["streaming_bucketed"] for r in jettag_runs], "epoch_s", args.jets)
    n_weaver = weaver_runs[0]["jets_per_epoch"]
    weaver = {
        "num_workers": 1,
        "options": "fetch_step=1, in_memory=True, infinity_mode=True (ParT train_TopLandscape.sh), "
                   "batch 512, drop_last, every jet padded to 128; first epoch includes dataset "
                   "construction, worker start, file read and preprocessing",
        **best(weaver_runs, "first_epoch_s", n_weaver), **best(weaver_runs, "later_epoch_s", n_weaver),
        "jets_per_epoch": n_weaver,
    }
    # weaver pads every jet to 128: its padded-pair ratio follows from the multiplicities alone
    weaver["padded_pairs_over_real_pairs"] = round(len(kept) * 128**2 / float((kept**2).sum()), 4)

    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/loader.py", *sys.argv[1:]]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "dataset": {
            "jets": args.jets,
            "generator": "tests/jetfactory.random_jets grouped by multiplicity; multiplicities: half label 0 "
                         "gamma(k=12, mean 40), half label 1 gamma(k=12, mean 70), rounded, clipped to "
                         "[3, 200]",
            "mean_multiplicity": round(float(lengths.mean()), 2),
            "max_multiplicity": int(lengths.max()),
            "fraction_above_128": round(float((lengths > 128).mean()), 4),
            "files_prepared_s": round(gen_s, 1),
        },
        "repeats": args.repeats,
        "timing": "wall clock (time.perf_counter), fastest of the repeats; jettag in the main process with "
                  "torch.set_num_threads(1), weaver with its 1 DataLoader worker process",
        "batch_size": BATCH,
        "feature_set": "kin",
        "jettag": jettag,
        "weaver_core": weaver,
        "ratios_jettag_over_weaver": {
            "first_epoch_bucketed": round(jettag["bucketed"]["first_epoch_jets_per_s"]
                                          / weaver["first_epoch_jets_per_s"], 2),
            "later_epoch_bucketed": round(jettag["bucketed"]["later_epoch_jets_per_s"]
                                          / weaver["later_epoch_jets_per_s"], 2),
            "first_epoch_unbucketed": round(jettag["unbucketed"]["first_epoch_jets_per_s"]
                                            / weaver["first_epoch_jets_per_s"], 2),
            "later_epoch_unbucketed": round(jettag["unbucketed"]["later_epoch_jets_per_s"]
                                            / weaver["later_epoch_jets_per_s"], 2),
            "streaming_vs_weaver_first_epoch": round(jettag["streaming_bucketed"]["epoch_jets_per_s"]
                                                     / weaver["first_epoch_jets_per_s"], 2),
        },
        "targets": {"jets_per_s_ratio": ">= 2", "bucketed_padding_waste": "< 1.3"},
        "gpu_resident": "owed (no GPU in this session)",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
