"""A camera that renders the current part under whatever channels the controller reports lit.

It never looks at which lighting condition the sequencer *meant*: it asks the controller
emulator which channels are on and at what level, maps channels to lamps (``SIM_CHANNELS``)
and renders that. A sequencing or wiring mistake therefore yields a wrong image, as on a cell.

Hardware-trigger mode models the camera's trigger line as a UNIX datagram socket
(``config.line``): each datagram is one edge, i.e. a part reaching the sensor. The first frame
of a part waits for an edge (``FrameTimeout`` when none comes: no part, the line is idle); the
part's other frames follow at once, as when the light controller's sequence fires the camera.

``vignetting`` and ``dark_offset`` (camera config) model the sensor side a flat-field corrects:
each frame is ``render * fall_off + dark_offset``, where ``fall_off`` is radial (corners
``vignetting`` darker than the centre) and scaled to mean 1, so a flat-field calibrated on this
camera gives back the renderer's image.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from afrd.acquire.camera import Camera
from afrd.acquire.simulated import SIM_CHANNELS, SimCameraConfig
from afrd.errors import DeviceError, FrameTimeout
from afrd.sim.parts import SimParts

LitFn = Callable[[], Mapping[int, float]]
REF_EXPOSURE_US = 1000.0


class SimCamera(Camera):
    """``lit``: a function returning {channel: level %} (a ControllerEmulator's ``lit``, or the
    channels the driver was last told to light). ``config.noise_seed``: None renders without
    sensor noise (frames are exactly ``render(part, lamps)``); an int adds the renderer's noise
    from a generator seeded by (noise_seed, part, frame count)."""

    name = "sim-camera"

    def __init__(
        self,
        config: SimCameraConfig,
        lit: LitFn,
        hardware_trigger: bool = False,
        cache_parts: int = 8,
        exposure_us: float = REF_EXPOSURE_US,
    ) -> None:
        if not callable(lit):
            raise TypeError("SimCamera lit must be a function returning {channel: level %}")
        self.config = config
        self._lit: LitFn = lit
        self.parts = SimParts(config)
        self.size = config.size
        self.hardware_trigger = hardware_trigger
        self._line: socket.socket | None = None
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_parts = cache_parts
        self._part_id: str | None = None
        self._frame: np.ndarray | None = None
        self._frames = 0
        self._open = False
        self._lock = threading.Lock()
        self.render_s = 0.0  # time in the renderer (part sampling + render): the simulated exposure
        self.last_lamps: dict[str, float] = {}
        # Brightness scales with exposure / REF_EXPOSURE_US (1 at the default: frames equal
        # the renderer's image at the lamp intensities exactly).
        self.exposure_us = float(exposure_us)

    def open(self) -> None:
        if self.hardware_trigger and self.config.line is not None and self._line is None:
            path = self.config.line
            path.unlink(missing_ok=True)
            line = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                line.bind(str(path))
            except OSError as exc:
                line.close()
                raise DeviceError(f"{self.name}: cannot bind trigger line {path}: {exc}") from exc
            self._line = line
        self._open = True

    def close(self) -> None:
        self._open = False
        self._frame = None
        if self._line is not None:
            self._line.close()
            self._line = None
            self.config.line.unlink(missing_ok=True)

    def start_part(self, part_id: str) -> None:
        self._part_id = str(part_id)
        self._frame = None
        self._frames = 0

    @property
    def has_trigger(self) -> bool:
        """Software trigger; in hardware-trigger mode the line starts the exposure."""
        return not self.hardware_trigger

    def set_exposure(self, exposure_us: float) -> None:
        if not exposure_us > 0:
            raise DeviceError(f"{self.name}: exposure must be > 0 us, got {exposure_us}")
        self.exposure_us = float(exposure_us)

    def lamps(self) -> dict[str, float]:
        """Lamp intensities now: each lit channel's level / 100 on its lamp (x exposure gain)."""
        gain = self.exposure_us / REF_EXPOSURE_US
        out: dict[str, float] = {}
        for ch, level in self._lit().items():
            lamp = SIM_CHANNELS.get(ch)
            if lamp is not None and level > 0:
                out[lamp] = out.get(lamp, 0.0) + level / 100.0
        if gain != 1.0:
            out = {k: v * gain for k, v in out.items()}
        return out

    def _render(self, part_id: str, lamps: dict[str, float]) -> np.ndarray:
        from afrd.data import render as R

        key = (part_id, tuple(sorted(lamps.items())))
        if self.config.noise_seed is None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t0 = time.perf_counter()
        part = self.parts.part(part_id)
        rng = None
        if self.config.noise_seed is not None:
            rng = np.random.default_rng([self.config.noise_seed, _stable(part_id), self._frames])
        img = R.render(part, lamps, self.size, rng=rng)
        self.render_s += time.perf_counter() - t0
        if self.config.noise_seed is None:
            self._cache[key] = img
            # ~6-7 lamp sets per part; keep the last few parts.
            while len(self._cache) > 8 * self._cache_parts:
                self._cache.popitem(last=False)
        return img

    def _sensor(self, img: np.ndarray) -> np.ndarray:
        """The lens and sensor on the rendered image: vignetting, then the black level."""
        k, dark = self.config.vignetting, self.config.dark_offset
        if k == 0 and dark == 0:
            return img
        out = img.astype(np.float32)
        if k > 0:
            out *= fall_off(img.shape[0], img.shape[1], k)[..., None]
        return np.clip(out + (dark + 0.5), 0, 255).astype(np.uint8)

    def trigger(self) -> None:
        if not self._open:
            raise DeviceError(f"{self.name}: trigger on a closed camera")
        if self.hardware_trigger:
            return  # the line starts the exposure
        self._expose()

    def _expose(self) -> None:
        if self._part_id is None:
            raise DeviceError(f"{self.name}: exposure before start_part(): no part in the cell")
        with self._lock:
            self.last_lamps = self.lamps()
            self._frame = self._sensor(self._render(self._part_id, self.last_lamps))
            self._frames += 1

    def grab(self, timeout_s: float | None = None) -> np.ndarray:
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if not self._open:
            raise DeviceError(f"{self.name}: grab on a closed camera")
        if self.hardware_trigger:
            if self._frames == 0:
                self._wait_for_line(timeout)
            self._expose()
        with self._lock:
            frame, self._frame = self._frame, None
        if frame is None:
            time.sleep(timeout)  # what a real camera does with no trigger: nothing, then timeout
            raise FrameTimeout(f"{self.name}: no frame within {timeout} s (not triggered)")
        return frame.copy()

    def _wait_for_line(self, timeout: float) -> None:
        """Block until an edge arrives on the trigger line; FrameTimeout after ``timeout``."""
        if self._line is None:
            time.sleep(timeout)  # nothing wired to the line: it never fires
            raise FrameTimeout(f"{self.name}: no frame within {timeout} s (no trigger line wired)")
        self._line.settimeout(timeout)
        try:
            self._line.recv(64)
        except TimeoutError:
            raise FrameTimeout(
                f"{self.name}: no frame within {timeout} s (no edge on the trigger line)"
            ) from None

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


def _stable(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
