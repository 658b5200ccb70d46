"""The training loop, kept readable in the spirit of nanoGPT: one function, top to bottom.

``train(cfg, run_dir)`` builds data, model, optimizer and schedule from a resolved config and runs
epochs of optimizer steps. What makes a run survive:

- ``checkpoints/last`` holds the model, the optimizer (incl. Lookahead slow weights), the schedule
  step, every RNG state and the data position (epoch, batch index). The loader's batch order
  depends only on (seed, epoch), so a resumed run skips the batches already seen and continues
  bit for bit (``resume=True``; in deterministic mode the final weights equal an uninterrupted
  run's).
- ``checkpoints/best`` is the model with the best validation ``best_metric``; early stopping
  watches the same metric.
- ``log.csv`` and TensorBoard events get one row per ``log_every`` steps and per validation.

Distributed (torchrun): each rank trains on its shard, DDP averages gradients, validation metrics
are reduced exactly over ranks (``evaluate_tensors``), and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jettag.data import formats
from jettag.data.kinds import TensorBatch, get_kind
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.evaluate.metrics import evaluate_scores
from jettag.train import checkpoint as ckpt
from jettag.train import distributed as D
from jettag.train.config import save_config
from jettag.train.datasets import (
    check_streaming,
    load_splits,
    resolve_data_path,
    stream_source,
    use_streaming,
)
from jettag.train.optim import build_optimizer, find_head, param_groups
from jettag.train.schedule import Scheduler, ScheduleSpec

LOG_FIELDS = ["time", "epoch", "step", "split", "loss", "acc", "auc", "lr", "jets_per_s"]


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
        from tqdm import tqdm

        it = tqdm(batches, desc="predict", unit="batch", leave=False)
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
    """Loss (mean cross entropy), and the standard metrics, over all of ``data`` (all ranks)."""
    probs, labels = predict_tensors(model, data, batch_size, info, bf16)
    eps = 1e-12
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None))))
    metrics = {"loss": loss}
    try:
        metrics.update(evaluate_scores(labels, probs, classes))
    except ValueError:  # e.g. a tiny validation split with one class: keep loss and accuracy
        metrics["acc"] = float(np.mean(probs.argmax(1) == labels))
    return metrics


class RunLogger:
    """CSV + TensorBoard logging on rank 0 (appends on resume)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        path = run_dir / "log.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="")  # closed in close()
        self.csv = csv.DictWriter(self.file, fieldnames=LOG_FIELDS, extrasaction="ignore")
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
            for key in ("loss", "acc", "auc", "lr", "jets_per_s"):
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


