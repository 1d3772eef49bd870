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

import glob
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from afrd.acquire.camera import Camera
from afrd.errors import DeviceError

log = logging.getLogger(__name__)

TriggerMode = Literal["software", "hardware", "free-run"]
TRIGGER_MODES = ("software", "hardware", "free-run")
ENV_PATH = "GENICAM_GENTL64_PATH"

# GenICam (PFNC) names the 2x2 tile from its top-left pixel: BayerRG = R G / G B.
# OpenCV names it from the second row/column (pixels (1,1),(1,2)), so the names are shifted:
# PFNC RG is OpenCV BG, GR is GB, GB is GR, BG is RG. tests/test_genicam_convert.py checks
# every pattern against a mosaic of a known colour.
BAYER_TO_CV2 = {
    "RG": cv2.COLOR_BayerBG2RGB,
    "GR": cv2.COLOR_BayerGB2RGB,
    "GB": cv2.COLOR_BayerGR2RGB,
    "BG": cv2.COLOR_BayerRG2RGB,
}


def _bits(pixel_format: str, default: int = 8) -> int:
    """Significant bits per sample from a PFNC name: Mono12 -> 12, BayerRG10p -> 10."""
    digits = "".join(ch if ch.isdigit() else " " for ch in pixel_format).split()
    return int(digits[0]) if digits else default


def _to_8bit(raw: np.ndarray, bits: int) -> np.ndarray:
    if raw.dtype == np.uint8 and bits <= 8:
        return raw
    if bits <= 8:
        return np.clip(raw, 0, 255).astype(np.uint8)
    return (raw.astype(np.uint16) >> (bits - 8)).astype(np.uint8)


def to_rgb8(raw: np.ndarray, pixel_format: str) -> np.ndarray:
    """Convert one frame (HxW or HxWxC, as the buffer holds it) to contiguous HxWx3 uint8 RGB.

    Supports Mono8/10/12/14/16, Bayer{RG,GR,GB,BG}{8,10,12,14,16} (bilinear demosaic with OpenCV),
    RGB8/BGR8/RGBa8/BGRa8 and the unpacked RGB/BGR 10/12/16. Samples wider than 8 bit are scaled
    by a right shift (full scale stays full scale). Raises DeviceError for anything else.
    """
    fmt = pixel_format
    bits = _bits(fmt)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if fmt.startswith("Mono") and "Signed" not in fmt:
        if raw.ndim != 2:
            raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxW")
        mono = _to_8bit(raw, bits)
        return cv2.cvtColor(np.ascontiguousarray(mono), cv2.COLOR_GRAY2RGB)
    if fmt.startswith("Bayer") and fmt[5:7] in BAYER_TO_CV2:
        if raw.ndim != 2:
            raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxW")
        mosaic = np.ascontiguousarray(_to_8bit(raw, bits))
        return cv2.cvtColor(mosaic, BAYER_TO_CV2[fmt[5:7]])
    for prefix, order in (("RGBa", "rgb"), ("BGRa", "bgr"), ("RGB", "rgb"), ("BGR", "bgr")):
        if (
            fmt.startswith(prefix)
            and "Planar" not in fmt
            and fmt[len(prefix) : len(prefix) + 1].isdigit()
        ):
            want = 4 if prefix.endswith("a") else 3
            if raw.ndim != 3 or raw.shape[2] != want:
                raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxWx{want}")
            rgb = raw[:, :, :3] if order == "rgb" else raw[:, :, 2::-1]
            return np.ascontiguousarray(_to_8bit(rgb, bits))
    raise DeviceError(
        f"pixel format {fmt!r} is not supported; use Mono8/10/12/16, Bayer**8/10/12/16, "
        "RGB8, BGR8, RGBa8 or BGRa8"
    )


