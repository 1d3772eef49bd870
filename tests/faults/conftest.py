"""Fault tests: the real `afrd run` / `afrd config check` processes of this checkout, fed the
inputs issue 12 listed (bad configs, tampered bundles, hostile control requests, signals at bad
moments). Each asserts the daemon refused with exit 2 and one line naming the key, or kept
running and published exactly one result per accepted trigger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _daemon_helpers import REPO, make_brightness_bundle  # noqa: E402


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults-bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


def afrd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m afrd ARGS` of this checkout (PYTHONPATH), run to its exit."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "afrd", *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(cfg: Path, *expect: str) -> None:
    """`afrd config check` and `afrd run` both exit 2 on ``cfg``, no traceback, and every string
    of ``expect`` on one line of what they print."""
    for args in (("config", "check", str(cfg)), ("run", "--config", str(cfg))):
        p = afrd(*args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        lines = p.stderr.splitlines()
        assert any(all(e in line for e in expect) for line in lines), (args, expect, p.stderr)
