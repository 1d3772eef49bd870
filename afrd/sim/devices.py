"""The simulated cell's devices as device kinds (``sim`` camera and controller): how each
opens, registered by afrd's ``afrd.devices`` entry points (``sim-camera``, ``sim-controller``),
so a config naming ``kind = "sim"`` gets them while acquisition never names the simulator.

Only what validating a config needs is imported here; the renderer-driven camera and the
controller emulator are imported when a simulated device opens.
"""

from __future__ import annotations

from typing import Any

from afrd.acquire.camera import Camera
from afrd.acquire.gardasoft import GardasoftConfig, GardasoftController
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.acquire.registry import DeviceKind
from afrd.sim.config import SimCameraConfig, SimControllerConfig, sim_lighting_conditions


class AppliedLights(LightController):
    """Wraps a controller and remembers the channels it was last told to light: what the
    simulated camera renders under when the controller (or its emulator) is in another process."""

    def __init__(self, inner: LightController) -> None:
        self.inner = inner
        self.name = inner.name
        self._lit: dict[int, float] = {}

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def apply(self, condition: LightingCondition) -> None:
        self._lit = {}
        self.inner.apply(condition)
        self._lit = {c.channel: c.level for c in condition.channels if c.level > 0}

    def all_off(self) -> None:
        self._lit = {}
        self.inner.all_off()

    def strobe(self, condition: LightingCondition) -> None:
        self.inner.strobe(condition)

    def lit(self) -> dict[int, float]:
        return dict(self._lit)


class EmulatedController(GardasoftController):
    """The real Gardasoft driver on the pty of a controller emulator it starts here and stops
    on ``close``."""

    def __init__(self, config: SimControllerConfig) -> None:
        from afrd.sim.emulator import ControllerEmulator

        self.emulator = ControllerEmulator(
            n_channels=config.n_channels, error_every=config.error_every
        ).start()
        super().__init__(
            GardasoftConfig(
                port=self.emulator.port, timeout_s=config.timeout_s, n_channels=config.n_channels
            )
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.emulator.stop()


def _open_camera(config: SimCameraConfig, devices: Any) -> Camera:
    from afrd.sim.camera import SimCamera

    emulator = getattr(devices.controller, "emulator", None)
    if emulator is not None:
        lit = emulator.lit  # the emulator knows what is lit
    else:  # a real controller (or an emulator elsewhere): what the driver was told to light
        devices.controller = AppliedLights(devices.controller)
        lit = devices.controller.lit
    hardware = devices.trigger == "hardware"
    return SimCamera(config, lit, hardware_trigger=hardware, controller=emulator)


CAMERA = DeviceKind(
    "camera",
    SimCameraConfig,
    _open_camera,
    simulated=True,
    frame_shape=lambda c: (c.size, c.size, 3),
)
CONTROLLER = DeviceKind(
    "controller",
    SimControllerConfig,
    lambda config, _: EmulatedController(config),
    simulated=True,
    conditions=sim_lighting_conditions,
)
