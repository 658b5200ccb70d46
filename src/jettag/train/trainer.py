"""The training loop, kept readable in the spirit of nanoGPT.

``train(cfg, run_dir)`` reads top to bottom: check the whole config (``config.check``) and the run
directory, ``load_data`` (classes, splits), build the model, ``build_batches`` of the model's input
kind, a ``Run`` (optimizer, schedule, position, checkpoint writes), then epochs of ``train_epoch``
followed by validation. A run directory
that already holds a run is refused unless the run is resumed (``resume=True``) or replaced
(``overwrite=True``: its config, log, checkpoints, TensorBoard events and report are deleted first),
so two runs never share one ``log.csv`` or mix checkpoints. What makes a run survive:

- ``checkpoints/last`` holds the model, the optimizer (incl. Lookahead slow weights), the schedule
  step, every RNG state and the data position (epoch, batch index). The loader's batch order
  depends only on (seed, epoch), so a resumed run skips the batches already seen and continues
  bit for bit (``resume=True``; in deterministic mode the final weights equal an uninterrupted
  run's).
- ``checkpoints/best`` is the model with the best validation ``best_metric`` (its direction from
  ``evaluate.metrics.BEST_METRICS``); early stopping watches the same metric (``BestTracker``).
- ``log.csv`` and TensorBoard events get one row per ``log_every`` steps and per validation.

Distributed (torchrun): each rank trains on its shard, DDP averages gradients, validation gathers
every rank's predictions (``evaluate.scoring.evaluate_tensors``), and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import itertools
import math
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
from jettag.data.dataset import (
    check_class_counts,
    check_streaming,
    load_splits,
    resolve_data_path,
    stream_source,
    use_streaming,
)
from jettag.data.kinds import get_kind
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.data.store import JetDataError
from jettag.evaluate.metrics import BEST_METRICS
from jettag.evaluate.scoring import autocast_context, evaluate_tensors, forward
from jettag.models.profile import count_parameters
from jettag.progress import progress
from jettag.train import checkpoint as ckpt
from jettag.train import distributed as D
from jettag.train.config import ConfigError, check, read_config, save_config
from jettag.train.optim import build_optimizer, find_head, param_groups
from jettag.train.rundir import RunLogger, prepare_run_dir
from jettag.train.schedule import Scheduler, ScheduleSpec


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


def balanced_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency class weights from the jet count of each class, normalised to mean 1 over
    jets: sum_k n_k w_k = N (seed 001's class-balanced loss; with equal classes the plain loss)."""
    num_classes = len(counts)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.to(torch.float32)