def producer_files(producer: str | Sequence[str] | None) -> list[Path]:
    """Every .cti named by ``producer`` (files or folders, os.pathsep-separated) or, when it is
    None, by the GENICAM_GENTL64_PATH environment variable."""
    if producer is None:
        spec = os.environ.get(ENV_PATH, "")
        source = f"${ENV_PATH}={spec!r}"
    else:
        spec = producer if isinstance(producer, str) else os.pathsep.join(producer)
        source = f"camera producer {spec!r}"
    found: list[Path] = []
    for entry in filter(None, spec.split(os.pathsep)):
        path = Path(entry).expanduser()
        if path.is_dir():
            found.extend(sorted(Path(p) for p in glob.glob(str(path / "*.cti"))))
        elif path.is_file():
            found.append(path)
    if not found:
        hint = "" if producer is not None or spec else f" (set camera.producer or ${ENV_PATH})"
        raise DeviceError(f"no GenTL producer (.cti) found from {source}{hint}")
    return list(dict.fromkeys(p.resolve() for p in found))


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Restore SIGINT/SIGTERM handlers that harvesters replaces (it does so in the main thread
    when an ImageAcquirer is created)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


class _Shared:
    def __init__(self, harvester: Any, infos: list[Any]) -> None:
        self.harvester, self.infos, self.users = harvester, infos, 0


# One Harvester per producer set in the process: a GenTL producer is a process-wide library, and
# a second Harvester loading the same .cti sees no devices (TLSimu), while Harvester.update()
# invalidates every acquirer it created. So cameras on the same producers share one Harvester,
# enumerated when the first opens and reset when the last closes.
_HARVESTERS: dict[tuple[Path, ...], _Shared] = {}
_HARVESTERS_LOCK = threading.Lock()


def _acquire_harvester(files: list[Path]) -> tuple[Any, list[Any]]:
    from harvesters.core import Harvester  # heavy import; only when a real camera is used

    key = tuple(files)
    with _HARVESTERS_LOCK:
        shared = _HARVESTERS.get(key)
        if shared is None:
            h = Harvester()
            try:
                for f in files:
                    h.add_file(str(f))
                h.update()
            except Exception as exc:
                h.reset()
                raise DeviceError(
                    f"loading GenTL producer(s) {', '.join(map(str, files))} failed: {exc}"
                ) from exc
            shared = _HARVESTERS[key] = _Shared(h, list(h.device_info_list))
        shared.users += 1
        return shared.harvester, shared.infos


def _release_harvester(harvester: Any) -> None:
    with _HARVESTERS_LOCK:
        for key, shared in list(_HARVESTERS.items()):
            if shared.harvester is harvester:
                shared.users -= 1
                if shared.users <= 0:
                    del _HARVESTERS[key]
                    try:
                        harvester.reset()
                    except Exception as exc:  # noqa: BLE001
                        log.debug("Harvester.reset failed: %s", exc)
                return


def _prop(info: Any, key: str) -> Any:
    """A device-info property; None when the producer does not support it (viky has no
    user-defined name and raises on direct access)."""
    return getattr(info, "property_dict", {}).get(key)


def _describe(info: Any) -> str:
    return " ".join(
        f"{label}={_prop(info, key)!r}"
        for label, key in (
            ("model", "model"),
            ("serial", "serial_number"),
            ("user_name", "user_defined_name"),
            ("vendor", "vendor"),
        )
    )


