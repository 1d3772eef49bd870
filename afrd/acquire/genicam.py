"""A GenICam camera through harvesters (any GenTL producer: GigE Vision, USB3 Vision, simulators).

Frames are fetched with a timeout, always, copied out of the GenTL buffer before it is
re-queued, and converted to RGB uint8 from the pixel format the *buffer* reports (a device may
deliver another format than its PixelFormat node says; TLSimu does). A failed fetch other than a
timeout marks the device lost; the next grab reopens it, retrying with exponential backoff.

harvesters' ImageAcquirer installs its own SIGINT handler (one that destroys the acquirer and
swallows Ctrl-C); we save and restore the process's SIGINT/SIGTERM handlers around every
harvesters call that creates objects, so the daemon keeps its own shutdown handling.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from afrd.acquire.camera import Camera
from afrd.acquire.gentl import (
    acquire_harvester,
    describe,
    keep_signal_handlers,
    producer_files,
    prop,
    release_harvester,
)
from afrd.acquire.pixel_format import to_rgb8
from afrd.errors import DeviceError, FrameTimeout

log = logging.getLogger(__name__)

TriggerMode = Literal["software", "hardware", "free-run"]
TRIGGER_MODES = ("software", "hardware", "free-run")
WIRING = "is the light controller's camera-trigger output wired to it and firing?"


class GenICamConfig(BaseModel):
    """``[camera] kind = "genicam"``: which device, how it is set up, how long a grab waits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["genicam"] = "genicam"
    producer: str | list[str] | None = Field(
        None, description="GenTL .cti file(s) or folder(s); None = $GENICAM_GENTL64_PATH"
    )
    serial: str | None = None
    model: str | None = None
    user_name: str | None = None
    pixel_format: str | None = None
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    exposure_us: float | None = Field(None, gt=0)
    gain: float | None = None
    timeout_s: float = Field(2.0, gt=0, description="grab timeout")
    trigger_source: str = Field("Line1", description="the hardware line (trigger.mode hardware)")
    trigger_activation: str = "RisingEdge"


