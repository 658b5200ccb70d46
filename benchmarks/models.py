"""Model throughput and memory: jettag's models side by side with weaver-core's ParT and ParticleNet.

Run:  .venv/bin/python benchmarks/models.py            (writes benchmarks/models_result.json)

All models see identical jets (realistic multiplicity: gamma-distributed, mean ~55, 2..128
particles; physical 4-vectors, 7 standard-normal features). Measured in one process, one model
after the other, on the same batches:

- training jets/s: forward + cross-entropy + backward + AdamW step (fp32 on CPU; bf16 autocast
  at batch 512 on CUDA);
- inference jets/s: eval mode, no grad;
- peak memory of one training step / one inference batch: on CUDA ``max_memory_allocated``; on
  CPU the growth of the peak resident set size of a fresh child process that builds the model
  and runs the step (``VmHWM``), since CPU PyTorch has no allocator statistics.

Batching: jettag gets length-bucketed batches (sorted by multiplicity within chunks, as
``jettag.data.loader``; P = longest jet rounded up to 8), the weaver models get every batch padded
to 128 and trim it themselves (weaver-core's default ``trim=True``). "jettag part @128" gives
jettag's ParT the very batches weaver gets, to separate the model's own speed-up from bucketing.
On CUDA the script also times ``torch.compile`` of weaver's ParT and of jettag's models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jettag.data.kinds.particles import example_inputs  # noqa: E402
from jettag.models import create_model  # noqa: E402

PN_CONV = [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))]
CONFIGS = ["jettag:pfn", "jettag:particlenet", "weaver:particlenet", "jettag:particlenet@128",
           "jettag:mipart", "jettag:mipart_l", "jettag:part", "weaver:part", "jettag:part@128"]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 2**20, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def jet_lengths(n: int, seed: int) -> np.ndarray:
    """Multiplicities ~ Gamma(k=5, mean 55), clipped to [2, 128] (JetClass-like spread)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.gamma(5.0, 55.0 / 5.0, size=n)), 2, 128).astype(int)


def make_sample(n: int, seed: int, feature_dim: int = 7) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
    """``n`` jets (lengths, inputs padded to 128); every model's batches are cut from these."""
    lengths = jet_lengths(n, seed)
    return lengths, example_inputs(feature_dim, lengths=lengths.tolist(), length=128, seed=seed)


def plan_batches(lengths: np.ndarray, batch_size: int, n_batches: int, seed: int
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(bucketed, random) batches holding the very same jets.

    An epoch over all jets is cut as ``jettag.data.loader`` does (shuffle, sort by length within
    chunks of 64 batches); ``n_batches`` of its batches are drawn at random and timed. The weaver
    runs get the union of those jets reshuffled into random batches (what weaver's loader yields).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    try:
        from jettag.data.loader import bucket_batches

        epoch = bucket_batches(lengths, order, batch_size, True, 64)
    except ImportError:  # same rule without the loader module
        chunk = 64 * batch_size
        parts = [order[i:i + chunk] for i in range(0, len(order), chunk)]
        order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in parts])
        epoch = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    epoch = [b for b in epoch if len(b) == batch_size]
    picked = [epoch[k] for k in rng.choice(len(epoch), size=min(n_batches, len(epoch)), replace=False)]
    jets = rng.permutation(np.concatenate(picked))
    return picked, [jets[i:i + batch_size] for i in range(0, len(jets), batch_size)]


