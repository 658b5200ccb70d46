"""Scoring a model: probabilities of every jet of a dataset, the validation metrics, and a trained
run evaluated on its test split (or any dataset). The trainer, ``jettag evaluate``, ``predict`` and
the studies all score through here.

Distributed (torchrun): each rank scores its share and the (jet index, probabilities) rows are
gathered, so loss and every metric are computed once on the full, jet-ordered arrays and equal a
single process's figures.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jettag.data.kinds import TensorBatch
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.evaluate.metrics import BEST_METRICS, evaluate_scores, summary_rejection
from jettag.models.profile import count_parameters
from jettag.train import distributed as D


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


def evaluate_run(run_dir: str | Path, data: str | None = None, which: str = "best", batch_size: int = 1024,
                 info: Any = None) -> dict[str, Any]:
    """Score one run on its test split (or ``data``): labels, probs, metrics, classes, model name."""
    from jettag.data.dataset import run_jets
    from jettag.data.kinds import get_kind
    from jettag.train.checkpoint import load_run_model

    info = info or D.DistInfo()
    model, cfg = load_run_model(run_dir, which)
    model.to(info.device)
    jets, classes, source = run_jets(cfg, run_dir, data)
    tensors = get_kind(model.input_kind).build(jets, cfg["data"], model, info.device, source=source)
    probs, labels = predict_tensors(model, tensors, batch_size, info, cfg["train"].get("bf16", "auto"))
    metrics = evaluate_scores(labels, probs, classes)
    n_params = count_parameters(model)
    return {"name": Path(run_dir).name, "model": cfg["model"]["name"], "labels": labels, "probs": probs,
            "metrics": {**metrics, "params": float(n_params)}, "classes": list(classes), "config": cfg}
