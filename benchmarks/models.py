"""Model throughput and memory: every jettag model beside its reference code, on the same batches.

Run:  python benchmarks/models.py     (writes benchmarks/models_result.json and benchmarks/models.md)

Pairs (reference | jettag), each measured in this one process:

- weaver-core's ``ParticleTransformer`` | ``part``; weaver-core's ``ParticleNet`` | ``particlenet``;
- the MIParT authors' ``MIParticleTransformer`` (MIParT and MIParT-L widths) | ``mipart``, ``mipart_l``.
  Their file ``example_MIParticleTransformer.py`` (github.com/USST-HEP/MIParT) is not part of jettag:
  it is read from ``$JETTAG_MIPART_REFERENCE`` or ``.reference/`` (git-ignored); without it those
  comparisons are reported as skipped;
- ``pfn`` has no reference here and is timed alone.

Batches (identical for both sides of every pair): multiplicities ~ N(55, 18) rounded and clipped to
[5, 128]; an epoch is shuffled, sorted by length within chunks of 64 batches (as
``jettag.data.loader``) and cut into batches of 64 jets, each padded to its longest jet rounded up
to 8; ``--train-batches`` of them are drawn at random. The reference models are built with
``trim=False``: on such batches trimming could only remove nothing (eval) or drop real particles at
random (weaver's training-time quantile trim), i.e. change the mathematics.

Timing: fp32, ``--threads`` torch threads (default 2). For each pair the reference and jettag alternate
``--rounds`` times (train: forward + cross-entropy + backward + AdamW step over all drawn batches;
inference: eval mode, no grad, batches of 128), so that load from other processes hits both alike;
the table gives the median rate of each side and the ratio of the medians.

Peak memory of one training step / inference batch (the largest drawn batch): on CPU the growth of
the peak resident set size of a fresh child process (``VmHWM``), as CPU PyTorch has no allocator
statistics; on CUDA ``max_memory_allocated``. GPU figures are owed until the script runs on one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools"))

from jettag.data.kinds.particles import example_inputs  # noqa: E402
from jettag.models import create_model  # noqa: E402

PN_CONV = [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))]
TARGETS = {  # issue 16, 2-core CPU: (train, inference) speed of jettag over its reference, same batches
    "part": (1.5, 2.0),
    "particlenet": (1.2, 2.0),
    "mipart": (2.0, 2.0),
    "mipart_l": (2.0, 2.0),
}
PAIRS = {  # jettag model -> reference configuration
    "part": "weaver:part",
    "particlenet": "weaver:particlenet",
    "mipart": "authors:mipart",
    "mipart_l": "authors:mipart_l",
    "pfn": None,
}


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
    """Multiplicities ~ N(55, 18), rounded and clipped to [5, 128]."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(55.0, 18.0, size=n)), 5, 128).astype(int)


def make_sample(n: int, seed: int, feature_dim: int = 7) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
    """``n`` jets (lengths, inputs padded to 128); every batch is cut from these."""
    lengths = jet_lengths(n, seed)
    return lengths, example_inputs(feature_dim, lengths=lengths.tolist(), length=128, seed=seed)


def plan_batches(lengths: np.ndarray, batch_size: int, n_batches: int, seed: int) -> list[np.ndarray]:
    """``n_batches`` batches drawn at random from one length-bucketed epoch (``jettag.data.loader``)."""
    from jettag.data.loader import bucket_batches

    rng = np.random.default_rng(seed)
    epoch = bucket_batches(lengths, rng.permutation(len(lengths)), batch_size, True, 64)
    epoch = [b for b in epoch if len(b) == batch_size]
    return [epoch[k] for k in rng.choice(len(epoch), size=min(n_batches, len(epoch)), replace=False)]


