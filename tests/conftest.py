"""Shared test set-up: Triton's interpreter on machines without a GPU, seeded RNGs."""

import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before any
# kernels module is imported. On a GPU machine the kernels compile for the device instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

# Two xdist workers on two cores, each with torch's default thread pool, wait on each other:
# tiny steps then swing from milliseconds to seconds. One thread per worker is steadier.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
