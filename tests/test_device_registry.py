"""Devices register themselves (issue 22.5): each camera and controller kind declares its config
model and how it opens, and registers under the ``afrd.devices`` entry points; the config
unions come from the registry, so a kind from another package needs no edit of afrd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _daemon_helpers import REPO, afrd, sim_lighting_toml

from afrd.acquire.registry import device_kind, kinds
from afrd.config.cell import parse_config
from afrd.errors import ConfigError

pytestmark = pytest.mark.timeout(120)

# A camera kind from a package of its own: a module plus one entry-point line in its metadata.
TOY = '''
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from afrd.acquire.camera import Camera
from afrd.acquire.registry import DeviceKind
from afrd.errors import FrameTimeout


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["toy"] = "toy"
    grey: int = Field(..., ge=0, le=255)
    size: int = 16
    timeout_s: float = 1.0


class ToyCamera(Camera):
    """Frames of one grey, plus the number of channels the controller has lit at the grab."""

    name = "toy"

    def __init__(self, config, emulator):
        self.config, self.emulator, self.exposures = config, emulator, 0

    def open(self):
        pass

    def close(self):
        pass

    def trigger(self):
        self.exposures += 1

    def grab(self, timeout_s=1.0):
        if not self.exposures:
            raise FrameTimeout("toy: no exposure")
        self.exposures -= 1
        grey = self.config.grey + len(self.emulator.lit())
        return np.full((self.config.size, self.config.size, 3), grey, np.uint8)


def _open(config, devices):
    return ToyCamera(config, devices.controller.emulator)


DEVICE = DeviceKind("camera", ToyConfig, _open, frame_shape=lambda c: (c.size, c.size, 3))
'''


@pytest.fixture
def toy_plugin(tmp_path) -> Path:
    """A directory holding the toy kind's module and its distribution's metadata."""
    d = tmp_path / "plugin"
    (d / "toy_camera-0.1.dist-info").mkdir(parents=True)
    (d / "toycam.py").write_text(TOY)
    meta = d / "toy_camera-0.1.dist-info"
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-camera\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[afrd.devices]\ntoy = toycam:DEVICE\n")
    return d


def _afrd(plugin: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m afrd ARGS` of this checkout, with ``plugin`` on the path."""
    return afrd(*args, timeout=90, path=(str(plugin),))


def _toy_cell(d: Path, camera: str, name: str = "toy") -> Path:
    cfg = d / f"{name}.toml"
    cfg.write_text(
        f'cell = "toy"\n\n[camera]\n{camera}\n\n[controller]\nkind = "sim"\n\n'
        f'[bundle]\npath = "nowhere"\n\n{sim_lighting_toml(("box", "ring_top"))}'
    )
    return cfg


def test_the_shipped_kinds_are_registered():
    assert {"genicam", "sim"} <= set(kinds("camera"))
    assert {"gardasoft", "sim"} <= set(kinds("controller"))
    assert device_kind("camera", "sim").simulated and not device_kind("camera", "genicam").simulated
    with pytest.raises(ConfigError, match=r"camera.kind: 'webcam' is not registered; expected"):
        device_kind("camera", "webcam")


def test_a_config_naming_an_unknown_kind_lists_the_registered_ones():
    base = {
        "cell": "c1",
        "lighting": [{"name": "box", "channels": [{"channel": 5, "level": 36}]}],
        "bundle": {"path": "b"},
    }
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "camera": {"kind": "webcam"}, "controller": {"kind": "x"}}, "c.toml")
    lines = str(e.value).splitlines()
    assert "  camera.kind: expected 'genicam' or 'sim' (got 'webcam')" in lines
    assert "  controller.kind: expected 'gardasoft' or 'sim' (got 'x')" in lines
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "camera": {"size": 64}, "controller": {"kind": "sim"}}, "c.toml")
    assert "  camera.kind: required key missing" in str(e.value).splitlines()


def test_a_camera_kind_from_another_package_registers_without_editing_afrd(toy_plugin, tmp_path):
    """The toy kind's package is only on the path: `afrd config check` validates its options
    (and lists it among the kinds), and `afrd capture` opens it beside the simulated
    controller and records what it delivers."""
    cfg = _toy_cell(tmp_path, 'kind = "toy"\ngrey = 70')
    p = _afrd(toy_plugin, "config", "check", "--no-bundle", str(cfg))
    assert p.returncode == 0, p.stderr

    bad = _toy_cell(tmp_path, 'kind = "toy"\ngery = 70', "bad")
    p = _afrd(toy_plugin, "config", "check", "--no-bundle", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "camera.gery: unknown key" in p.stderr and "camera.grey: required" in p.stderr

    unknown = _toy_cell(tmp_path, 'kind = "webcam"', "unknown")
    p = _afrd(toy_plugin, "config", "check", "--no-bundle", str(unknown))
    assert p.returncode == 2 and "camera.kind: expected 'genicam', 'sim' or 'toy'" in p.stderr

    out = tmp_path / "captures"
    p = _afrd(toy_plugin, "capture", "--config", str(cfg), "--count", "2", "--out", str(out))
    assert p.returncode == 0, p.stderr
    sets = sorted(out.glob("*/*/*/set.json"))
    assert len(sets) == 2, p.stdout
    for s in sets:
        # box lights 4 channels, ring_top 1: the toy camera saw the emulator's lit channels
        for light, lit in (("box", 4), ("ring_top", 1)):
            img = cv2.imread(str(s.parent / f"{light}.png"))
            assert img.shape == (16, 16, 3) and np.all(img == 70 + lit), (light, img[0, 0])


def test_without_the_plugin_the_toy_kind_is_unknown(tmp_path):
    cfg = _toy_cell(tmp_path, 'kind = "toy"\ngrey = 70')
    p = _afrd(tmp_path / "no-plugin", "config", "check", "--no-bundle", str(cfg))
    assert p.returncode == 2 and "camera.kind: expected 'genicam' or 'sim' (got 'toy')" in p.stderr


def test_a_production_process_imports_only_the_simulators_registration():
    """Building the config unions loads every registered kind's declaration; the simulator's
    declares its config models there and imports its camera, emulator and renderer only when
    a simulated device opens."""
    code = (
        "import sys\n"
        "import afrd.daemon.service, afrd.config.cell\n"
        "print(sorted(m for m in sys.modules if m.startswith('afrd.sim') or m == 'afrd.data.render'))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['afrd.sim', 'afrd.sim.config', 'afrd.sim.devices']"
