"""``jettag.allocator``: with freed memory kept, large tensors allocated step after step reuse pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from jettag import allocator, cli

# Five "steps" of a 64 MiB and a 32 MiB tensor and their 48 MiB sum, then the minor page faults of
# three more: without kept memory each tensor is a fresh mmap (36,864 faults of 4 KiB pages per
# step); with it, after the heap has settled, the steps reuse its pages.
_PROBE = """
import resource, torch
from jettag.allocator import keep_freed_memory
print(keep_freed_memory())
def step():
    a, b = torch.ones(16 << 20), torch.ones(8 << 20)
    return float((a[: 12 << 20] + b[0])[-1])
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the setting is glibc's")


def _probe(malloc: str) -> tuple[bool, int]:
    env = {**os.environ, allocator.ENV: malloc}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@glibc
def test_kept_memory_is_reused_without_page_faults() -> None:
    applied, kept = _probe("keep")
    not_applied, system = _probe("system")
    assert applied and not not_applied
    if system < 3 * 4096:
        pytest.skip(f"this kernel maps 3 x 144 MiB in {system} faults (huge pages): nothing to compare")
    assert kept < system / 20, (kept, system)


def test_the_command_applies_it_before_running(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept"))
    assert cli.main(["models"]) == 0
    assert calls == ["kept"]
