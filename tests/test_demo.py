"""``jettag demo --quick``: the whole chain (generate, train four models, evaluate, report) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    env = {**os.environ, "JETTAG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    out = tmp_path / "demo"
    # two of the four models keep the test inside the suite's budget; the chain is the same for all four
    proc = subprocess.run([sys.executable, "-m", "jettag.cli", "demo", "--quick", "--models", "mipart,pfn",
                           "--out", str(out), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report"
    res = json.loads((report / "results.json").read_text())
    assert [r["model"] for r in res["runs"]] == ["mipart", "pfn"]
    assert len(res["classes"]) == 2 and res["n_test"] > 0
    for r in res["runs"]:
        m = r["metrics"]
        assert 0.0 <= m["auc"] <= 1.0 and m["params"] > 0 and m["jets_per_s"] > 0
    # the printed table is the report's table, and the run directories are complete
    assert "| mipart |" in proc.stdout and "train jets/s" in proc.stdout
    assert (report / "roc.png").is_file() and (report / "timings.json").is_file()
    for name in ("mipart", "pfn"):
        assert (out / name / "checkpoints" / "best.safetensors").is_file()
    # the sample was generated into the given cache, not the user's
    assert any((tmp_path / "cache").rglob("manifest.json"))
