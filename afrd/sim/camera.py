"""A camera that renders the current part under whatever channels the controller reports lit.

It never looks at which lighting condition the sequencer *meant*: it asks the controller
emulator which channels are on and at what level, maps channels to lamps (``SIM_CHANNELS``)
and renders that. A sequencing or wiring mistake therefore yields a wrong image, as on a cell.

Frames queue as on a GenTL device: each exposure (a software trigger, an edge on the trigger
line) joins a queue with the next frame id and the lamps lit at that moment; ``grab`` takes the
oldest (rendering it then), ``flush`` drops them all. A frame nobody grabbed is therefore still
there for the next grab, as a real camera's late or extra frame is.

Hardware-trigger mode (docs/architecture.md, "Hardware trigger"): ``config.line`` is the part
sensor (a UNIX datagram socket, one datagram per edge). With the emulated controller
(``controller=``) the sensor drives the controller's trigger input 1 and the camera listens to
the controller's camera-trigger output: an edge pulses the channels bound to input 1 and the
camera exposes the part's first frame under the light inside its exposure window
(``Strobe.light``). With a real controller the sensor drives the camera's line directly. The
part's other frames follow as the sequencer switches the lights (a frame burst: exposed at each
grab). No edge, no first frame: the grab times out (FrameTimeout, no part came).

``vignetting`` and ``dark_offset`` (camera config) model the sensor side a flat-field corrects:
each frame is ``render * fall_off + dark_offset``, where ``fall_off`` is radial (corners
``vignetting`` darker than the centre) and scaled to mean 1, so a flat-field calibrated on this
camera gives back the renderer's image.

What a cell's optics do over time, for the drift watch (afrd.daemon.drift): ``lamp_decay``
ages every lamp (intensity x (1 - lamp_decay) ** (parts imaged / 1000), counted at each part's
first frame) and ``smudge`` puts a dirty spot on the lens (the image there blended with a
blurred, dimmer copy of itself).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING

import numpy as np

from afrd.acquire.camera import Camera
from afrd.errors import DeviceError, FrameTimeout
from afrd.sim.config import SIM_CHANNELS, SimCameraConfig
from afrd.sim.parts import SimParts
from afrd.sim.trigger import PartSensor, Strobe

if TYPE_CHECKING:
    from afrd.sim.emulator import ControllerEmulator

LitFn = Callable[[], Mapping[int, float]]
REF_EXPOSURE_US = 1000.0


@dataclass(frozen=True)
class _Exposure:
    frame_id: int
    part_id: str | None  # None: an edge on the line, of the part being acquired when grabbed
    lamps: dict[str, float]


class SimCamera(Camera):
    """``lit``: a function returning {channel: level %} (a ControllerEmulator's ``lit``, or the
    channels the driver was last told to light). ``config.noise_seed``: None renders without
    sensor noise (frames are exactly ``render(part, lamps)``); an int adds the renderer's noise
    from a generator seeded by (noise_seed, part, frame number in the part). ``controller``:
    the emulator whose camera-trigger output fires this camera in hardware-trigger mode."""

    name = "sim-camera"

    def __init__(
        self,
        config: SimCameraConfig,
        lit: LitFn,
        hardware_trigger: bool = False,
        cache_parts: int = 8,
        exposure_us: float = REF_EXPOSURE_US,
        controller: ControllerEmulator | None = None,
    ) -> None:
        if not callable(lit):
            raise TypeError("SimCamera lit must be a function returning {channel: level %}")
        self.config = config
        self._lit: LitFn = lit
        self.parts = SimParts(config)
        self.size = config.size
        self.hardware_trigger = hardware_trigger
        self._controller = controller
        self._sensor: PartSensor | None = None
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_parts = cache_parts
        self._queue: deque[_Exposure] = deque()
        self._ready = threading.Condition()
        self._next_id = 0
        self._part_id: str | None = None
        self._grabbed = 0  # frames of the current part grabbed so far
        self.parts_imaged = 0  # parts whose first frame was grabbed: the lamps' age
        self._open = False
        self.render_s = 0.0  # time in the renderer (part sampling + render): the simulated exposure
        self.last_lamps: dict[str, float] = {}
        # Brightness scales with exposure / REF_EXPOSURE_US (1 at the default: frames equal
        # the renderer's image at the lamp intensities exactly).
        self.exposure_us = float(exposure_us)

    def open(self) -> None:
        if self._open:
            return
        if self.hardware_trigger:
            ctl = self._controller
            if ctl is not None:
                ctl.connect_camera(self._on_strobe)
            if self.config.line is not None:
                edge = partial(ctl.input_edge, 1) if ctl is not None else self._on_line
                self._sensor = PartSensor(self.config.line, edge)
        self._open = True

    def close(self) -> None:
        self._open = False
        if self._sensor is not None:
            self._sensor.close()
            self._sensor = None
        if self._controller is not None:
            self._controller.disconnect_camera(self._on_strobe)
        with self._ready:
            self._queue.clear()

    def start_part(self, part_id: str) -> None:
        self._part_id = str(part_id)
        self._grabbed = 0

    @property
    def has_trigger(self) -> bool:
        """Software trigger; in hardware-trigger mode the line starts the exposure."""
        return not self.hardware_trigger

    @property
    def line_triggered(self) -> bool:
        return self.hardware_trigger

    def set_exposure(self, exposure_us: float) -> None:
        if not exposure_us > 0:
            raise DeviceError(f"{self.name}: exposure must be > 0 us, got {exposure_us}")
        self.exposure_us = float(exposure_us)

    def lamps(self, levels: Mapping[int, float] | None = None) -> dict[str, float]:
        """Lamp intensities for {channel: level %} (default: lit now): each channel's level /
        100 on its lamp, times the exposure gain."""
        gain = self.exposure_us / REF_EXPOSURE_US
        if self.config.lamp_decay > 0:
            gain *= (1.0 - self.config.lamp_decay) ** (self.parts_imaged / 1000.0)
        out: dict[str, float] = {}
        for ch, level in (self._lit() if levels is None else levels).items():
            lamp = SIM_CHANNELS.get(ch)
            if lamp is not None and level > 0:
                out[lamp] = out.get(lamp, 0.0) + level / 100.0
        if gain != 1.0:
            out = {k: v * gain for k, v in out.items()}
        return out

    def _render(self, part_id: str, lamps: dict[str, float], index: int) -> np.ndarray:
        from afrd.data import render as R

        key = (part_id, tuple(sorted(lamps.items())))
        if self.config.noise_seed is None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t0 = time.perf_counter()
        part = self.parts.part(part_id)
        rng = None
        if self.config.noise_seed is not None:
            rng = np.random.default_rng([self.config.noise_seed, _stable(part_id), index])
        img = R.render(part, lamps, self.size, rng=rng)
        self.render_s += time.perf_counter() - t0
        if self.config.noise_seed is None:
            self._cache[key] = img
            # ~6-7 lamp sets per part; keep the last few parts.
            while len(self._cache) > 8 * self._cache_parts:
                self._cache.popitem(last=False)
        return img

    def _sensor_response(self, img: np.ndarray) -> np.ndarray:
        """The lens and sensor on the rendered image: a smudge, vignetting, the black level."""
        k, dark = self.config.vignetting, self.config.dark_offset
        if k == 0 and dark == 0 and self.config.smudge == 0:
            return img
        out = img.astype(np.float32)
        if self.config.smudge > 0:
            import cv2

            w = smudge_weight(img.shape[0], img.shape[1], self.config.smudge)[..., None]
            veiled = cv2.GaussianBlur(out, (0, 0), max(1.0, img.shape[0] / 16)) * 0.85
            out = out * (1.0 - w) + veiled * w
        if k > 0:
            out *= fall_off(img.shape[0], img.shape[1], k)[..., None]
        return np.clip(out + (dark + 0.5), 0, 255).astype(np.uint8)

    # -- exposures ---------------------------------------------------------------------------
    def _exposure(self, part_id: str | None, lamps: dict[str, float]) -> _Exposure:
        with self._ready:
            self._next_id += 1
            return _Exposure(self._next_id, part_id, lamps)

    def _queue_exposure(self, exposure: _Exposure) -> None:
        lose = self.config.lose_every
        if lose is not None and exposure.frame_id % lose == 0:
            return  # lost on the way (config.lose_every): the grab waiting for it times out
        with self._ready:
            self._queue.append(exposure)
            self._ready.notify_all()

    def _on_strobe(self, strobe: Strobe) -> None:
        """The controller's camera-trigger output rose: expose for ``exposure_us`` from now."""
        if self._open:
            self._queue_exposure(self._exposure(None, self.lamps(strobe.light(self.exposure_us))))

    def _on_line(self) -> None:
        """An edge straight on the camera's line (no emulated controller): expose now."""
        if self._open:
            self._queue_exposure(self._exposure(None, self.lamps()))

    def trigger(self) -> None:
        if not self._open:
            raise DeviceError(f"{self.name}: trigger on a closed camera")
        if self.hardware_trigger:
            return  # the line starts the exposure
        if self._part_id is None:
            raise DeviceError(f"{self.name}: exposure before start_part(): no part in the cell")
        self._queue_exposure(self._exposure(self._part_id, self.lamps()))

    def flush(self) -> int:
        with self._ready:
            n = len(self._queue)
            self._queue.clear()
        self.flushed += n
        return n

    def grab(self, timeout_s: float | None = None) -> np.ndarray:
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if not self._open:
            raise DeviceError(f"{self.name}: grab on a closed camera")
        if self.hardware_trigger and self._grabbed > 0:
            exp = self._exposure(None, self.lamps())  # the burst's next frame, not queued
        else:
            exp = self._take(timeout)
        part_id = exp.part_id or self._part_id
        if part_id is None:
            raise DeviceError(f"{self.name}: exposure before start_part(): no part in the cell")
        if self._grabbed == 0:
            self.parts_imaged += 1
        self.last_lamps = exp.lamps
        img = self._sensor_response(self._render(part_id, exp.lamps, self._grabbed))
        self._grabbed += 1
        self.last_frame_id = exp.frame_id
        return img.copy()

    def _take(self, timeout: float) -> _Exposure:
        """The oldest queued exposure; FrameTimeout when none comes within ``timeout``."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._queue, timeout):
                why = "not triggered"
                if self.hardware_trigger:
                    wired = self._sensor is not None or self._controller is not None
                    why = "no edge from the part sensor" if wired else "no trigger line wired"
                raise FrameTimeout(f"{self.name}: no frame within {timeout} s ({why})")
            return self._queue.popleft()

    def ground_truth(self, part_id: str) -> tuple[int, np.ndarray | None]:
        """(label, mask) of a simulated part; the sequencer puts them on the ImageSet."""
        part = self.parts.part(part_id)
        mask = getattr(part, "mask", None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape[:2] != (self.size, self.size):
                import cv2

                mask = cv2.resize(
                    mask.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST
                )
            mask = (mask > 0).astype(np.uint8)
        return int(part.label), mask


@lru_cache(maxsize=8)
def fall_off(h: int, w: int, k: float) -> np.ndarray:
    """Radial vignetting ``1 - k r^2`` (r = 1 in the corners), scaled to mean 1."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((y - (h - 1) / 2) / (h / 2)) ** 2 + ((x - (w - 1) / 2) / (w / 2)) ** 2
    v = 1.0 - k * r2 / r2.max()
    return (v / v.mean()).astype(np.float32)


@lru_cache(maxsize=8)
def smudge_weight(h: int, w: int, strength: float) -> np.ndarray:
    """Where a dirty spot veils the image: a Gaussian spot of ``strength`` at its centre, an
    eighth of the frame wide (sigma), off the optical axis."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, s = 0.38 * h, 0.62 * w, max(h, w) / 8
    return (strength * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))).astype(np.float32)


def _stable(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
