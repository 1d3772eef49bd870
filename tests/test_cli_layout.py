"""The package as a user meets it: one command, every subcommand answers --help, and the
daemon's import graph stays free of torch (an inspection cell runs without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from afrd.cli import COMMANDS

# Everything an inspection cell loads when its engine is ONNX Runtime or TensorRT.
TORCH_FREE_MODULES = [
    "afrd.cli",
    "afrd.daemon.service",
    "afrd.daemon.pipeline",
    "afrd.config.cell",
    "afrd.acquire.sequencer",
    "afrd.daemon.watch",
    "afrd.daemon.ctl",
    "afrd.acquire.gardasoft",
    "afrd.acquire.genicam",
    "afrd.sim.cell",
    "afrd.runtime.bundle",
    "afrd.runtime.engines",
    "afrd.calibration.threshold",
    "afrd.calibration.flatfield",
    "afrd.data.capture",
    "afrd.data.render",
]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_afrd_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "afrd", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_exits_2() -> None:
    res = subprocess.run([sys.executable, "-m", "afrd", "no-such"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "unknown command 'no-such'" in res.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "afrd", name, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_daemon_path_imports_without_torch(module: str) -> None:
    res = _run(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
                    raise ImportError(f"torch is blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import {module}
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
