"""Shared test set-up.

- CPU threads kept small so the suite behaves the same on CI's 2 cores.
- No silent skips in CI: see ci_required.py (its hooks are registered here).
"""

import torch
from ci_required import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]

torch.set_num_threads(2)

pytest_plugins = ["pytester"]
