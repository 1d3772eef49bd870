"""Shared pytest setup: keep torch to the cores CI has and make runs repeatable."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core box, 2 spinning OpenMP threads run ~8x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