class GenICamCamera(Camera):
    """One GenICam device chosen by serial number, model and/or user-defined name (all given
    criteria must match, and exactly one device must match)."""

    def __init__(
        self,
        producer: str | Sequence[str] | None = None,
        *,
        serial: str | None = None,
        model: str | None = None,
        user_name: str | None = None,
        pixel_format: str | None = None,
        width: int | None = None,
        height: int | None = None,
        exposure_us: float | None = None,
        gain: float | None = None,
        trigger: TriggerMode = "software",
        trigger_source: str = "Line1",
        trigger_activation: str = "RisingEdge",
        timeout_s: float = 1.0,
        reopen_backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if trigger not in TRIGGER_MODES:
            raise DeviceError(f"camera trigger {trigger!r}: expected one of {TRIGGER_MODES}")
        if not timeout_s > 0:
            raise DeviceError(f"camera timeout_s {timeout_s!r}: expected > 0")
        self.producer = producer
        self.serial, self.model, self.user_name = serial, model, user_name
        self.pixel_format, self.width, self.height = pixel_format, width, height
        self.exposure_us, self.gain = exposure_us, gain
        self.trigger_mode: TriggerMode = trigger
        self.trigger_source, self.trigger_activation = trigger_source, trigger_activation
        self.timeout_s = timeout_s
        self.reopen_backoff_s = reopen_backoff_s
        self.name = (
            "genicam("
            + ", ".join(
                f"{k}={v}"
                for k, v in (("serial", serial), ("model", model), ("user_name", user_name))
                if v is not None
            )
            + ")"
        )
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
            except Exception as exc:  # noqa: BLE001 - any GenTL failure means the link is gone
                self._mark_lost(f"TriggerSoftware failed: {exc}")
                raise DeviceError(
                    f"{self.name}: TriggerSoftware failed ({exc}); "
                    "device marked lost, reopening on next grab"
                ) from exc

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
        with _keep_signal_handlers():
            for what, fn in (
                ("stop", getattr(ia, "stop", None)),
                ("destroy", getattr(ia, "destroy", None)),
            ):
                if fn is None:
                    continue
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - closing a dead device must not raise
                    log.debug("%s: %s failed while closing: %s", self.name, what, exc)
            if h is not None:
                _release_harvester(h)

    def _open(self) -> None:
        files = producer_files(self.producer)
        with _keep_signal_handlers():
            self._harvester, infos = _acquire_harvester(files)
            index = self._select(infos, files)
            try:
                self._ia = self._harvester.create(index)
            except Exception as exc:
                raise DeviceError(
                    f"{self.name}: cannot open {_describe(infos[index])}: {exc}"
                ) from exc
        info = infos[index]
        self.name = f"{_prop(info, 'model')} {_prop(info, 'serial_number')}"
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
            "serial_number": self.serial,
            "model": self.model,
            "user_defined_name": self.user_name,
        }
        want = {k: v for k, v in want.items() if v is not None}
        found = "; ".join(_describe(i) for i in infos) or "none"
        if not infos:
            raise DeviceError(
                f"no GenICam device found by producer(s) {', '.join(map(str, files))}"
            )
        matches = [
            n
            for n, i in enumerate(infos)
            if all(str(_prop(i, k)) == str(v) for k, v in want.items())
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
        if self.pixel_format is not None:
            self._set(nm, "PixelFormat", self.pixel_format)
        for name, value in (("Width", self.width), ("Height", self.height)):
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
        if self.gain is not None:
            if nm.has_node("GainAuto"):
                self._set(nm, "GainAuto", "Off")
            self._set(nm, "Gain", float(self.gain))
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
        self._set(nm, "TriggerSource", self.trigger_source)
        if nm.has_node("TriggerActivation"):
            self._set(nm, "TriggerActivation", self.trigger_activation)
        if nm.has_node("LineSelector") and nm.has_node("LineMode"):
            lines = getattr(nm.get_node("LineSelector"), "symbolics", ())
            if self.trigger_source in lines:
                self._set(nm, "LineSelector", self.trigger_source)
                self._set(nm, "LineMode", "Input")

    def _drain(self, ia: Any) -> None:
        for _ in range(64):
            buffer = ia.try_fetch(timeout=0.001)
            if buffer is None:
                return
            buffer.queue()

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
        except TimeoutException:
            raise DeviceError(
                f"{self.name}: no frame within {timeout:.3f} s (trigger={self.trigger_mode}"
                + (
                    f", source {self.trigger_source}: is the light controller's strobe wired "
                    "and firing?"
                    if self.trigger_mode == "hardware"
                    else ""
                )
                + ")"
            ) from None
        except DeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else: the device went away
            self._mark_lost(f"fetch failed: {type(exc).__name__}: {exc}")
            raise DeviceError(
                f"{self.name}: fetch failed ({exc}); device marked lost, reopening on next grab"
            ) from exc
        if (
            self.pixel_format is not None
            and fmt != self.pixel_format
            and self.last_pixel_format != fmt
        ):
            log.warning(
                "%s: PixelFormat set to %s but the device delivers %s",
                self.name,
                self.pixel_format,
                fmt,
            )
        self.last_pixel_format = fmt
        return raw, fmt
