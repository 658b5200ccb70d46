"""Shared test set-up: CPU threads kept small so the suite behaves the same on CI's 2 cores."""

import torch

torch.set_num_threads(2)