def cut(sample: tuple[torch.Tensor, ...], lengths: np.ndarray, idx: np.ndarray, bucket: bool
        ) -> tuple[torch.Tensor, ...]:
    """One batch: P = longest jet rounded up to 8 (bucketed, jettag) or 128 (weaver's padding)."""
    p = min(128, -(-int(lengths[idx].max()) // 8) * 8) if bucket else 128
    index = torch.from_numpy(idx)
    return tuple(t[index, :, :p].contiguous() for t in sample)


def build(config: str, num_classes: int = 10):
    """(model, call(model, batch) -> logits) for a configuration name."""
    source, name = config.split(":")
    name = name.split("@")[0]
    if source == "jettag":
        model = create_model(name, num_classes=num_classes, features=7)
        return model, lambda m, b: m(*b)
    import logging

    logging.getLogger("weaver").setLevel(logging.WARNING)
    if name == "part":
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        model = ParticleTransformer(input_dim=7, num_classes=num_classes, pair_input_dim=4,
                                    use_pre_activation_pair=False, embed_dims=[128, 512, 128],
                                    pair_embed_dims=[64, 64, 64], num_heads=8, num_layers=8, num_cls_layers=2,
                                    cls_block_params=dict(dropout=0, attn_dropout=0, activation_dropout=0),
                                    fc_params=[], activation="gelu", trim=True)
        return model, lambda m, b: m(b[1], v=b[2], mask=b[3].float())
    from weaver.nn.model.ParticleNet import ParticleNet

    model = ParticleNet(7, num_classes, conv_params=PN_CONV, fc_params=[(256, 0.1)], use_fusion=False)
    return model, lambda m, b: m(b[0], b[1], b[3].float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_speed(model, call, batches, device, amp_dtype, warmup: int = 2, steps: int | None = None) -> float:
    model.train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = [torch.randint(0, 10, (b[0].shape[0],), generator=torch.Generator().manual_seed(i))
              for i, b in enumerate(batches)]

    def step(i: int) -> None:
        b = tuple(t.to(device) for t in batches[i % len(batches)])
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(call(model, b).float(), labels[i % len(batches)].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    _sync(device)
    n_steps = steps or len(batches)
    jets = sum(batches[i % len(batches)][0].shape[0] for i in range(n_steps))
    t0 = time.perf_counter()
    for i in range(n_steps):
        step(i)
    _sync(device)
    return jets / (time.perf_counter() - t0)


@torch.no_grad()
def infer_speed(model, call, batches, device, amp_dtype, warmup: int = 1) -> float:
    model.eval().to(device)

    def step(b) -> None:
        b = tuple(t.to(device) for t in b)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            call(model, b)

    for b in batches[:warmup]:
        step(b)
    _sync(device)
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    _sync(device)
    return sum(b[0].shape[0] for b in batches) / (time.perf_counter() - t0)


GEMM_OPS = (  # matrix products, including the fused attention kernel of the class-attention blocks
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
)


def train_profile(model, call, batches) -> dict:
    """Where one pass of training steps over ``batches`` spends its CPU time (torch.profiler, self time).

    The GEMM share bounds any implementation of the same mathematics: with every other operation made
    free, a step still costs its matrix products, which already run near the core's peak.
    """
    from torch.profiler import ProfilerActivity, profile

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = [torch.zeros(b[0].shape[0], dtype=torch.long) for b in batches]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b, y in zip(batches, labels):
            loss = F.cross_entropy(call(model, b), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    dropout = sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_")
    return {
        "profiled_s": round(total / 1e6, 3),
        "gemm_s": round(gemm / 1e6, 3),
        "gemm_share": round(gemm / total, 3),
        "dropout_rng_share": round(dropout / total, 3),
    }


def _rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib() -> int:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1])


def memory_child(config: str, mode: str, batch_size: int, seed: int) -> None:
    """Child process: peak RSS growth (MiB) of one training step or inference batch on CPU."""
    torch.set_num_threads(1)
    model, call = build(config)
    bucket = not config.endswith("@128") and config.startswith("jettag")
    lengths, sample = make_sample(64 * batch_size, seed)
    picked, shuffled = plan_batches(lengths, batch_size, 1, seed)
    batch = cut(sample, lengths, picked[0] if bucket else shuffled[0], bucket)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if mode == "train":  # one untimed step so optimizer state exists before the baseline
        model.train()
        call(model, batch).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    base = _rss_kib()
    if mode == "train":
        F.cross_entropy(call(model, batch), torch.zeros(batch_size, dtype=torch.long)).backward()
        opt.step()
    else:
        with torch.no_grad():
            call(model.eval(), batch)
    print(json.dumps({"peak_mib": max(0, _hwm_kib() - base) / 1024}))


def cpu_memory(config: str, mode: str, batch_size: int, seed: int) -> float | None:
    cmd = [sys.executable, __file__, "--memory-child", config, mode, str(batch_size), str(seed)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        return round(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"], 1)
    except (IndexError, ValueError, KeyError):
        print(out.stderr[-2000:], file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epoch-jets", type=int, default=4096, help="jets in the sample (one epoch)")
    parser.add_argument("--train-batches", type=int, default=8, help="batches timed for training")
    parser.add_argument("--infer-batches", type=int, default=4, help="batches (2x size) timed, inference")
    parser.add_argument("--batch", type=int, default=None, help="batch size (CPU 64, CUDA 512)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "models_result.json"))
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        config, mode, batch, seed = args.memory_child
        memory_child(config, mode, int(batch), int(seed))
        return 0

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    amp = torch.bfloat16 if cuda else None
    batch = args.batch or (512 if cuda else 64)
    torch.manual_seed(args.seed)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "uptime_start": uptime(),
        "settings": {"device": str(device), "precision": "bf16 autocast" if amp else "fp32",
                     "batch_size": batch, "epoch_jets": args.epoch_jets, "train_batches": args.train_batches,
                     "infer_batches": args.infer_batches,
                     "lengths": "Gamma(k=5, mean 55) clipped to [2, 128]"},
        "models": {},
    }
    lengths, sample = make_sample(args.epoch_jets, args.seed)
    result["settings"]["mean_length"] = round(float(lengths.mean()), 1)
    train_plan = plan_batches(lengths, batch, args.train_batches, args.seed)
    infer_plan = plan_batches(lengths, 2 * batch, args.infer_batches, args.seed + 1)
    batches = {}
    for k, bucket in enumerate((True, False)):
        batches[bucket] = ([cut(sample, lengths, idx, bucket) for idx in train_plan[k]],
                           [cut(sample, lengths, idx, bucket) for idx in infer_plan[k]])
    result["settings"]["mean_P_bucketed_train"] = float(np.mean([b[0].shape[-1] for b in batches[True][0]]))
    for config in args.configs:
        bucket = config.startswith("jettag") and not config.endswith("@128")
        model, call = build(config)
        train_b, infer_b = batches[bucket]
        entry = {"params": sum(p.numel() for p in model.parameters()),
                 "batches": "bucketed, P = longest rounded up to 8" if bucket else "padded to 128"}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        # weaver's SequenceTrimmer only starts trimming after 5 calls: warm up past that
        warm = 6 if config.startswith("weaver") else 2
        entry["train_jets_per_s"] = round(train_speed(model, call, train_b, device, amp, warmup=warm), 1)
        if cuda:
            entry["train_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
        entry["infer_jets_per_s"] = round(infer_speed(model, call, infer_b, device, amp), 1)
        if not cuda and config.split("@")[0] in ("jettag:part", "weaver:part"):
            entry["train_profile"] = train_profile(model, call, train_b)
        if cuda:
            entry["infer_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            compiled = torch.compile(model)
            speed = train_speed(compiled, call, train_b, device, amp, warmup=6)
            entry["train_jets_per_s_compiled"] = round(speed, 1)
        elif not args.no_memory:
            entry["train_peak_mib_cpu"] = cpu_memory(config, "train", batch, args.seed)
            entry["infer_peak_mib_cpu"] = cpu_memory(config, "infer", batch, args.seed)
        result["models"][config] = entry
        print(config, json.dumps(entry), flush=True)
        del model

    m = result["models"]

    def ratio(a: str, b: str, key: str = "train_jets_per_s") -> float | None:
        if a in m and b in m and m[b].get(key):
            return round(m[a][key] / m[b][key], 2)
        return None

    result["ratios"] = {
        "part_train_jettag_vs_weaver": ratio("jettag:part", "weaver:part"),
        "part_train_jettag_vs_weaver_same_padded_batches": ratio("jettag:part@128", "weaver:part"),
        "part_infer_jettag_vs_weaver": ratio("jettag:part", "weaver:part", "infer_jets_per_s"),
        "particlenet_train_jettag_vs_weaver": ratio("jettag:particlenet", "weaver:particlenet"),
        "particlenet_train_jettag_vs_weaver_same_padded_batches": ratio("jettag:particlenet@128",
                                                                        "weaver:particlenet"),
        "particlenet_infer_jettag_vs_weaver": ratio("jettag:particlenet", "weaver:particlenet",
                                                    "infer_jets_per_s"),
    }
    if "jettag:part" in m and "weaver:part" in m and "train_profile" in m["jettag:part"]:
        # same batches, same work: weaver's profiled time over jettag's GEMM time alone bounds what
        # any CPU implementation of this mathematics could gain over weaver with these batches
        bound = m["weaver:part"]["train_profile"]["profiled_s"] / m["jettag:part"]["train_profile"]["gemm_s"]
        result["ratios"]["part_train_bound_if_only_gemms_remained"] = round(bound, 2)
    if not cuda:
        result["gpu"] = ("owed (no GPU in this session): MIParT >= 20k jets/s training under 8 GiB at "
                         "batch 512, >= 100k jets/s inference; ParT >= 2x weaver-core compiled. Rerun this "
                         "script on a CUDA machine: it then uses bf16 autocast at batch 512 and adds "
                         "torch.compile timings.")
    result["uptime_end"] = uptime()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
