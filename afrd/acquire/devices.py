"""The device factory: the camera and the lighting controller a config names, opened together.

Each kind declares its config model and how it opens, and registers itself
(:mod:`afrd.acquire.registry`: the ``afrd.devices`` entry points); this module builds the
``[camera]``/``[controller]`` config unions from the registry and opens what a config names.
It names no kind's package: the simulator registers its own kinds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from afrd.acquire.camera import Camera
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.acquire.registry import config_union, kind_of, tags
from afrd.acquire.sequencer import Sequencer
from afrd.errors import DeviceError

log = logging.getLogger(__name__)

CameraConfig = config_union("camera")
ControllerConfig = config_union("controller")
DEVICE_TAGS = tags()  # what the unions put into a validation error's path (afrd.config.cell)
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
    shape = kind_of(config).frame_shape
    return None if shape is None else shape(config)


def simulated(config: Any) -> bool:
    """True for a device config of a simulated kind (it images no real part)."""
    return kind_of(config).simulated


class Devices:
    """Controller + camera, opened together, each by its kind's ``open`` (controller first: a
    camera may listen to it).

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
            cc, cam = self.controller_config, self.camera_config
            self.controller = kind_of(cc).open(cc, self)
            self.camera = kind_of(cam).open(cam, self)
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

    def sequencer(self, conditions: Sequence[LightingCondition], **kw: Any) -> Sequencer:
        """A sequencer over these devices (settle and grab timeout from their configs)."""
        if self.controller is None or self.camera is None:
            raise DeviceError("devices are not open (call open() or use them as a context)")
        kw.setdefault("settle_s", self.settle_s)
        kw.setdefault("grab_timeout_s", self.grab_timeout_s)
        return Sequencer(self.controller, self.camera, conditions, **kw)

    def close(self) -> None:
        """Lights off, camera and controller closed; never raises."""
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

    def __enter__(self) -> Devices:
        return self.open(require_controller=True)

    def __exit__(self, *exc: object) -> None:
        self.close()