def cut(sample: tuple[torch.Tensor, ...], lengths: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    """One batch padded to its longest jet rounded up to 8."""
    p = min(128, -(-int(lengths[idx].max()) // 8) * 8)
    index = torch.from_numpy(idx)
    return tuple(t[index, :, :p].contiguous() for t in sample)


def authors_available() -> bool:
    from mipart_golden import reference_path

    return reference_path().is_file()


def build(config: str, num_classes: int = 10):
    """(model, call(model, batch) -> logits) for ``jettag:``, ``weaver:`` or ``authors:`` + model name."""
    source, name = config.split(":")
    if source == "jettag":
        model = create_model(name, num_classes=num_classes, features=7)
        return model, lambda m, b: m(*b)
    import logging

    logging.getLogger("weaver").setLevel(logging.WARNING)
    if source == "authors":
        import warnings

        from mipart_golden import CONFIGS, load_reference, reference_path

        warnings.filterwarnings("ignore", message=".*autocast.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
        ref = load_reference(reference_path())
        model = ref.MIParticleTransformer(
            input_dim=7, num_classes=num_classes, pair_input_dim=4, use_pre_activation_pair=False,
            num_heads=8, num_MIlayers=5, num_layers=5, num_cls_layers=2, block_params=None,
            cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0}, fc_params=[],
            activation="gelu", trim=False, for_inference=False, **CONFIGS[name])
        return model, lambda m, b: m(b[1], v=b[2], mask=b[3].float())
    if name == "part":
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        model = ParticleTransformer(input_dim=7, num_classes=num_classes, pair_input_dim=4,
                                    use_pre_activation_pair=False, embed_dims=[128, 512, 128],
                                    pair_embed_dims=[64, 64, 64], num_heads=8, num_layers=8, num_cls_layers=2,
                                    cls_block_params=dict(dropout=0, attn_dropout=0, activation_dropout=0),
                                    fc_params=[], activation="gelu", trim=False)
        return model, lambda m, b: m(b[1], v=b[2], mask=b[3].float())
    from weaver.nn.model.ParticleNet import ParticleNet

    model = ParticleNet(7, num_classes, conv_params=PN_CONV, fc_params=[(256, 0.1)], use_fusion=False)
    return model, lambda m, b: m(b[0], b[1], b[3].float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """One model's training and inference passes over fixed batches, callable round after round."""

    def __init__(self, config: str, train_batches, infer_batches, device, amp_dtype) -> None:
        self.model, self.call = build(config)
        self.model.to(device)
        self.train_b, self.infer_b = train_batches, infer_batches
        self.device, self.amp = device, amp_dtype
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.labels = [torch.randint(0, 10, (b[0].shape[0],), generator=torch.Generator().manual_seed(i))
                       for i, b in enumerate(train_batches)]
        self.params = sum(p.numel() for p in self.model.parameters())

    def _train_step(self, i: int) -> None:
        b = tuple(t.to(self.device) for t in self.train_b[i])
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss = F.cross_entropy(self.call(self.model, b).float(), self.labels[i].to(self.device))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def train_round(self) -> float:
        """Jets per second over one pass of training steps on all batches."""
        self.model.train()
        _sync(self.device)
        t0 = time.perf_counter()
        for i in range(len(self.train_b)):
            self._train_step(i)
        _sync(self.device)
        return sum(b[0].shape[0] for b in self.train_b) / (time.perf_counter() - t0)

    @torch.no_grad()
    def infer_round(self) -> float:
        self.model.eval()
        _sync(self.device)
        t0 = time.perf_counter()
        for b in self.infer_b:
            b = tuple(t.to(self.device) for t in b)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                self.call(self.model, b)
        _sync(self.device)
        return sum(b[0].shape[0] for b in self.infer_b) / (time.perf_counter() - t0)

    def warm_up(self) -> None:
        self.model.train()
        self._train_step(0)
        self.infer_round()


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
    dropout = sum(e.self_cpu_time_total for e in events if e.key in ("aten::bernoulli_", "aten::uniform_"))
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


def memory_batch(batch_size: int, n_batches: int, seed: int, epoch_jets: int) -> tuple[torch.Tensor, ...]:
    """The drawn training batch with the most particles (the one that sets the peak)."""
    lengths, sample = make_sample(epoch_jets, seed)
    picked = plan_batches(lengths, batch_size, n_batches, seed)
    return cut(sample, lengths, max(picked, key=lambda idx: int(lengths[idx].max())))


def memory_child(config: str, mode: str, batch_size: int, n_batches: int, seed: int, epoch_jets: int) -> None:
    """Child process: peak RSS growth (MiB) of one training step or inference batch on CPU."""
    torch.set_num_threads(1)
    model, call = build(config)
    batch = memory_batch(batch_size, n_batches, seed, epoch_jets)
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


def cpu_memory(config: str, mode: str, args: argparse.Namespace) -> float | None:
    cmd = [sys.executable, __file__, "--memory-child", config, mode, str(args.batch), str(args.train_batches),
           str(args.seed), str(args.epoch_jets)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        return round(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"], 1)
    except (IndexError, ValueError, KeyError):
        print(out.stderr[-2000:], file=sys.stderr)
        return None


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def compare(jettag: str, reference: str | None, batches, device, amp, args) -> dict:
    """Alternate reference and jettag for ``args.rounds`` rounds; medians, ratios, memory, profile."""
    sides = {f"jettag:{jettag}": Timer(f"jettag:{jettag}", *batches, device, amp)}
    if reference is not None:
        sides[reference] = Timer(reference, *batches, device, amp)
    rates: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in sides}
    for timer in sides.values():
        timer.warm_up()
    for _ in range(args.rounds):
        for name, timer in reversed(sides.items()):  # reference first in every round
            rates[name]["train"].append(timer.train_round())
            rates[name]["infer"].append(timer.infer_round())
    entry: dict = {}
    for name, timer in sides.items():
        entry[name] = {"params": timer.params,
                       "train_jets_per_s": median(rates[name]["train"]),
                       "infer_jets_per_s": median(rates[name]["infer"]),
                       "train_rounds": [round(x, 1) for x in rates[name]["train"]],
                       "infer_rounds": [round(x, 1) for x in rates[name]["infer"]]}
        if args.profile and device.type == "cpu":
            entry[name]["train_profile"] = train_profile(timer.model, timer.call, timer.train_b[:2])
        if device.type == "cpu" and not args.no_memory:
            entry[name]["train_peak_mib_cpu"] = cpu_memory(name, "train", args)
            entry[name]["infer_peak_mib_cpu"] = cpu_memory(name, "infer", args)
    if reference is not None:
        ours, ref = entry[f"jettag:{jettag}"], entry[reference]
        entry["ratio_train"] = round(ours["train_jets_per_s"] / ref["train_jets_per_s"], 2)
        entry["ratio_infer"] = round(ours["infer_jets_per_s"] / ref["infer_jets_per_s"], 2)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epoch-jets", type=int, default=8192, help="jets in the sample (one epoch)")
    parser.add_argument("--train-batches", type=int, default=4, help="batches timed per training round")
    parser.add_argument("--infer-batches", type=int, default=4, help="batches (2x size) per inference round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per pair")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown (CPU)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "models_result.json"))
    parser.add_argument("--table", default=str(ROOT / "benchmarks" / "models.md"), help="markdown table")
    parser.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        config, mode, batch, n_batches, seed, epoch = args.memory_child
        memory_child(config, mode, int(batch), int(n_batches), int(seed), int(epoch))
        return 0

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    amp = torch.bfloat16 if cuda else None
    torch.manual_seed(args.seed)
    lengths, sample = make_sample(args.epoch_jets, args.seed)
    train_idx = plan_batches(lengths, args.batch, args.train_batches, args.seed)
    infer_idx = plan_batches(lengths, 2 * args.batch, args.infer_batches, args.seed + 1)
    batches = ([cut(sample, lengths, i) for i in train_idx], [cut(sample, lengths, i) for i in infer_idx])
    result = {
        "command": " ".join(["python", "benchmarks/models.py", *sys.argv[1:]]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "uptime_start": uptime(),
        "settings": {"device": str(device), "precision": "bf16 autocast" if amp else "fp32",
                     "batch_size": args.batch, "threads": args.threads, "epoch_jets": args.epoch_jets,
                     "train_batches": args.train_batches, "infer_batches": args.infer_batches,
                     "rounds": args.rounds, "lengths": "N(55, 18) rounded, clipped to [5, 128]",
                     "padding": "each batch to its longest jet rounded up to 8, same batches for both sides",
                     "train_P": [b[0].shape[-1] for b in batches[0]],
                     "infer_P": [b[0].shape[-1] for b in batches[1]]},
        "pairs": {},
    }
    have_authors = authors_available()
    for name in args.models:
        reference = PAIRS[name]
        if reference and reference.startswith("authors:") and not have_authors:
            print(f"{name}: the MIParT authors' file is not present ($JETTAG_MIPART_REFERENCE or "
                  ".reference/): comparison skipped, jettag timed alone", flush=True)
            result["pairs"][name] = {"reference": f"skipped: {reference} not present"}
            reference = None
        entry = compare(name, reference, batches, device, amp, args)
        result["pairs"].setdefault(name, {}).update(entry)
        ratios = {k: v for k, v in entry.items() if k.startswith("ratio")}
        print(name, json.dumps(ratios or entry), flush=True)
        table = write_results(result, args, cuda, done=False)
    if {"mipart", "part"} <= set(args.models):
        # jettag MIParT against jettag ParT, alternating in the same rounds: rates of different pairs
        # above were taken minutes apart, under whatever load the machine had then
        quick = argparse.Namespace(**{**vars(args), "no_memory": True, "profile": False,
                                      "rounds": max(5, args.rounds)})
        entry = compare("mipart", "jettag:part", batches, device, amp, quick)
        result["mipart_vs_part"] = entry
        print("mipart vs part", json.dumps({"ratio_train": entry["ratio_train"]}), flush=True)
    table = write_results(result, args, cuda, done=True)
    print(table)
    return 0


def write_results(result: dict, args: argparse.Namespace, cuda: bool, done: bool) -> str:
    """Write the JSON and the table after every pair, so an interrupted run keeps what it measured."""
    if not cuda:
        result["gpu"] = "owed: no GPU in this session; rerun this script on a CUDA machine (bf16 autocast)."
    result["uptime_end"] = uptime()
    result["complete"] = done
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(result)
    Path(args.table).write_text(table)
    return table


def reference_name(entry: dict) -> str | None:
    """The reference's key ("weaver:part", "authors:mipart", ...) in a pair's entry, None if timed alone."""
    return next((k for k in entry if ":" in k and not k.startswith("jettag:")), None)


def round_ratio_range(entry: dict, name: str, mode: str) -> tuple[float, float]:
    """Lowest and highest ratio of jettag's rate to the reference's over the rounds, each round's two
    passes taken back to back (``mode``: "train" or "infer")."""
    ref = entry[reference_name(entry)][f"{mode}_rounds"]
    ours = entry[f"jettag:{name}"][f"{mode}_rounds"]
    ratios = [a / b for a, b in zip(ours, ref)]
    return round(min(ratios), 2), round(max(ratios), 2)


def markdown_table(result: dict) -> str:
    lines = [f"# Model speed: jettag vs reference code ({result['date_utc']})", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']['cpu']}, "
             f"{result['machine']['nproc']} cores, torch {result['machine']['torch']}, "
             f"{result['settings']['threads']} threads, {result['settings']['precision']}  ",
             f"Load: {result['uptime_start']} -> {result['uptime_end']}", "",
             *([] if result.get("complete", True)
               else ["**Run interrupted: only the pairs below were measured.**", ""]),
             "| model | reference | train jets/s (ref -> jettag) | ratio | infer jets/s (ref -> jettag) "
             "| ratio | train peak MiB (ref -> jettag) |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in result["pairs"].items():
        ours = entry[f"jettag:{name}"]
        ref_name = reference_name(entry)
        ref = entry.get(ref_name, {}) if ref_name else {}
        ref_label = ref_name or entry.get("reference", "none")

        train, infer, peak = (f"{ref.get(k, '-')} -> {ours.get(k, '-')}"
                              for k in ("train_jets_per_s", "infer_jets_per_s", "train_peak_mib_cpu"))
        lines.append(f"| {name} | {ref_label} | {train} | {entry.get('ratio_train', '-')} | {infer} | "
                     f"{entry.get('ratio_infer', '-')} | {peak} |")
    lines += ["", "Targets (jettag over its reference on the 2-core CPU):", ""]
    for name, (train_t, infer_t) in TARGETS.items():
        entry = result["pairs"].get(name, {})
        if "ratio_train" not in entry:
            lines.append(f"- {name}: not measured beside its reference")
            continue
        verdict = []
        for what, mode, t in (("train", "train", train_t), ("inference", "infer", infer_t)):
            ratio, (low, high) = entry[f"ratio_{mode}"], round_ratio_range(entry, name, mode)
            met = "NOT met" if ratio < t else "met" if low >= t else "met by the median, not in every round"
            verdict.append(f"{what} {ratio}x (rounds {low}-{high}x) vs >= {t}x: {met}")
        lines.append(f"- {name}: " + "; ".join(verdict))
    head = result.get("mipart_vs_part")
    if head:
        mi, part = head["jettag:mipart"], head["jettag:part"]
        verdict = "met" if head["ratio_train"] >= 1.0 else "NOT met"
        lines.append(f"- jettag MIParT training at least as fast as jettag ParT (the two alternating in the "
                     f"same {len(mi['train_rounds'])} rounds): {mi['train_jets_per_s']} vs "
                     f"{part['train_jets_per_s']} jets/s, ratio {head['ratio_train']}: {verdict}")
    lines += ["", "Both sides of a pair run in this one process, alternating, with the same torch settings "
              "(threads, fp32, AdamW); no allocator tuning (e.g. glibc mallopt) for either side. "
              "The machine is shared: the load above hits both sides alike, so the ratios are the result, "
              "the absolute rates are not.", "",
              f"GPU: {result.get('gpu', 'measured above')}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