def _init_from(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Fine-tuning: load the backbone of ``train.init_from``'s best weights, keep the new head fresh."""
    src_dir = Path(cfg["train"]["init_from"])
    from jettag.train.config import read_config

    src_cfg = read_config(src_dir)
    if src_cfg["model"]["name"] != cfg["model"]["name"]:
        raise ckpt.CheckpointError(
            f"{src_dir}: init_from run has model {src_cfg['model']['name']!r}, "
            f"this run {cfg['model']['name']!r}"
        )
    ck_dir = src_dir / "checkpoints"
    which = "best" if (ck_dir / "best.json").is_file() else "last"
    meta = ckpt.read_meta(ck_dir, which)
    weights = ckpt._load_tensors(ck_dir / f"{which}.safetensors", meta["token"])
    ckpt.load_weights(model, weights, f"{ck_dir / which}.safetensors", skip=(find_head(model),))


def train(cfg: dict[str, Any], run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir``; returns a summary (best metrics, speed)."""
    t = cfg["train"]
    info = D.setup(t["device"])
    run_dir = Path(run_dir)
    if info.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
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
    cfg["classes"] = classes

    # ---- model, then its kind of input
    if t.get("drop_path") is not None:
        cfg["model"]["overrides"]["drop_path"] = t["drop_path"]
    model = ckpt.build_model_from_config(cfg).to(info.device)
    if t["init_from"] and not resume:
        _init_from(model, cfg)
    kind = get_kind(model.input_kind)
    loader: BatchLoader | StreamingLoader
    if d["streaming"]:  # memory holds a shuffle buffer, never the dataset
        build = partial(kind.build, data_cfg=d, model=model, device="cpu")
        streams = {}
        for part in ("train", "val"):
            src, select = stream_source(cfg, part, path)
            other = classes if select is not None else list(formats.dataset_classes(src))
            if other != classes:
                raise ValueError(f"{src}: classes {other} differ from {path}: {classes}")
            size = t["batch_size"] if part == "train" else t["eval_batch_size"]
            streams[part] = StreamingLoader(
                src, build, size, kind.columns(d, model), select, shuffle=part == "train", seed=t["seed"],
                bucket=t["bucket"], rank=info.rank, world_size=info.world_size, buffer_size=d["buffer_size"],
                device=info.device)
        loader, val_data = streams["train"], streams["val"]
        counts = loader.label_counts(len(classes)) if t["class_balanced"] else None
    else:
        train_data = kind.build(splits["train"], d, model, info.device, source=f"{d['path']} (train split)")
        val_data = kind.build(splits["val"], d, model, info.device, source=f"{d['path']} (val split)")
        loader = BatchLoader(train_data, t["batch_size"], shuffle=True, seed=t["seed"], bucket=t["bucket"],
                             rank=info.rank, world_size=info.world_size)
        counts = np.bincount(train_data.labels.cpu().numpy(), minlength=len(classes))

    # ---- optimizer, schedule
    groups = param_groups(model, t["lr"], t["weight_decay"], t["lr_head"], t["freeze_backbone"])
    optimizer = build_optimizer(t["optimizer"], groups, betas=tuple(t["betas"]))
    steps_per_epoch = math.ceil(len(loader) / t["grad_accum"])
    total_steps = t["epochs"] * steps_per_epoch
    scheduler = Scheduler(optimizer, ScheduleSpec(**t["schedule"]), total_steps)
    weight = balanced_weights(counts).to(info.device) if t["class_balanced"] else None
    n_params = sum(p.numel() for p in model.parameters())

    # ---- resume
    epoch, batch_pos, step, best, bad_epochs = 0, 0, 0, None, 0
    ck_dir = run_dir / "checkpoints"
    if resume:
        meta, state = ckpt.load_checkpoint(ck_dir, "last", model, cfg["model"]["name"], with_state=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        epoch, batch_pos, step = meta["epoch"], meta["batch"], meta["step"]
        best, bad_epochs = meta.get("best"), meta.get("bad_epochs", 0)
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
    higher_better = t["best_metric"] in ("acc", "auc")

    def save_last(e: int, b: int) -> None:
        if not info.is_main:
            return
        meta = {"model": cfg["model"]["name"], "epoch": e, "batch": b, "step": step, "best": best,
                "bad_epochs": bad_epochs, "classes": classes, "n_params": n_params}
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
            from tqdm import tqdm

            pbar = tqdm(total=n_batches, initial=batch_pos, desc=f"epoch {epoch + 1}/{t['epochs']}",
                        unit="batch", dynamic_ncols=True)
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
        logger.log({"epoch": epoch, "step": step, "split": "val", "loss": val["loss"], "acc": val.get("acc"),
                    "auc": val.get("auc"), "lr": optimizer.param_groups[0]["lr"],
                    "jets_per_s": epoch_jets / max(elapsed, 1e-9)})
        score = val.get(t["best_metric"], val["loss"])
        improved = best is None or (score > best if higher_better else score < best)
        if improved:
            best, bad_epochs = score, 0
            if info.is_main:
                ckpt.save_checkpoint(ck_dir, "best", model, {
                    "model": cfg["model"]["name"], "epoch": epoch + 1, "step": step, "classes": classes,
                    "val": val, "n_params": n_params})
        else:
            bad_epochs += 1
        summary["val"] = val
        epoch, batch_pos = epoch + 1, 0
        save_last(epoch, 0)
        if info.is_main and t["progress"]:
            print(f"epoch {epoch}: val loss {val['loss']:.4f} acc {val.get('acc', float('nan')):.4f} "
                  f"auc {val.get('auc', float('nan')):.4f} ({epoch_jets / max(elapsed, 1e-9):.0f} jets/s)")
        if t["early_stopping"] and bad_epochs >= t["early_stopping"]:
            break
    logger.close()
    summary.update(step=step, epoch=epoch, best=best,
                   jets_per_s=jets_seen / train_time if train_time > 0 else float("nan"))
    D.barrier(info)
    return summary