def _init_source(cfg: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
    """Fine-tuning: (checkpoint dir, which, meta) of ``train.init_from``'s best (else last) weights,
    checked before any data is read."""
    src_dir = Path(cfg["train"]["init_from"])
    from jettag.train.transfer import check_init_source

    src_cfg = read_config(src_dir)
    if src_cfg["model"]["name"] != cfg["model"]["name"]:
        raise ckpt.CheckpointError(
            f"{src_dir}: init_from run has model {src_cfg['model']['name']!r}, "
            f"this run {cfg['model']['name']!r}"
        )
    check_init_source(cfg, src_dir, src_cfg)  # same features, a replaceable head
    ck_dir = src_dir / "checkpoints"
    which = "best" if (ck_dir / "best.json").is_file() else "last"
    return ck_dir, which, ckpt.read_meta(ck_dir, which)


def _init_from(model: nn.Module, source: tuple[Path, str, dict[str, Any]]) -> None:
    """Fine-tuning: load the backbone of the source run's weights, keep the new head fresh."""
    ck_dir, which, meta = source
    weights = ckpt._load_tensors(ck_dir / f"{which}.safetensors", meta["token"])
    ckpt.load_weights(model, weights, f"{ck_dir / which}.safetensors", skip=(find_head(model),))


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


@dataclass
class RunData:
    """The data of a run: its classes and the training and validation batches of the model's kind."""

    classes: list[str]
    loader: BatchLoader | StreamingLoader
    val: Any  # a dataset of the model's kind, or a StreamingLoader
    counts: np.ndarray  # training jets per class


def load_data(cfg: dict[str, Any], info: D.DistInfo) -> tuple[Any, list[str], dict[str, Any]]:
    """(resolved path, classes, in-memory splits or {} when streaming); rank 0 generates a sample if
    needed, the others wait for its path. In memory, the class counts of every split are checked
    here, before any model is built."""
    d = cfg["data"]
    path = str(resolve_data_path(d["path"], d)) if info.is_main else None
    D.barrier(info)
    path = D.broadcast_object(path, info)
    d["streaming"] = use_streaming(d, path)  # resolved, so that config.yaml says how the split was made
    if d["streaming"]:
        check_streaming(d)
        return path, list(formats.dataset_classes(path)), {}
    splits, classes = load_splits(cfg, ("train", "val"), path=path)
    counts = {part: np.bincount(ak.to_numpy(jets["label"]).astype(np.int64), minlength=len(classes))
              for part, jets in splits.items()}
    check_class_counts(counts, classes, str(d["path"]))
    return path, classes, splits


def build_batches(cfg: dict[str, Any], model: nn.Module, path: Any, classes: list[str],
                  splits: dict[str, Any], info: D.DistInfo) -> RunData:
    """Training and validation batches of the model's input kind: in memory (``BatchLoader``), or
    streamed from row groups with memory bounded by ``data.buffer_size`` (``StreamingLoader``)."""
    t, d = cfg["train"], cfg["data"]
    kind = get_kind(model.input_kind)
    if not d["streaming"]:
        train_data = kind.build(splits["train"], d, model, info.device, source=f"{d['path']} (train split)")
        val = kind.build(splits["val"], d, model, info.device, source=f"{d['path']} (val split)")
        loader = BatchLoader(train_data, t["batch_size"], shuffle=True, seed=t["seed"], bucket=t["bucket"],
                             rank=info.rank, world_size=info.world_size)
        counts = np.bincount(train_data.labels.cpu().numpy(), minlength=len(classes))
        return RunData(classes, loader, val, counts)
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
    counts = {part: stream.label_counts(len(classes)) for part, stream in streams.items()}
    check_class_counts(counts, classes, str(d["path"]))  # from the label column alone
    return RunData(classes, streams["train"], streams["val"], counts["train"])


@dataclass
class Position:
    """Where a run is: epochs done, batches done in the current epoch, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


class Run:
    """One training run's model, optimizer, schedule, position and files, with the two checkpoint
    writes (``last`` for resuming, ``best`` for evaluation)."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, model: nn.Module, data: RunData,
                 info: D.DistInfo) -> None:
        t = cfg["train"]
        self.cfg, self.run_dir, self.model, self.data, self.info = cfg, run_dir, model, data, info
        groups = param_groups(model, t["lr"], t["weight_decay"], t["lr_head"], t["freeze_backbone"])
        self.optimizer = build_optimizer(t["optimizer"], groups, betas=tuple(t["betas"]))
        total_steps = t["epochs"] * math.ceil(len(data.loader) / t["grad_accum"])
        self.scheduler = Scheduler(self.optimizer, ScheduleSpec(**t["schedule"]), total_steps)
        self.weight = balanced_weights(data.counts).to(info.device) if t["class_balanced"] else None
        self.n_params = count_parameters(model)
        self.pos = Position()
        self.tracker = BestTracker(t["best_metric"], t["early_stopping"])
        self.ck_dir = run_dir / "checkpoints"
        self.train_model: nn.Module = model
        if info.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        if t["compile"]:
            self.train_model = torch.compile(self.train_model)

    def resume(self) -> None:
        """Continue from ``checkpoints/last``: weights, optimizer, schedule, RNG states, position."""
        meta, state = ckpt.load_checkpoint(self.ck_dir, "last", self.model, self.cfg["model"]["name"],
                                           with_state=True)
        if meta["classes"] != self.data.classes:
            raise ckpt.CheckpointError(
                f"{self.ck_dir / 'last.json'}: checkpoint classes {meta['classes']} differ from the "
                f"data's {self.data.classes} ({self.cfg['data']['path']})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.pos = Position(meta["epoch"], meta["batch"], meta["step"])
        self.tracker.best, self.tracker.bad_epochs = meta["best"], meta["bad_epochs"]

    def save_last(self) -> None:
        if not self.info.is_main:
            return
        meta = {"model": self.cfg["model"]["name"], "epoch": self.pos.epoch, "batch": self.pos.batch,
                "step": self.pos.step, "best": self.tracker.best, "best_metric": self.tracker.metric,
                "bad_epochs": self.tracker.bad_epochs, "classes": self.data.classes,
                "n_params": self.n_params}
        extra = {"scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state()}
        ckpt.save_checkpoint(self.ck_dir, "last", self.model, meta, self.optimizer, extra)

    def save_best(self, val: dict[str, float]) -> None:
        if self.info.is_main:
            ckpt.save_checkpoint(self.ck_dir, "best", self.model, {
                "model": self.cfg["model"]["name"], "epoch": self.pos.epoch + 1, "step": self.pos.step,
                "classes": self.data.classes, "best_metric": self.tracker.metric, "val": val,
                "n_params": self.n_params})


def train_epoch(run: Run, logger: RunLogger) -> tuple[int, float, bool]:
    """Optimizer steps over the rest of the current epoch (from ``run.pos.batch``): each step is
    ``grad_accum`` micro-batches. Returns (jets seen, seconds, stopped by ``max_steps``)."""
    t, info, pos = run.cfg["train"], run.info, run.pos
    loader = run.data.loader
    loader.set_epoch(pos.epoch)
    n_batches = len(loader)
    batches = loader.iter_from(pos.batch)  # the epoch's order from the resume position on
    bar = None
    if info.is_main and t["progress"]:
        bar = progress(total=n_batches, initial=pos.batch, unit="batch",
                       desc=f"epoch {pos.epoch + 1}/{t['epochs']}")
    loss_sum = correct = seen = 0.0
    jets, t0, stopped = 0, time.perf_counter(), False
    while pos.batch < n_batches and not stopped:
        micro = list(itertools.islice(batches, min(t["grad_accum"], n_batches - pos.batch)))
        n_step = sum(len(m) for m in micro)
        for k, batch in enumerate(micro):
            batch = batch.to(info.device)
            sync = k == len(micro) - 1 or not info.distributed  # DDP all-reduces on the last micro-batch
            with (contextlib.nullcontext() if sync else run.train_model.no_sync()), \
                    autocast_context(info.device, t["bf16"]):
                logits = forward(run.train_model, batch)
                loss = F.cross_entropy(logits.float(), batch.label, weight=run.weight,
                                       label_smoothing=t["label_smoothing"])
                (loss * len(batch) / n_step).backward()
            loss_sum += float(loss.detach()) * len(batch)
            correct += float((logits.argmax(1) == batch.label).sum())
            seen += len(batch)
        if t["grad_clip"]:
            nn.utils.clip_grad_norm_(run.model.parameters(), t["grad_clip"])
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        pos.step += 1
        pos.batch += len(micro)
        jets += n_step * info.world_size
        speed = jets / max(time.perf_counter() - t0, 1e-9)
        if bar is not None:
            bar.update(len(micro))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", jets_s=f"{speed:.0f}")
        if pos.step % t["log_every"] == 0:
            logger.log({"epoch": pos.epoch, "step": pos.step, "split": "train", "loss": loss_sum / seen,
                        "acc": correct / seen, "lr": run.optimizer.param_groups[0]["lr"],
                        "jets_per_s": speed})
        if t["save_every"] and pos.step % t["save_every"] == 0:
            run.save_last()
        stopped = t["max_steps"] is not None and pos.step >= t["max_steps"]
    batches.close()  # a stream frees its last buffer before validation
    if bar is not None:
        bar.close()
    return jets, time.perf_counter() - t0, stopped


def train(cfg: dict[str, Any], run_dir: str | Path, resume: bool = False, overwrite: bool = False
          ) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir``; returns a summary (best metrics, speed).

    ``resume`` continues the run in ``run_dir`` from its ``last`` checkpoint; otherwise ``run_dir``
    must not hold another run unless ``overwrite`` (see ``rundir.prepare_run_dir``). The config, the
    run directory, a resume checkpoint and an ``init_from`` source are all checked before any data
    is read or generated.
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

    path, classes, splits = load_data(cfg, info)
    cfg["classes"] = classes
    model = ckpt.build_model_from_config(cfg).to(info.device)
    if init_source is not None:
        _init_from(model, init_source)
    run = Run(cfg, run_dir, model, build_batches(cfg, model, path, classes, splits, info), info)
    if resume:
        run.resume()
    elif info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    logger = RunLogger(run_dir, info.is_main)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "n_params": run.n_params}
    jets_seen, train_time = 0, 0.0
    model.train()
    while run.pos.epoch < t["epochs"]:
        jets, seconds, stopped = train_epoch(run, logger)
        jets_seen, train_time = jets_seen + jets, train_time + seconds
        if stopped and run.pos.batch < len(run.data.loader):  # mid-epoch: save the exact position, leave
            run.save_last()
            break
        val = evaluate_tensors(model, run.data.val, classes, t["eval_batch_size"], info, t["bf16"])
        logger.log({"epoch": run.pos.epoch, "step": run.pos.step, "split": "val",
                    **{k: val[k] for k in BEST_METRICS}, "lr": run.optimizer.param_groups[0]["lr"],
                    "jets_per_s": jets / max(seconds, 1e-9)})
        if run.tracker.update(val):
            run.save_best(val)
        summary["val"] = val
        run.pos = Position(run.pos.epoch + 1, 0, run.pos.step)
        run.save_last()
        if info.is_main and t["progress"]:
            print(f"epoch {run.pos.epoch}: val loss {val['loss']:.4f} acc {val['acc']:.4f} "
                  f"auc {val['auc']:.4f} ({jets / max(seconds, 1e-9):.0f} jets/s)")
        if stopped or run.tracker.stop:
            break
    logger.close()
    summary.update(step=run.pos.step, epoch=run.pos.epoch, best=run.tracker.best,
                   best_metric=run.tracker.metric,
                   jets_per_s=jets_seen / train_time if train_time > 0 else float("nan"))
    D.barrier(info)
    return summary
