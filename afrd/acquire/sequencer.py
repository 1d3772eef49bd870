"""One part, N lights: for each lighting condition in order apply, settle, trigger, grab, correct.

The result is an :class:`ImageSet` with a timestamp per image and ``meta["timings"]``: seconds
per step per light (``per_light``), per step summed over lights, and ``total``. Any failure
raises a DeviceError (ConfigError for a condition the controller cannot express) naming the
part, the light and the step, so the daemon can publish an ``error`` verdict and go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from afrd.acquire.camera import Camera
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.data.imageset import ImageSet
from afrd.errors import AfrdError, DeviceError

STEPS = ("apply", "settle", "trigger", "grab", "correct")


class Correction(Protocol):
    def correct(self, light: str, image: np.ndarray) -> np.ndarray: ...


Corrections = Correction | Mapping[str, Callable[[np.ndarray], np.ndarray]]


class Sequencer:
    """Acquire image sets. ``corrections``: an object with ``correct(light, image)`` (e.g.
    :class:`afrd.calibration.flatfield.FlatField`) or a mapping light -> function."""

    def __init__(
        self,
        controller: LightController,
        camera: Camera,
        conditions: Sequence[LightingCondition],
        corrections: Corrections | None = None,
        settle_s: float = 0.0,
        grab_timeout_s: float = 2.0,
        exposures: Mapping[str, float] | None = None,
    ) -> None:
        if not conditions:
            raise ValueError("Sequencer needs at least one lighting condition")
        self.controller = controller
        self.camera = camera
        self.conditions = list(conditions)
        self.corrections = corrections
        self.settle_s = settle_s
        self.grab_timeout_s = grab_timeout_s
        # Per-light exposure in µs (from `afrd calibrate exposure`); set before each trigger
        # when it differs from the camera's current one.
        self.exposures = dict(exposures or {})
        self._exposure: float | None = None

    @property
    def lights(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    def _correct(self, light: str, image: np.ndarray) -> np.ndarray:
        c = self.corrections
        if c is None:
            return image
        if isinstance(c, Mapping):
            fn = c.get(light)
            return image if fn is None else fn(image)
        return c.correct(light, image)

    def acquire(self, part_id: str, product: str = "") -> ImageSet:
        t_start = time.perf_counter()
        light, step = "-", "start_part"
        per_light: dict[str, dict[str, float]] = {}
        images: list[np.ndarray] = []
        stamps: list[float] = []
        try:
            self.camera.start_part(part_id)
            for cond in self.conditions:
                light = cond.name
                t = per_light[light] = dict.fromkeys(STEPS, 0.0)
                step = "apply"
                t0 = time.perf_counter()
                self.controller.apply(cond)
                t1 = time.perf_counter()
                t["apply"] = t1 - t0
                if self.settle_s > 0:
                    step = "settle"
                    time.sleep(self.settle_s)
                    t["settle"] = time.perf_counter() - t1
                step = "trigger"
                t1 = time.perf_counter()
                exp = self.exposures.get(light)
                if exp is not None and exp != self._exposure:
                    self._exposure = None
                    self.camera.set_exposure(exp)
                    self._exposure = exp
                if self.camera.has_trigger:
                    self.camera.trigger()
                if cond.pulsed:
                    self.controller.strobe(cond)
                t2 = time.perf_counter()
                t["trigger"] = t2 - t1
                step = "grab"
                img = self.camera.grab(self.grab_timeout_s)
                stamps.append(time.time())
                t3 = time.perf_counter()
                t["grab"] = t3 - t2
                step = "correct"
                img = self._correct(light, img)
                t["correct"] = time.perf_counter() - t3
                step = "check"
                if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3):
                    raise DeviceError(f"frame is not HxWx3: {getattr(img, 'shape', type(img))}")
                if img.dtype != np.uint8:
                    raise DeviceError(f"frame dtype is {img.dtype}, expected uint8")
                if images and img.shape != images[0].shape:
                    raise DeviceError(f"frame size {img.shape} differs from {images[0].shape}")
                images.append(img)
        except AfrdError as e:
            raise type(e)(f"acquire part {part_id!r}: light {light!r}, step {step}: {e}") from e
        except Exception as e:  # any device failure becomes a verdict, not a crash
            raise DeviceError(
                f"acquire part {part_id!r}: light {light!r}, step {step}: {type(e).__name__}: {e}"
            ) from e
        timings: dict = {"per_light": per_light}
        for s in STEPS:
            timings[s] = sum(t[s] for t in per_light.values())
        timings["total"] = time.perf_counter() - t_start
        label, mask = None, None
        truth = getattr(self.camera, "ground_truth", None)
        if callable(truth):
            label, mask = truth(part_id)
        return ImageSet(
            images=np.stack(images),
            lights=self.lights,
            part_id=part_id,
            product=product,
            label=label,
            mask=mask,
            timestamps=stamps,
            meta={"timings": timings},
        )
