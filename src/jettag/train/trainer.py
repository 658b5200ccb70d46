"""The training loop, kept readable in the spirit of nanoGPT: one function, top to bottom.

``train(cfg, run_dir)`` checks the whole config (``config.check``) and the run directory, then
builds data, model, optimizer and schedule and runs epochs of optimizer steps. A run directory
that already holds a run is refused unless the run is resumed (``resume=True``) or replaced
(``overwrite=True``: its config, log, checkpoints, TensorBoard events and report are deleted first),
so two runs never share one ``log.csv`` or mix checkpoints. What makes a run survive:

- ``checkpoints/last`` holds the model, the optimizer (incl. Lookahead slow weights), the schedule
  step, every RNG state and the data position (epoch, batch index). The loader's batch order
  depends only on (seed, epoch), so a resumed run skips the batches already seen and continues
  bit for bit (``resume=True``; in deterministic mode the final weights equal an uninterrupted
  run's).
- ``checkpoints/best`` is the model with the best validation ``best_metric`` (its direction from
  ``config.BEST_METRICS``); early stopping watches the same metric (``BestTracker``).
- ``log.csv`` and TensorBoard events get one row per ``log_every`` steps and per validation.

Distributed (torchrun): each rank trains on its shard, DDP averages gradients, validation metrics
are reduced exactly over ranks (``evaluate_tensors``), and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jettag.data import formats
from jettag.data.kinds import TensorBatch, get_kind
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.data.store import JetDataError
from jettag.evaluate.metrics import background_index, evaluate_scores, rejection
from jettag.train import checkpoint as ckpt
from jettag.train import distributed as D
from jettag.train.config import BEST_METRICS, ConfigError, check, read_config, save_config
from jettag.train.datasets import (
    check_class_counts,
    check_streaming,
    load_splits,
    resolve_data_path,
    stream_source,
    use_streaming,
)
from jettag.train.optim import build_optimizer, find_head, param_groups
from jettag.train.schedule import Scheduler, ScheduleSpec

LOG_FIELDS = ["time", "epoch", "step", "split", "loss", "acc", "auc", "rej50", "rej30", "lr", "jets_per_s"]

#: what a run writes into its directory (all of it is deleted by ``overwrite``)
RUN_FILES = ("config.yaml", "config.yaml.tmp", "log.csv", "checkpoints", "tensorboard", "report")


def autocast_context(device: torch.device, bf16: bool | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU (``"auto"`` = on when the device is CUDA); nothing on CPU."""
    enabled = (device.type == "cuda") if bf16 == "auto" else bool(bf16) and device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def forward(model: nn.Module, batch: TensorBatch) -> torch.Tensor:
    """Logits of a batch of any input kind."""
    return model(*batch.inputs())


