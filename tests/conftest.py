"""Shared pytest setup: keep torch to the cores CI has and make runs repeatable."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

sys.path.insert(0, str(Path(__file__).parent))
import _contracts  # noqa: E402

# before any test module imports a reader: every message the tests read is checked against
# docs/schemas/ with jsonschema too (tests/_contracts.py)
_contracts.install()


def pytest_terminal_summary(terminalreporter):
    line = _contracts.summary()
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core box, 2 spinning OpenMP threads run ~8x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
