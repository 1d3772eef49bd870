"""The package as a user meets it: one command, every subcommand answers --help, and the
daemon's import graph stays free of torch (an inspection cell runs without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from afrd.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]

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


def _afrd(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "afrd", *argv], capture_output=True, text=True, timeout=timeout
    )


def test_missing_command_is_exit_2_with_usage() -> None:
    for argv in ([], ["config"], ["calibrate"], ["ctl"], ["export"]):
        res = _afrd(*argv)
        assert res.returncode == 2, (argv, res.stdout, res.stderr)
        assert "usage" in res.stderr.lower(), (argv, res.stderr)


# Commands that take data and what they call the shared flags: the same names everywhere.
DATA_COMMANDS = [
    ("train", ["--data", "--category", "--image-size"]),
    ("eval", ["--data", "--category", "--split"]),
    ("calibrate threshold", ["--data", "--category", "--split"]),
    ("export onnx", ["--data", "--category", "--split"]),
    ("export trt", ["--data", "--category", "--split"]),
    ("export int8", ["--data", "--category", "--split"]),
    ("demo", ["--category", "--image-size"]),
    ("calibrate flatfield", ["--image-size"]),
]


@pytest.mark.parametrize("command,flags", DATA_COMMANDS, ids=[c for c, _ in DATA_COMMANDS])
def test_shared_flags_and_defaults_in_help(command: str, flags: list[str]) -> None:
    res = _afrd(*command.split(), "--help")
    assert res.returncode == 0, res.stderr
    for flag in flags:
        assert flag in res.stdout, f"afrd {command} --help lacks {flag}"
    assert "(default: " in res.stdout, f"afrd {command} --help shows no defaults"


def test_global_flags_are_accepted_after_the_command() -> None:
    res = _afrd("ctl", "--quiet", "--connect", "tcp://127.0.0.1:1", "--timeout", "0.2", "status")
    assert res.returncode == 2  # no daemon there: "no reply", not an argparse error
    assert "no reply" in res.stderr and "unrecognized" not in res.stderr


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["watch", "--connect", "notanendpoint", "--timeout", "1"], "--connect 'notanendpoint'"),
        (["ctl", "--connect", "notanendpoint", "status"], "--connect 'notanendpoint'"),
        (["eval", "README.md", "--data", "."], "README.md is not a checkpoint"),
    ],
    ids=["watch-endpoint", "ctl-endpoint", "eval-not-a-checkpoint"],
)
def test_bad_input_is_one_line_without_traceback(argv: list[str], expect: str, tmp_path) -> None:
    if argv[0] == "eval":
        argv = [argv[0], str(REPO / argv[1]), *argv[2:]]
    res = _afrd(*argv)
    assert res.returncode == 2, res.stderr
    assert expect in res.stderr
    assert "Traceback" not in res.stderr and "weights_only" not in res.stderr
