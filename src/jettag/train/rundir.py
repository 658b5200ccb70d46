"""A run directory: what a run writes there, the refusal to mix two runs, and its log.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/`` (``best`` and
``last``), ``log.csv`` and ``tensorboard/`` (one row per ``log_every`` steps and per validation),
and ``report/`` once evaluated. A new run starts only in a directory without another run's files.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path
from typing import Any

from jettag.train.config import ConfigError

LOG_FIELDS = ["time", "epoch", "step", "split", "loss", "acc", "auc", "rej50", "rej30", "lr", "jets_per_s"]

#: what a run writes into its directory (all of it is deleted by ``overwrite``)
RUN_FILES = ("config.yaml", "config.yaml.tmp", "log.csv", "checkpoints", "tensorboard", "report")


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
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.csv.writerow({"time": round(time.time(), 3), **row})
        self.file.flush()
        for key in ("loss", "acc", "auc", "rej50", "rej30", "lr", "jets_per_s"):
            if row.get(key) is not None and not (isinstance(row[key], float) and math.isnan(row[key])):
                self.tb.add_scalar(f"{row['split']}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()