@torch.no_grad()
def predict_tensors(
    model: nn.Module,
    data: Any,
    batch_size: int,
    info: D.DistInfo | None = None,
    bf16: bool | str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels of every jet of ``data`` (a dataset of the model's kind), in
    jet order.

    With several ranks each scores its shard and the (index, probs) rows are gathered, so every rank
    returns the full, identically ordered arrays. ``data`` may also be a ``StreamingLoader`` built
    with ``shuffle=False``: its parts are scored one at a time.
    """
    if isinstance(data, StreamingLoader):
        return _predict_stream(model, data, batch_size, info or D.DistInfo(), bf16)
    info = info or D.DistInfo(device=data.device)
    loader = BatchLoader(data, batch_size, shuffle=False, bucket=True, rank=info.rank,
                         world_size=info.world_size)
    was_training = model.training
    model.eval()
    idx_parts, prob_parts = [], []
    batches = loader.batch_indices()
    it = batches
    if progress and info.is_main:
        from jettag.progress import progress as progress_report

        it = progress_report(batches, desc="predict", unit="batch", leave=False)
    for index in it:
        batch = data.batch(index).to(info.device)
        with autocast_context(info.device, bf16):
            logits = forward(model, batch)
        prob_parts.append(torch.softmax(logits.float(), dim=1).cpu())
        idx_parts.append(torch.as_tensor(index, dtype=torch.int64))
    model.train(was_training)
    idx = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
    probs = torch.cat(prob_parts) if prob_parts else torch.zeros(0, 1)
    idx = D.all_gather_rows(idx, info)
    probs = D.all_gather_rows(probs.to(torch.float64), info)
    order = torch.argsort(idx)
    labels = data.labels.cpu()[idx[order]]
    return probs[order].numpy(), labels.numpy()


def _predict_stream(model: nn.Module, stream: StreamingLoader, batch_size: int, info: D.DistInfo,
                    bf16: bool | str) -> tuple[np.ndarray, np.ndarray]:
    """``predict_tensors`` over a stream: each rank scores its parts, rows are gathered in jet order."""
    one = D.DistInfo(device=info.device)  # within a part, this rank alone
    idx_parts, prob_parts, label_parts = [], [], []
    for first, part in stream.parts():
        probs, labels = predict_tensors(model, part, batch_size, one, bf16)
        idx_parts.append(torch.arange(first, first + len(part), dtype=torch.int64))
        prob_parts.append(torch.from_numpy(probs))
        label_parts.append(torch.from_numpy(labels).to(torch.int64))
    idx = D.all_gather_rows(torch.cat(idx_parts), info)
    probs = D.all_gather_rows(torch.cat(prob_parts), info)
    labels = D.all_gather_rows(torch.cat(label_parts), info)
    order = torch.argsort(idx)
    return probs[order].numpy(), labels[order].numpy()


def evaluate_tensors(
    model: nn.Module, data: Any, classes: list[str], batch_size: int, info: D.DistInfo | None = None,
    bf16: bool | str = "auto",
) -> dict[str, float]:
    """Loss (mean cross entropy) and the standard metrics over all of ``data`` (all ranks), plus
    ``rej50``/``rej30`` of a multi-class run (``summary_rejection``), so that every key of
    ``BEST_METRICS`` is present (NaN where scores are not finite, e.g. a diverged model)."""
    probs, labels = predict_tensors(model, data, batch_size, info, bf16)
    eps = 1e-12
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None))))
    metrics = {"loss": loss, "acc": float(np.mean(probs.argmax(1) == labels))}
    if np.isfinite(probs).all():
        metrics.update(evaluate_scores(labels, probs, classes))
        if len(classes) > 2:
            metrics.update(rej50=summary_rejection(labels, probs, classes, 0.5),
                           rej30=summary_rejection(labels, probs, classes, 0.3))
    for key in BEST_METRICS:
        metrics.setdefault(key, math.nan)
    return metrics


def summary_rejection(labels: np.ndarray, probs: np.ndarray, classes: list[str], efficiency: float) -> float:
    """One background rejection of a multi-class model: the geometric mean over the signal classes
    of Rej at ``efficiency`` of class X against the background B (score p_X / (p_X + p_B), on jets
    of X and B, as ``evaluate.metrics.multiclass_metrics``). The geometric mean weighs each class's
    relative gain equally (rejections of JetClass classes span four orders of magnitude). Classes
    without validation jets are skipped; NaN when none is left."""
    bkg = background_index(classes)
    is_bkg = labels == bkg
    logs = []
    for k in range(len(classes)):
        if k == bkg or not (labels == k).any() or not is_bkg.any():
            continue
        sel = (labels == k) | is_bkg
        pk, pb = probs[sel, k], probs[sel, bkg]
        denom = pk + pb
        score = np.divide(pk, denom, out=np.full_like(pk, 0.5), where=denom > 0)
        logs.append(math.log(rejection(labels[sel] == k, score, efficiency)))
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


@dataclass
class BestTracker:
    """Which validation is the best so far and when to stop early, on one metric of
    ``BEST_METRICS`` (its direction from there). NaN never counts as better; the first finite value
    always does. ``patience`` (``train.early_stopping``): stop after that many epochs in a row
    without a better value (None: never)."""

    metric: str
    patience: int | None = None
    best: float | None = None
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.metric not in BEST_METRICS:
            raise ConfigError(f"train.best_metric: unknown metric {self.metric!r}; "
                              f"known: {', '.join(BEST_METRICS)}")

    def is_better(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self.best is None:
            return True
        return score > self.best if BEST_METRICS[self.metric] else score < self.best

    def update(self, val: dict[str, float]) -> bool:
        """Record one validation; True when it is the new best."""
        score = float(val[self.metric])
        if self.is_better(score):
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


class RunLogger:
    """CSV + TensorBoard logging on rank 0 (appends on resume)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        path = run_dir / "log.csv"
        fields = LOG_FIELDS
        if path.exists():  # a resumed run keeps the columns its log.csv was started with
            with open(path, newline="") as f:
                fields = next(csv.reader(f), None) or LOG_FIELDS
        new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")  # closed in close()
        self.csv = csv.DictWriter(self.file, fieldnames=fields, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional for training itself
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.csv.writerow({"time": round(time.time(), 3), **row})
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "acc", "auc", "rej50", "rej30", "lr", "jets_per_s"):
                if row.get(key) is not None and not (isinstance(row[key], float) and math.isnan(row[key])):
                    self.tb.add_scalar(f"{row['split']}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over jets: sum_k n_k w_k = N (seed 001's
    class-balanced loss; with equal classes it is the plain loss)."""
    return balanced_weights(torch.bincount(labels.cpu(), minlength=num_classes).numpy())


def balanced_weights(counts: np.ndarray) -> torch.Tensor:
    """``class_weights`` from the jet count of each class."""
    num_classes = len(counts)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.to(torch.float32)


def _init_source(cfg: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
    """Fine-tuning: (checkpoint dir, which, meta) of ``train.init_from``'s best (else last) weights,
    checked before any data is read."""
    src_dir = Path(cfg["train"]["init_from"])
    src_cfg = read_config(src_dir)
    if src_cfg["model"]["name"] != cfg["model"]["name"]:
        raise ckpt.CheckpointError(
            f"{src_dir}: init_from run has model {src_cfg['model']['name']!r}, "
            f"this run {cfg['model']['name']!r}"
        )
    ck_dir = src_dir / "checkpoints"
    which = "best" if (ck_dir / "best.json").is_file() else "last"
    return ck_dir, which, ckpt.read_meta(ck_dir, which)


def _init_from(model: nn.Module, source: tuple[Path, str, dict[str, Any]]) -> None:
    """Fine-tuning: load the backbone of the source run's weights, keep the new head fresh."""
    ck_dir, which, meta = source
    weights = ckpt._load_tensors(ck_dir / f"{which}.safetensors", meta["token"])
    ckpt.load_weights(model, weights, f"{ck_dir / which}.safetensors", skip=(find_head(model),))


def _holds_files(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(p.is_file() or p.is_symlink() for p in path.rglob("*"))
    return True


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Make sure a new run starts in a directory without another run's files.

    A directory holding files is refused (``ConfigError``) unless ``overwrite``; then the files a run
    writes (``RUN_FILES``) are deleted first, and anything else there is refused instead of deleted.
    Empty folders (e.g. ``checkpoints/`` of a run killed while generating its data) do not count.
    """
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} exists and is not a directory")
    used = sorted(p.name for p in run_dir.iterdir() if _holds_files(p))
    if not used:
        return
    if not overwrite:
        raise ConfigError(f"run directory {run_dir} already holds a run ({', '.join(used)}): continue it "
                          f"with --resume {run_dir}, replace it with --overwrite (deletes those files), or "
                          "choose another --run-dir")
    foreign = [n for n in used if n not in RUN_FILES]
    if foreign:
        raise ConfigError(f"run directory {run_dir} holds files that no jettag run writes "
                          f"({', '.join(foreign)}): --overwrite deletes only a run's own files; choose "
                          "another --run-dir")
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _check_resume(cfg: dict[str, Any], run_dir: Path) -> None:
    """The ``last`` checkpoint's metadata checked against the config before any data is read."""
    ck_dir = run_dir / "checkpoints"
    if not (ck_dir / "last.json").is_file():
        raise ckpt.CheckpointError(
            f"{run_dir} has no checkpoint yet (killed before the first save), so there is nothing to "
            f"resume: start it again with --overwrite (jettag train {cfg.get('recipe', 'RECIPE')} ... "
            f"--run-dir {run_dir} --overwrite)")
    meta = ckpt.read_meta(ck_dir, "last", resume=True)
    if meta["model"] != cfg["model"]["name"]:
        raise ckpt.CheckpointError(f"{ck_dir / 'last.json'}: checkpoint is for model {meta['model']!r}, "
                                   f"the config says {cfg['model']['name']!r}")
    metric = meta.get("best_metric", cfg["train"]["best_metric"])
    if metric != cfg["train"]["best_metric"]:
        raise ConfigError(f"train.best_metric={cfg['train']['best_metric']!r}, but {run_dir} chose its best "
                          f"checkpoint by {metric!r} so far: resume with best_metric={metric}")


def train(cfg: dict[str, Any], run_dir: str | Path, resume: bool = False, overwrite: bool = False
          ) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir``; returns a summary (best metrics, speed).

    ``resume`` continues the run in ``run_dir`` from its ``last`` checkpoint; otherwise ``run_dir``
    must not hold another run unless ``overwrite`` (see ``prepare_run_dir``). The config, the run
    directory, a resume checkpoint and an ``init_from`` source are all checked before any data is
    read or generated.
    """
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    check(cfg)
    t = cfg["train"]
    run_dir = Path(run_dir)
    if resume:
        _check_resume(cfg, run_dir)
    init_source = _init_source(cfg) if t["init_from"] and not resume else None
    info = D.setup(t["device"])
    problem = None
    if info.is_main:
        try:
            if not resume:
                prepare_run_dir(run_dir, overwrite)
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        except ConfigError as err:
            problem = str(err)
    problem = D.broadcast_object(problem, info)  # every rank stops, not only rank 0
    if problem:
        raise ConfigError(problem)
    if t["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(t["seed"])
    np.random.seed(t["seed"])  # noqa: NPY002  (legacy global state only for third-party code)

    # ---- data (rank 0 generates a sample if needed, the others wait for its path)
    path = None
    if info.is_main:
        path = str(resolve_data_path(cfg["data"]["path"], cfg["data"]))
    D.barrier(info)
    path = D.broadcast_object(path, info)
    d = cfg["data"]
    d["streaming"] = use_streaming(d, path)  # resolved, so that config.yaml says how the split was made
    if d["streaming"]:
        check_streaming(d)
        splits, classes = {}, list(formats.dataset_classes(path))
    else:
        splits, classes = load_splits(cfg, ("train", "val"), path=path)
        split_counts = {part: np.bincount(ak.to_numpy(jets["label"]).astype(np.int64), minlength=len(classes))
                        for part, jets in splits.items()}
        check_class_counts(split_counts, classes, str(d["path"]))  # before any model is built
    cfg["classes"] = classes

    # ---- model, then its kind of input
    model = ckpt.build_model_from_config(cfg).to(info.device)
    if init_source is not None:
        _init_from(model, init_source)
    kind = get_kind(model.input_kind)
    loader: BatchLoader | StreamingLoader
    if d["streaming"]:  # memory holds a shuffle buffer, never the dataset
        build = partial(kind.build, data_cfg=d, model=model, device="cpu")
        streams = {}
        for part in ("train", "val"):
            src, select = stream_source(cfg, part, path)
            other = classes if select is not None else list(formats.dataset_classes(src))
            if other != classes:
                raise JetDataError(f"{src}: classes {other} differ from {path}: {classes}")
            size = t["batch_size"] if part == "train" else t["eval_batch_size"]
            streams[part] = StreamingLoader(
                src, build, size, kind.columns(d, model), select, shuffle=part == "train", seed=t["seed"],
                bucket=t["bucket"], rank=info.rank, world_size=info.world_size, buffer_size=d["buffer_size"],
                device=info.device)
        loader, val_data = streams["train"], streams["val"]
        split_counts = {part: streams[part].label_counts(len(classes)) for part in streams}
        check_class_counts(split_counts, classes, str(d["path"]))  # from the label column alone
    else:
        train_data = kind.build(splits["train"], d, model, info.device, source=f"{d['path']} (train split)")
        val_data = kind.build(splits["val"], d, model, info.device, source=f"{d['path']} (val split)")
        loader = BatchLoader(train_data, t["batch_size"], shuffle=True, seed=t["seed"], bucket=t["bucket"],
                             rank=info.rank, world_size=info.world_size)
    counts = split_counts["train"]

    # ---- optimizer, schedule
    groups = param_groups(model, t["lr"], t["weight_decay"], t["lr_head"], t["freeze_backbone"])
    optimizer = build_optimizer(t["optimizer"], groups, betas=tuple(t["betas"]))
    steps_per_epoch = math.ceil(len(loader) / t["grad_accum"])
    total_steps = t["epochs"] * steps_per_epoch
    scheduler = Scheduler(optimizer, ScheduleSpec(**t["schedule"]), total_steps)
    weight = balanced_weights(counts).to(info.device) if t["class_balanced"] else None
    n_params = sum(p.numel() for p in model.parameters())

    # ---- resume
    epoch, batch_pos, step = 0, 0, 0
    tracker = BestTracker(t["best_metric"], t["early_stopping"])
    ck_dir = run_dir / "checkpoints"
    if resume:
        meta, state = ckpt.load_checkpoint(ck_dir, "last", model, cfg["model"]["name"], with_state=True)
        if meta["classes"] != classes:
            raise ckpt.CheckpointError(f"{ck_dir / 'last.json'}: checkpoint classes {meta['classes']} differ "
                                       f"from the data's {classes} ({cfg['data']['path']})")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        epoch, batch_pos, step = meta["epoch"], meta["batch"], meta["step"]
        tracker.best, tracker.bad_epochs = meta["best"], meta["bad_epochs"]
    elif info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    if t["compile"]:
        train_model = torch.compile(train_model)

    logger = RunLogger(run_dir, info.is_main)

    def save_last(e: int, b: int) -> None:
        if not info.is_main:
            return
        meta = {"model": cfg["model"]["name"], "epoch": e, "batch": b, "step": step, "best": tracker.best,
                "best_metric": tracker.metric, "bad_epochs": tracker.bad_epochs, "classes": classes,
                "n_params": n_params}
        extra = {"scheduler": scheduler.state_dict(), "rng": ckpt.rng_state()}
        ckpt.save_checkpoint(ck_dir, "last", model, meta, optimizer, extra)

    summary: dict[str, Any] = {"run_dir": str(run_dir), "n_params": n_params, "jets_per_s": float("nan")}
    stop = False
    jets_seen, train_time = 0, 0.0
    model.train()
    while epoch < t["epochs"] and not stop:
        loader.set_epoch(epoch)
        n_batches = len(loader)
        batch_iter = loader.iter_from(batch_pos)  # the epoch's order from the resume position on
        pbar = None
        if info.is_main and t["progress"]:
            from jettag.progress import progress as progress_report

            pbar = progress_report(total=n_batches, initial=batch_pos, unit="batch",
                                   desc=f"epoch {epoch + 1}/{t['epochs']}")
        run_loss = run_correct = run_n = 0.0
        t0 = time.perf_counter()
        epoch_jets = 0
        i = batch_pos
        while i < n_batches:
            # one optimizer step = grad_accum micro-batches (fewer at the end of the epoch)
            micro = list(itertools.islice(batch_iter, min(t["grad_accum"], n_batches - i)))
            n_step = sum(len(m) for m in micro)
            for k, batch in enumerate(micro):
                batch = batch.to(info.device)
                sync = k == len(micro) - 1 or not info.distributed
                ctx = contextlib.nullcontext() if sync else train_model.no_sync()
                with ctx, autocast_context(info.device, t["bf16"]):
                    logits = forward(train_model, batch)
                    loss = F.cross_entropy(logits.float(), batch.label, weight=weight,
                                           label_smoothing=t["label_smoothing"])
                    (loss * len(batch) / n_step).backward()
                run_loss += float(loss.detach()) * len(batch)
                run_correct += float((logits.argmax(1) == batch.label).sum())
                run_n += len(batch)
            if t["grad_clip"]:
                nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            i += len(micro)
            epoch_jets += n_step * info.world_size
            if pbar is not None:
                elapsed = time.perf_counter() - t0
                pbar.update(len(micro))
                pbar.set_postfix(loss=f"{run_loss / run_n:.4f}", acc=f"{run_correct / run_n:.3f}",
                                 jets_s=f"{epoch_jets / max(elapsed, 1e-9):.0f}")
            if step % t["log_every"] == 0:
                elapsed = time.perf_counter() - t0
                logger.log({"epoch": epoch, "step": step, "split": "train", "loss": run_loss / run_n,
                            "acc": run_correct / run_n, "lr": optimizer.param_groups[0]["lr"],
                            "jets_per_s": epoch_jets / max(elapsed, 1e-9)})
            if t["save_every"] and step % t["save_every"] == 0:
                save_last(epoch, i)
            if t["max_steps"] is not None and step >= t["max_steps"]:
                stop = True
                break
        batch_iter.close()  # a stream frees its last buffer before validation
        if pbar is not None:
            pbar.close()
        elapsed = time.perf_counter() - t0
        jets_seen += epoch_jets
        train_time += elapsed
        if stop and i < n_batches:  # stopped mid-epoch: save the exact position and leave
            save_last(epoch, i)
            break
        # ---- validation at the end of each epoch
        val = evaluate_tensors(model, val_data, classes, t["eval_batch_size"], info, t["bf16"])
        logger.log({"epoch": epoch, "step": step, "split": "val", **{k: val[k] for k in BEST_METRICS},
                    "lr": optimizer.param_groups[0]["lr"], "jets_per_s": epoch_jets / max(elapsed, 1e-9)})
        if tracker.update(val) and info.is_main:
            ckpt.save_checkpoint(ck_dir, "best", model, {
                "model": cfg["model"]["name"], "epoch": epoch + 1, "step": step, "classes": classes,
                "best_metric": tracker.metric, "val": val, "n_params": n_params})
        summary["val"] = val
        epoch, batch_pos = epoch + 1, 0
        save_last(epoch, 0)
        if info.is_main and t["progress"]:
            print(f"epoch {epoch}: val loss {val['loss']:.4f} acc {val.get('acc', float('nan')):.4f} "
                  f"auc {val.get('auc', float('nan')):.4f} ({epoch_jets / max(elapsed, 1e-9):.0f} jets/s)")
        if tracker.stop:
            break
    logger.close()
    summary.update(step=step, epoch=epoch, best=tracker.best, best_metric=tracker.metric,
                   jets_per_s=jets_seen / train_time if train_time > 0 else float("nan"))
    D.barrier(info)
    return summary
