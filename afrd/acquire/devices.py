"""The device factory: the camera and the lighting controller a config names, opened together.

Each driver takes its own config model (declared next to it); this module only chooses the
driver by ``kind``. A simulated device (``kind = "sim"``) is imported from ``afrd.sim`` here
and only here, when a config asks for one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from afrd.acquire.camera import Camera
from afrd.acquire.gardasoft import GardasoftConfig, GardasoftController
from afrd.acquire.genicam import GenICamCamera, GenICamConfig
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.acquire.sequencer import Sequencer
from afrd.acquire.simulated import SimCameraConfig, SimControllerConfig
from afrd.errors import DeviceError

log = logging.getLogger(__name__)

CameraConfig = Annotated[SimCameraConfig | GenICamConfig, Field(discriminator="kind")]
ControllerConfig = Annotated[SimControllerConfig | GardasoftConfig, Field(discriminator="kind")]
TriggerMode = Literal["control", "hardware", "free-run"]


def camera_identity(config: CameraConfig, camera: Camera | None = None) -> dict[str, Any]:
    """What a calibration file records of the camera it was made with: kind and serial (the
    opened device's, else the config's; None for the simulated camera or an unnamed device)."""
    serial = getattr(config, "serial", None)
    if camera is not None and config.kind == "genicam" and " " in camera.name:
        serial = camera.name.rsplit(" ", 1)[1]  # GenICamCamera.name = "<model> <serial>"
    return {"kind": config.kind, "serial": serial}


def frame_shape(config: CameraConfig) -> tuple[int, int, int] | None:
    """The frame shape (H, W, 3) a camera config delivers, when the config fixes it."""
    if config.kind == "sim":
        return (config.size, config.size, 3)
    if config.width is not None and config.height is not None:
        return (config.height, config.width, 3)
    return None


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


class Devices:
    """Controller + camera (+ the emulator behind a simulated controller), opened together.

    ``trigger``: the cell's trigger mode; in ``hardware`` mode the camera waits for its line.
    ``open(require_controller=False)`` tolerates a controller that does not answer yet (the
    driver reconnects; parts are ``error`` until it does), as the daemon wants; calibration
    passes True."""

    def __init__(
        self,
        camera: CameraConfig,
        controller: ControllerConfig,
        trigger: TriggerMode = "control",
    ) -> None:
        self.camera_config = camera
        self.controller_config = controller
        self.trigger = trigger
        self.emulator: Any = None  # afrd.sim.emulator.ControllerEmulator for kind = "sim"
        self.controller: LightController | None = None
        self.camera: Camera | None = None

    @property
    def settle_s(self) -> float:
        return self.controller_config.settle_s

    @property
    def grab_timeout_s(self) -> float:
        return self.camera_config.timeout_s

    def open(self, require_controller: bool = False) -> Devices:
        try:
            self.controller = self._controller()
            self.camera = self._camera()
            self.camera.open()
            try:
                self.controller.open()
            except DeviceError as exc:
                if require_controller:
                    raise
                log.error("lighting controller not reachable at start: %s", exc)
        except BaseException:
            self.close()
            raise
        return self

    def _controller(self) -> LightController:
        cc = self.controller_config
        if cc.kind == "gardasoft":
            return GardasoftController(cc)
        from afrd.sim.emulator import ControllerEmulator

        self.emulator = ControllerEmulator(n_channels=cc.n_channels, error_every=cc.error_every)
        self.emulator.start()
        return GardasoftController(
            GardasoftConfig(
                port=self.emulator.port, timeout_s=cc.timeout_s, n_channels=cc.n_channels
            )
        )

    def _camera(self) -> Camera:
        cam = self.camera_config
        if cam.kind == "genicam":
            return GenICamCamera(
                cam, trigger="hardware" if self.trigger == "hardware" else "software"
            )
        from afrd.sim.camera import SimCamera

        if self.emulator is not None:
            lit = self.emulator.lit  # the emulator knows what is lit
        else:  # a real controller (or an emulator elsewhere): what the driver was told to light
            self.controller = AppliedLights(self.controller)
            lit = self.controller.lit
        return SimCamera(
            cam, lit, hardware_trigger=self.trigger == "hardware", controller=self.emulator
        )

    def sequencer(self, conditions: Sequence[LightingCondition], **kw: Any) -> Sequencer:
        """A sequencer over these devices (settle and grab timeout from their configs)."""
        if self.controller is None or self.camera is None:
            raise DeviceError("devices are not open (call open() or use them as a context)")
        kw.setdefault("settle_s", self.settle_s)
        kw.setdefault("grab_timeout_s", self.grab_timeout_s)
        return Sequencer(self.controller, self.camera, conditions, **kw)

    def close(self) -> None:
        """Lights off, camera and controller closed, emulator stopped; never raises."""
        if self.controller is not None:
            try:
                self.controller.all_off()
            except Exception as exc:  # best effort on the way out: the port may be gone
                log.debug("switching the lights off: %s", exc)
        for what, dev in (("camera", self.camera), ("controller", self.controller)):
            if dev is not None:
                try:
                    dev.close()
                except Exception as exc:  # closing must not stop the rest from closing
                    log.warning("closing %s: %s", what, exc)
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def __enter__(self) -> Devices:
        return self.open(require_controller=True)

    def __exit__(self, *exc: object) -> None:
        self.close()
