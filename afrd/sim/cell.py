"""The simulated cell as one object: the controller emulator on a pty driven by the real
Gardasoft driver, and the renderer-driven camera, opened together through the device factory::

    with SimCell(size=64) as cell:
        images = cell.sequencer().acquire("part-1", "demo")

Channel wiring and the lighting conditions it expresses are those of a config naming the
simulated devices (``afrd.sim.devices``, registered as ``kind = "sim"``), so the daemon
configures the sim cell exactly like a real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from afrd.acquire.devices import Devices, TriggerMode
from afrd.acquire.lighting import LightingCondition
from afrd.acquire.sequencer import Sequencer
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.sim.config import SimCameraConfig, SimControllerConfig, sim_lighting_conditions
from afrd.sim.parts import SimParts

if TYPE_CHECKING:
    from afrd.sim.emulator import ControllerEmulator


class SimCell(Devices):
    """``camera``: SimCameraConfig fields (category, seed, defect_rate, size, noise_seed, pose,
    timeout_s, line); ``controller``: the emulated controller's config; ``lights``: the
    conditions ``conditions()`` and ``sequencer()`` use by default; ``trigger``: the cell's
    trigger mode (``hardware``: the part sensor on ``line`` fires the controller, which fires
    the camera)."""

    def __init__(
        self,
        lights: Sequence[str] = DEFAULT_LIGHTS,
        controller: SimControllerConfig | None = None,
        trigger: TriggerMode = "control",
        **camera: Any,
    ) -> None:
        super().__init__(SimCameraConfig(**camera), controller or SimControllerConfig(), trigger)
        self.lights = tuple(lights)

    @property
    def emulator(self) -> ControllerEmulator | None:
        """The controller emulator behind the simulated controller, while open."""
        return getattr(self.controller, "emulator", None)

    @property
    def parts(self) -> SimParts:
        return SimParts(self.camera_config) if self.camera is None else self.camera.parts

    def conditions(self) -> list[LightingCondition]:
        return sim_lighting_conditions(self.lights)

    def sequencer(
        self, conditions: Sequence[LightingCondition] | None = None, **kw: Any
    ) -> Sequencer:
        return super().sequencer(conditions or self.conditions(), **kw)