class GenICamCamera(Camera):
    """One GenICam device chosen by serial number, model and/or user-defined name (all given
    criteria must match, and exactly one device must match). ``trigger``: the cell's trigger
    mode decides the camera's (software trigger, hardware line, or free-run)."""

    def __init__(
        self,
        config: GenICamConfig,
        trigger: TriggerMode = "software",
        reopen_backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if trigger not in TRIGGER_MODES:
            raise DeviceError(f"camera trigger {trigger!r}: expected one of {TRIGGER_MODES}")
        self.config = config
        self.exposure_us = config.exposure_us  # set_exposure changes it; kept across a reopen
        self.trigger_mode: TriggerMode = trigger
        self.timeout_s = config.timeout_s
        self.reopen_backoff_s = reopen_backoff_s
        chosen = {"serial": config.serial, "model": config.model, "user_name": config.user_name}
        self.name = f"genicam({', '.join(f'{k}={v}' for k, v in chosen.items() if v is not None)})"
        self.skipped: list[str] = []  # features the device lacks, filled by open()
        self.last_pixel_format: str | None = None  # as the last buffer reported it
        self._harvester: Any = None
        self._ia: Any = None
        self._lock = threading.RLock()
        self._lost: str | None = None
        self._next_reopen = 0.0
        self._backoff = reopen_backoff_s[0]

    # -- Camera interface --------------------------------------------------------------------
    @property
    def has_trigger(self) -> bool:
        return self.trigger_mode == "software"

    @property
    def line_triggered(self) -> bool:
        return self.trigger_mode == "hardware"

    @property
    def is_open(self) -> bool:
        return self._ia is not None

    @property
    def lost(self) -> str | None:
        """Why the device was marked lost (None while it works)."""
        return self._lost

    def open(self) -> None:
        with self._lock:
            if self._ia is not None:
                return
            try:
                self._open()
            except BaseException:
                self._teardown()
                raise
            self._lost = None
            self._backoff = self.reopen_backoff_s[0]

    def close(self) -> None:
        with self._lock:
            self._teardown()
            self._lost = None  # closed on purpose: no reopen on a later grab

    def trigger(self) -> None:
        """Software mode: execute TriggerSoftware. Hardware mode: nothing (the light controller's
        strobe fires the camera). Free-run: nothing (grab returns a fresh frame)."""
        if self.trigger_mode != "software":
            return
        with self._lock:
            ia = self._ensure_open()
            try:
                ia.remote_device.node_map.TriggerSoftware.execute()
            except Exception as exc:  # any GenTL failure means the link is gone
                self._mark_lost(f"TriggerSoftware failed: {exc}")
                raise DeviceError(
                    f"{self.name}: TriggerSoftware failed ({exc}); "
                    "device marked lost, reopening on next grab"
                ) from exc

    def flush(self) -> int:
        """Drop the frames in the producer's output queue: fetch each with a ~1 ms timeout and
        re-queue it (harvesters 1.4 has no public flush that keeps acquisition running)."""
        with self._lock:
            if self._ia is None:
                return 0  # closed, or lost: a reopen starts with an empty queue
            try:
                n = self._drain(self._ia)
            except Exception as exc:  # any GenTL failure means the link is gone
                self._mark_lost(f"flush failed: {exc}")
                raise DeviceError(f"{self.name}: flush failed ({exc}); device marked lost") from exc
        if n:
            self.flushed += n
            log.warning("%s: dropped %d frame(s) queued before this part", self.name, n)
        return n

    def set_exposure(self, exposure_us: float) -> None:
        """Set ExposureTime (µs) on the open device, e.g. per lighting from calibration."""
        with self._lock:
            nm = self._ensure_open().remote_device.node_map
            name = next((n for n in ("ExposureTime", "ExposureTimeAbs") if nm.has_node(n)), None)
            if name is None:
                raise DeviceError(f"{self.name}: device has no ExposureTime node")
            self._set(nm, name, float(exposure_us))
            self.exposure_us = float(exposure_us)  # kept across a reopen

    def grab(self, timeout_s: float | None = None) -> np.ndarray:
        """The next frame as HxWx3 uint8 RGB. In free-run mode, frames already queued and the
        one in flight (which may have begun exposing under the previous lighting) are dropped
        first, so the frame returned started exposing after this call (costs 1-2 frame times)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise DeviceError(f"{self.name}: grab timeout {timeout!r} must be > 0")
        with self._lock:
            ia = self._ensure_open()
            deadline = time.monotonic() + timeout
            if self.trigger_mode == "free-run":
                self._drain(ia)
                self._fetch(ia, deadline)
            raw, fmt = self._fetch(ia, deadline)
        return to_rgb8(raw, fmt)

    # -- internals ---------------------------------------------------------------------------
    def _ensure_open(self) -> Any:
        if self._ia is not None:
            return self._ia
        if self._lost is None:
            raise DeviceError(f"{self.name}: camera is not open (call open() first)")
        now = time.monotonic()
        if now < self._next_reopen:
            raise DeviceError(
                f"{self.name}: device lost ({self._lost}); next reopen attempt in "
                f"{self._next_reopen - now:.1f} s"
            )
        log.warning("%s: reopening lost device (%s)", self.name, self._lost)
        try:
            self.open()
        except Exception as exc:
            self._next_reopen = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.reopen_backoff_s[1])
            raise DeviceError(
                f"{self.name}: device lost ({self._lost}); reopen failed: {exc}"
            ) from exc
        log.warning("%s: reopened", self.name)
        return self._ia

    def _mark_lost(self, why: str) -> None:
        log.error("%s: device lost: %s", self.name, why)
        self._teardown()
        self._lost = why
        self._next_reopen = 0.0  # first reopen attempt on the very next grab

    def _teardown(self) -> None:
        ia, h = self._ia, self._harvester
        self._ia = self._harvester = None
        with keep_signal_handlers():
            for what in ("stop", "destroy") if ia is not None else ():
                try:
                    getattr(ia, what)()
                except Exception as exc:  # closing a dead device must not raise
                    log.debug("%s: %s failed while closing: %s", self.name, what, exc)
            if h is not None:
                release_harvester(h)

    def _open(self) -> None:
        files = producer_files(self.config.producer)
        with keep_signal_handlers():
            self._harvester, infos = acquire_harvester(files)
            index = self._select(infos, files)
            try:
                self._ia = self._harvester.create(index)
            except Exception as exc:
                raise DeviceError(
                    f"{self.name}: cannot open {describe(infos[index])}: {exc}"
                ) from exc
        info = infos[index]
        self.name = f"{prop(info, 'model')} {prop(info, 'serial_number')}"
        self._configure(self._ia.remote_device.node_map)
        try:
            self._ia.start()
        except Exception as exc:
            raise DeviceError(f"{self.name}: AcquisitionStart failed: {exc}") from exc
        log.info(
            "%s: open (producer %s, trigger %s)",
            self.name,
            ", ".join(map(str, files)),
            self.trigger_mode,
        )

    def _select(self, infos: list[Any], files: list[Path]) -> int:
        want = {
            "serial_number": self.config.serial,
            "model": self.config.model,
            "user_defined_name": self.config.user_name,
        }
        want = {k: v for k, v in want.items() if v is not None}
        found = "; ".join(describe(i) for i in infos) or "none"
        if not infos:
            raise DeviceError(
                f"no GenICam device found by producer(s) {', '.join(map(str, files))}"
            )
        matches = [
            n
            for n, i in enumerate(infos)
            if all(str(prop(i, k)) == str(v) for k, v in want.items())
        ]
        crit = " ".join(f"{k}={v!r}" for k, v in want.items()) or "(no serial/model/user_name)"
        if not matches:
            raise DeviceError(f"no GenICam device with {crit}; devices found: {found}")
        if len(matches) > 1:
            raise DeviceError(
                f"{len(matches)} GenICam devices match {crit}; give a serial number "
                f"to pick one. Devices found: {found}"
            )
        return matches[0]

    def _set(self, nm: Any, name: str, value: Any) -> bool:
        """Set node ``name`` when the device has it; False (and logged) when it does not."""
        if not nm.has_node(name):
            self.skipped.append(name)
            log.info("%s: no %s node; skipped setting it to %r", self.name, name, value)
            return False
        node = nm.get_node(name)
        symbolics = getattr(node, "symbolics", None)
        if isinstance(value, str) and symbolics is not None and value not in symbolics:
            raise DeviceError(
                f"{self.name}: {name}={value!r} not available; the device offers {list(symbolics)}"
            )
        try:
            node.value = value
        except Exception as exc:
            raise DeviceError(f"{self.name}: setting {name}={value!r} failed: {exc}") from exc
        return True

    def _configure(self, nm: Any) -> None:
        self.skipped = []
        if self.config.pixel_format is not None:
            self._set(nm, "PixelFormat", self.config.pixel_format)
        for name, value in (("Width", self.config.width), ("Height", self.config.height)):
            if value is not None:
                self._set(nm, name, int(value))
        if self.exposure_us is not None:
            if nm.has_node("ExposureAuto"):
                self._set(nm, "ExposureAuto", "Off")
            name = (
                "ExposureTimeAbs"
                if (not nm.has_node("ExposureTime") and nm.has_node("ExposureTimeAbs"))
                else "ExposureTime"
            )
            self._set(nm, name, float(self.exposure_us))
        if self.config.gain is not None:
            if nm.has_node("GainAuto"):
                self._set(nm, "GainAuto", "Off")
            self._set(nm, "Gain", float(self.config.gain))
        self._configure_trigger(nm)

    def _configure_trigger(self, nm: Any) -> None:
        if self.trigger_mode == "free-run":
            if nm.has_node("TriggerMode"):
                self._set(nm, "TriggerMode", "Off")
            return
        missing = [n for n in ("TriggerMode", "TriggerSource") if not nm.has_node(n)]
        if self.trigger_mode == "software" and not nm.has_node("TriggerSoftware"):
            missing.append("TriggerSoftware")
        if missing:
            raise DeviceError(
                f"{self.name}: trigger={self.trigger_mode!r} needs the "
                f"{', '.join(missing)} node(s), which this device lacks; "
                "use trigger='free-run'"
            )
        if nm.has_node("TriggerSelector"):
            sel = getattr(nm.get_node("TriggerSelector"), "symbolics", ())
            if "FrameStart" in sel:
                self._set(nm, "TriggerSelector", "FrameStart")
        self._set(nm, "TriggerMode", "On")
        if self.trigger_mode == "software":
            self._set(nm, "TriggerSource", "Software")
            return
        self._set(nm, "TriggerSource", self.config.trigger_source)
        if nm.has_node("TriggerActivation"):
            self._set(nm, "TriggerActivation", self.config.trigger_activation)
        if nm.has_node("LineSelector") and nm.has_node("LineMode"):
            lines = getattr(nm.get_node("LineSelector"), "symbolics", ())
            if self.config.trigger_source in lines:
                self._set(nm, "LineSelector", self.config.trigger_source)
                self._set(nm, "LineMode", "Input")

    def _drain(self, ia: Any) -> int:
        for n in range(64):
            buffer = ia.try_fetch(timeout=0.001)
            if buffer is None:
                return n
            buffer.queue()
        return 64

    def _fetch(self, ia: Any, deadline: float) -> tuple[np.ndarray, str]:
        from genicam.gentl import TimeoutException

        timeout = max(deadline - time.monotonic(), 0.001)
        try:
            with ia.fetch(timeout=timeout) as buffer:
                comp = buffer.payload.components[0]
                fmt = str(comp.data_format)
                h, w = int(comp.height), int(comp.width)
                data = comp.data
                if data is None or data.size % (h * w):
                    raise DeviceError(
                        f"{self.name}: {fmt} buffer of {getattr(data, 'size', 0)} "
                        f"samples does not fit {w}x{h}"
                    )
                raw = data.reshape(h, w, data.size // (h * w)).copy()  # before re-queueing
                try:
                    frame_id: int | None = int(buffer.module.frame_id)
                except Exception:  # BUFFER_INFO_FRAMEID is optional for a GenTL producer
                    frame_id = None
        except TimeoutException:
            hint = f", source {self.config.trigger_source}: {WIRING}" if self.line_triggered else ""
            raise FrameTimeout(
                f"{self.name}: no frame within {timeout:.3f} s (trigger={self.trigger_mode}{hint})"
            ) from None
        except DeviceError:
            raise
        except Exception as exc:  # anything else: the device went away
            self._mark_lost(f"fetch failed: {type(exc).__name__}: {exc}")
            raise DeviceError(
                f"{self.name}: fetch failed ({exc}); device marked lost, reopening on next grab"
            ) from exc
        want = self.config.pixel_format
        if want is not None and fmt != want and self.last_pixel_format != fmt:
            log.warning(
                "%s: PixelFormat set to %s but the device delivers %s", self.name, want, fmt
            )
        self.last_pixel_format, self.last_frame_id = fmt, frame_id
        return raw, fmt
