"""Resume restores the early-stopping state (best validation value, epochs without improvement), not
only the weights: a run killed mid-epoch and resumed stops, and keeps its ``best`` checkpoint, exactly
where the uninterrupted run does."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jetfactory import random_jets

from jettag.data.store import write_store
from jettag.train import checkpoint as ckpt
from jettag.train import trainer
from jettag.train.config import apply_overrides, read_config, resolve
from jettag.train.schedule import ScheduleSpec, lr_factor

#: validation losses of successive epochs: best at epoch 1, then three epochs without improvement
#: (0.95 > 0.9), then one (0.97) that a run which forgot ``best`` would take for an improvement.
VAL_LOSSES = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96, 0.94]
PATIENCE = 3
STEPS_PER_EPOCH = 5  # 160 training jets (80% of 200) in batches of 32


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_store(path, random_jets(200, seed=5, max_len=12), ["QCD", "top"], "random")
    return path


@pytest.fixture
def scripted_validation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the validation pass by ``VAL_LOSSES`` in call order (across kill and resume); returns
    the list of calls so far, so a test can check how many validations ran."""
    calls: list[int] = []
    losses: Iterator[float] = iter(VAL_LOSSES)

    def fake(*_args: Any, **_kwargs: Any) -> dict[str, float]:
        calls.append(len(calls))
        return {"loss": next(losses), "acc": 0.5, "auc": 0.5, "rej50": 2.0, "rej30": 3.0}  # every metric

    monkeypatch.setattr(trainer, "evaluate_tensors", fake)
    return calls


def _cfg(store: Path, *extra: str) -> dict:
    return resolve("top_pfn", [f"data.path={store}", "data.max_len=12", f"epochs={len(VAL_LOSSES)}",
                               "batch_size=32", "progress=false", "deterministic=true",
                               f"early_stopping={PATIENCE}", "best_metric=loss", "log_every=1",
                               "train.schedule.name=flat+decay", "train.schedule.flat_fraction=0.1", *extra])


def _expected_stop() -> tuple[float, int, int]:
    """(best, epochs run, best epoch) of patience-based early stopping on VAL_LOSSES, by hand."""
    best, bad, best_epoch = None, 0, 0
    for epoch, loss in enumerate(VAL_LOSSES, start=1):
        if best is None or loss < best:
            best, bad, best_epoch = loss, 0, epoch
        else:
            bad += 1
        if bad >= PATIENCE:
            return best, epoch, best_epoch
    raise AssertionError("VAL_LOSSES never triggers early stopping")


def test_uninterrupted_run_stops_on_patience(
    store: Path, tmp_path: Path, scripted_validation: list[int]
) -> None:
    best, epochs, best_epoch = _expected_stop()
    assert (best, epochs, best_epoch) == (0.9, 5, 2)
    summary = trainer.train(_cfg(store), tmp_path / "full")
    assert (summary["best"], summary["epoch"], len(scripted_validation)) == (best, epochs, epochs)
    assert ckpt.read_meta(tmp_path / "full" / "checkpoints", "best")["epoch"] == best_epoch


@pytest.mark.parametrize("killed_after", [3, 4])  # validations done before the kill (bad_epochs 1, 2)
def test_resume_restores_best_and_patience(
    store: Path, tmp_path: Path, scripted_validation: list[int], killed_after: int
) -> None:
    best, epochs, best_epoch = _expected_stop()
    run = tmp_path / "killed"
    # killed two batches into epoch `killed_after` (after `killed_after` validations)
    trainer.train(_cfg(store, f"max_steps={killed_after * STEPS_PER_EPOCH + 2}"), run)
    assert len(scripted_validation) == killed_after
    meta = ckpt.read_meta(run / "checkpoints", "last")
    assert (meta["epoch"], meta["batch"]) == (killed_after, 2)
    # the state at the kill, as the uninterrupted run had it after the same validations
    assert (meta["best"], meta["bad_epochs"]) == (0.9, killed_after - best_epoch)

    summary = trainer.train(apply_overrides(read_config(run), ["max_steps=null"]), run, resume=True)
    # a resume that forgot `best` would save epoch 4 (0.97) as best and run on; one that forgot the
    # patience counter would stop later than epoch 5
    assert (summary["best"], summary["epoch"], len(scripted_validation)) == (best, epochs, epochs)
    assert ckpt.read_meta(run / "checkpoints", "best")["epoch"] == best_epoch
    last = ckpt.read_meta(run / "checkpoints", "last")
    assert (last["epoch"], last["best"], last["bad_epochs"]) == (epochs, best, PATIENCE)
    # the schedule continues where it stopped: every logged lr, before and after the kill, is
    # lr * factor(step) for the whole run's 40 steps (decay from step 4 on). Exact: the trainer does the
    # same multiplication, and the CSV holds repr() of the float.
    cfg = read_config(run)
    factor = lr_factor(ScheduleSpec(**cfg["train"]["schedule"]), len(VAL_LOSSES) * STEPS_PER_EPOCH)
    with open(run / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    for r in rows:
        assert float(r["lr"]) == cfg["train"]["lr"] * factor(int(r["step"])), r
