"""One part, N lights: for each lighting condition in order apply, settle, trigger, grab, correct.

The result is an :class:`ImageSet` with a timestamp per image and ``meta["timings"]``: seconds
per step per light (``per_light``), per step summed over lights, and ``total``. Any failure
raises a DeviceError (ConfigError for a condition the controller cannot express) naming the
part, the light and the step, so the daemon can publish an ``error`` verdict and go on.

A product recipe passes its own :class:`Setup` (conditions, flat-field, exposures) to
``acquire``: it is read once at the start of the part, so a changeover between two parts never
mixes settings within a part.

Stale frames: before a part's first light the camera's queue is flushed, so a frame that arrived
late for an earlier part (its grab timed out, the part became an ``error``) cannot become this
part's first image (``meta["flushed"]``, ``camera.flushed``). In hardware-trigger mode the part
sensor starts the first exposure (the first light is not strobed by afrd) and a frame queued
between two parts may be a part that reached the sensor while the cell was busy: there the
flush runs only after a part that left an exposure it asked for without its frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from afrd.acquire.camera import Camera
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.data.imageset import ImageSet
from afrd.errors import AfrdError, ConfigError, DeviceError

STEPS = ("apply", "settle", "trigger", "grab", "correct")


class Correction(Protocol):
    def correct(self, light: str, image: np.ndarray) -> np.ndarray: ...


Corrections = Correction | Mapping[str, Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class Setup:
    """What one part is imaged with: lighting conditions in order, image corrections (e.g.
    :class:`afrd.acquire.correction.FlatField`) and exposures in µs per light."""

    conditions: Sequence[LightingCondition]
    corrections: Corrections | None = None
    exposures: Mapping[str, float] = field(default_factory=dict)


class Sequencer:
    """Acquire image sets. ``corrections``: an object with ``correct(light, image)`` (e.g.
    :class:`afrd.acquire.correction.FlatField`) or a mapping light -> function."""

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
        # An exposure was asked for (trigger or strobe) and its frame not grabbed: it may still
        # arrive, so the next part starts with a flush even in hardware-trigger mode.
        self._owed = False

    @property
    def lights(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    @property
    def setup(self) -> Setup:
        """The sequencer's own settings (used when ``acquire`` is given none)."""
        return Setup(self.conditions, self.corrections, self.exposures)

    @staticmethod
    def _correct(c: Corrections | None, light: str, image: np.ndarray) -> np.ndarray:
        if c is None:
            return image
        if isinstance(c, Mapping):
            fn = c.get(light)
            return image if fn is None else fn(image)
        return c.correct(light, image)

    def acquire(self, part_id: str, product: str = "", setup: Setup | None = None) -> ImageSet:
        """Image one part under ``setup`` (default: the sequencer's own settings)."""
        t_start = time.perf_counter()
        setup = self.setup if setup is None else setup
        if not setup.conditions:
            raise ConfigError(f"acquire part {part_id!r}: the setup has no lighting condition")
        light, step = "-", "start_part"
        per_light: dict[str, dict[str, float]] = {}
        images: list[np.ndarray] = []
        stamps: list[float] = []
        frame_ids: list[int | None] = []
        flushed = 0
        by_line = self.camera.line_triggered  # the part sensor fires the first light
        try:
            self.camera.start_part(part_id)
            step = "flush"
            # software trigger: nothing queued can be this part's; hardware: only after a part
            # that owes a frame; free-run: every grab drops what is queued anyway
            if self.camera.has_trigger or (by_line and self._owed):
                flushed = self.camera.flush()
            self._owed = False
            for k, cond in enumerate(setup.conditions):
                light = cond.name
                sensor = by_line and k == 0  # exposed when the part reaches the sensor
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
                exp = setup.exposures.get(light)
                if exp is not None and exp != self._exposure:
                    self._exposure = None
                    self.camera.set_exposure(exp)
                    self._exposure = exp
                self._owed = not sensor
                if self.camera.has_trigger:
                    self.camera.trigger()
                if cond.pulsed and not sensor:
                    self.controller.strobe(cond)
                t2 = time.perf_counter()
                t["trigger"] = t2 - t1
                step = "grab"
                img = self.camera.grab(self.grab_timeout_s)
                self._owed = False
                stamps.append(time.time())
                frame_ids.append(self.camera.last_frame_id)
                t3 = time.perf_counter()
                t["grab"] = t3 - t2
                step = "correct"
                img = self._correct(setup.corrections, light, img)
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
        lights = tuple(c.name for c in setup.conditions)
        label, mask = None, None
        truth = getattr(self.camera, "ground_truth", None)
        if callable(truth):
            label, mask = truth(part_id)
        return ImageSet(
            images=np.stack(images),
            lights=lights,
            part_id=part_id,
            product=product,
            label=label,
            mask=mask,
            timestamps=stamps,
            meta={
                "timings": timings,
                # what the part was imaged with (recorded with a capture: recipe traceability)
                "lighting": {
                    c.name: {str(ch.channel): ch.level for ch in c.channels}
                    for c in setup.conditions
                },
                "exposure_us": {n: setup.exposures[n] for n in lights if n in setup.exposures},
                "flatfield": setup.corrections is not None,
                # the camera's id of each image's frame, and stale frames dropped before them
                "frame_ids": frame_ids,
                "flushed": flushed,
            },
        )
