"""Gardasoft RT-style lighting controller over a serial port (or any pyserial URL).

Every command waits for its ``>`` prompt with a timeout; ``Err n`` becomes a DeviceError naming
the command and what n means. A lost port (unplugged adapter, closed pty) fails the command in
progress with a DeviceError and is reopened on a later command, with exponential backoff between
attempts, so a caller never blocks longer than one timeout and the process never dies.
"""

from __future__ import annotations

import logging
import re
import termios
import threading
import time
from typing import Literal

import serial
from pydantic import BaseModel, ConfigDict, Field

from afrd.acquire.gardasoft_protocol import PROMPT, TERMINATOR, error_meaning, fmt_num
from afrd.acquire.lighting import LightController, LightingCondition
from afrd.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

_ERR = re.compile(r"^Err\s*(\d+)$", re.IGNORECASE)
_STATUS = re.compile(r"^CH(\d+)\s+(OFF|CONT|PULSE)\s+([\d.]+)(.*)$")


class GardasoftConfig(BaseModel):
    """``[controller] kind = "gardasoft"``: the serial link and how the driver uses it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["gardasoft"] = "gardasoft"
    port: str = Field(
        ..., min_length=1, description="serial device or pyserial URL, e.g. /dev/ttyUSB0"
    )
    baudrate: int = 115200
    timeout_s: float = Field(1.0, gt=0, description="wait for each reply")
    settle_s: float = Field(0.0, ge=0.0, le=10.0, description="wait after switching lights")
    n_channels: int = Field(8, ge=1, le=64)
    cache: bool = Field(
        True, description="skip re-sending a channel setting the controller acknowledged"
    )
    pipeline: bool = Field(
        True, description="send one apply's commands in one write (False: one by one)"
    )
    backoff_s: tuple[float, float] = Field(
        (0.2, 5.0), description="reconnect backoff: first and longest wait"
    )


class GardasoftController(LightController):
    """Driver for an RT-series controller (``config.port``: a device path or a pyserial URL such
    as ``socket://host:port``). With ``cache`` it skips commands that would re-send a channel
    setting the controller already acknowledged (cleared on any error or reconnect); with
    ``pipeline`` it sends the commands of one ``apply``/``all_off``/``strobe`` in one write and
    reads their replies in order (off for a controller whose input buffer cannot hold a batch)."""

    def __init__(self, config: GardasoftConfig, name: str = "gardasoft") -> None:
        self.config = config
        self.port = config.port
        self.timeout = config.timeout_s
        self.n_channels = config.n_channels
        self.backoff_min, self.backoff_max = config.backoff_s
        self.name = name
        self.version: str | None = None
        self.round_trips = 0  # write/read exchanges (a pipelined batch counts once)
        self.commands_sent = 0
        self.bytes_out = 0  # traffic counters: what the link would carry at the configured baud
        self.bytes_in = 0
        self._ser: serial.SerialBase | None = None
        self._lock = threading.RLock()
        self._sent: dict[int, tuple] = {}
        self._wanted_open = False
        self._backoff = self.backoff_min
        self._next_attempt = 0.0
        self.lost_reason: str | None = None

    # -- connection --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        """Open the port and check the controller answers ``VR``. Raises DeviceError."""
        with self._lock:
            self._wanted_open = True
            if self._ser is None:
                self._connect()

    def close(self) -> None:
        with self._lock:
            self._wanted_open = False
            self._drop(None)

    def _connect(self) -> None:
        try:
            ser = serial.serial_for_url(
                self.port,
                baudrate=self.config.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=self.timeout,
                write_timeout=self.timeout,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as e:
            self._schedule_retry()
            raise DeviceError(
                f"{self.name}: cannot open lighting controller port {self.port}: {e}"
            ) from e
        self._ser = ser
        self._sent.clear()
        try:
            self.version = self._transact("VR")
        except DeviceError:
            self._drop(None)
            self._schedule_retry()
            raise
        if self.lost_reason is not None:
            log.warning("%s: reconnected on %s (%s)", self.name, self.port, self.version)
        self.lost_reason = None
        self._backoff = self.backoff_min
        self._next_attempt = 0.0

    def _schedule_retry(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max)

    def _drop(self, reason: str | None) -> None:
        ser, self._ser = self._ser, None
        self._sent.clear()
        if ser is not None:
            try:
                ser.close()
            except Exception:  # closing a dead port may fail any way it likes
                pass
        if reason is not None:
            if self.lost_reason is None:
                log.error("%s: lost lighting controller on %s: %s", self.name, self.port, reason)
            self.lost_reason = reason
            self._schedule_retry()

    def _ensure_connected(self, cmd: str) -> serial.SerialBase:
        if self._ser is not None:
            return self._ser
        if not self._wanted_open:
            raise DeviceError(f"{self.name}: {cmd!r} sent to a closed controller (call open())")
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise DeviceError(
                f"{self.name}: lighting controller port {self.port} lost ({self.lost_reason}); "
                f"next reconnect attempt in {wait:.1f} s"
            )
        self._connect()
        assert self._ser is not None
        return self._ser

    def reconnect(self, wait_s: float = 10.0) -> None:
        """Block up to ``wait_s`` retrying with backoff until the controller answers again."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            self._wanted_open = True
            while True:
                try:
                    self._ensure_connected("VR")
                    return
                except DeviceError:
                    now = time.monotonic()
                    if now >= deadline:
                        raise
                    time.sleep(max(0.0, min(self._next_attempt, deadline) - now))

    # -- commands ----------------------------------------------------------------------------
    def command(self, cmd: str) -> str:
        """Send one command, return the reply body (without prompt). Raises DeviceError."""
        with self._lock:
            self._ensure_connected(cmd)
            return self._transact(cmd)

    def _transact(self, cmd: str) -> str:
        return self._transact_many([cmd])[0]

    def _transact_many(self, cmds: list[str]) -> list[str]:
        """Write ``cmds`` in one go, then read one ``>``-terminated reply per command, in order.
        One exchange instead of len(cmds) saves the per-transaction latency of the link (USB
        serial adapters add ~1 ms or more each); the controller still executes them in order."""
        ser = self._ser
        assert ser is not None
        bodies = []
        cmd = cmds[0]
        try:
            ser.reset_input_buffer()  # a late reply to a timed-out command must not answer this one
            ser.write(b"".join(c.encode("ascii") + TERMINATOR for c in cmds))
            self.round_trips += 1
            self.commands_sent += len(cmds)
            self.bytes_out += sum(len(c) + 1 for c in cmds)
            for cmd in cmds:
                raw = ser.read_until(PROMPT)
                self.bytes_in += len(raw)
                bodies.append(self._parse(cmd, raw))
        except (serial.SerialException, OSError, termios.error) as e:
            self._drop(str(e) or type(e).__name__)
            raise DeviceError(
                f"{self.name}: port {self.port} lost during {cmd!r}: {e}; will reconnect"
            ) from e
        return bodies

    def _parse(self, cmd: str, raw: bytes) -> str:
        if not raw.endswith(PROMPT):
            self._sent.clear()
            raise DeviceError(
                f"{self.name}: no reply to {cmd!r} within {self.timeout} s on {self.port}"
                + (f" (partial: {raw!r})" if raw else "")
            )
        try:
            body = raw[: -len(PROMPT)].decode("ascii").strip()
        except UnicodeDecodeError:
            self._sent.clear()
            raise DeviceError(f"{self.name}: garbled reply to {cmd!r}: {raw!r}") from None
        if not all(ch.isprintable() or ch in "\r\n" for ch in body):
            self._sent.clear()
            raise DeviceError(f"{self.name}: garbled reply to {cmd!r}: {raw!r}")
        if body.startswith(cmd):  # controllers that echo the command
            body = body[len(cmd) :].strip()
        m = _ERR.match(body)
        if m:
            code = int(m.group(1))
            self._sent.clear()
            raise DeviceError(
                f"{self.name}: command {cmd!r} failed: Err {code} ({error_meaning(code)})"
            )
        return body

    def _check_set(self, cmd: str, body: str) -> None:
        if body:
            self._sent.clear()
            raise DeviceError(f"{self.name}: garbled reply to {cmd!r}: unexpected {body!r}")

    def _set(self, cmd: str) -> None:
        self._check_set(cmd, self.command(cmd))

    def _set_many(self, cmds: list[str]) -> None:
        if not cmds:
            return
        if not self.config.pipeline or len(cmds) == 1:
            for c in cmds:
                self._set(c)
            return
        with self._lock:
            self._ensure_connected(cmds[0])
            for c, body in zip(cmds, self._transact_many(cmds), strict=True):
                self._check_set(c, body)

    # -- LightController ---------------------------------------------------------------------
    def apply(self, condition: LightingCondition) -> None:
        wanted: dict[int, tuple] = {c: ("RS", 0.0) for c in range(1, self.n_channels + 1)}
        for s in condition.channels:
            if s.channel > self.n_channels:
                raise ConfigError(
                    f"lighting {condition.name!r}: channel {s.channel} does not exist on "
                    f"{self.name} ({self.n_channels} channels)"
                )
            if s.pulse_us is not None:
                wanted[s.channel] = ("RT", s.pulse_us, s.delay_us, s.level)
            else:
                wanted[s.channel] = ("RS", s.level)
        with self._lock:
            # Switch off first so two conditions never overlap on the part.
            order = sorted(wanted, key=lambda c: (wanted[c] != ("RS", 0.0), c))
            todo = [c for c in order if not (self.config.cache and self._sent.get(c) == wanted[c])]
            cmds = [
                f"{wanted[c][0]}{c},{','.join(fmt_num(v) for v in wanted[c][1:])}" for c in todo
            ]
            self._set_many(cmds)
            for ch in todo:
                self._sent[ch] = wanted[ch]

    def all_off(self) -> None:
        with self._lock:
            self._set_many([f"RS{ch},0" for ch in range(1, self.n_channels + 1)])
            for ch in range(1, self.n_channels + 1):
                self._sent[ch] = ("RS", 0.0)

    def strobe(self, condition: LightingCondition) -> None:
        self._set_many([f"TR{ch}" for ch in condition.pulsed])

    # -- the rest of the command set ---------------------------------------------------------
    def set_continuous(self, channel: int, level: float) -> None:
        self._set(f"RS{channel},{fmt_num(level)}")
        self._sent.pop(channel, None)

    def set_pulse(self, channel: int, width_us: float, delay_us: float, level: float) -> None:
        self._set(f"RT{channel},{fmt_num(width_us)},{fmt_num(delay_us)},{fmt_num(level)}")
        self._sent.pop(channel, None)

    def set_trigger_input(self, channel: int, trigger_input: int) -> None:
        self._set(f"RP{channel},{trigger_input}")

    def software_trigger(self, channel: int) -> None:
        self._set(f"TR{channel}")

    def read_version(self) -> str:
        self.version = self.command("VR")
        return self.version

    def status(self) -> dict[int, dict]:
        """Per channel: {"mode": off|continuous|pulse, "level": %, "extra": rest of line}."""
        out: dict[int, dict] = {}
        modes = {"OFF": "off", "CONT": "continuous", "PULSE": "pulse"}
        for line in self.command("ST").splitlines():
            m = _STATUS.match(line.strip())
            if not m:
                raise DeviceError(f"{self.name}: garbled status line from 'ST': {line!r}")
            out[int(m.group(1))] = {
                "mode": modes[m.group(2)],
                "level": float(m.group(3)),
                "extra": m.group(4).strip(),
            }
        return out

    def last_error(self) -> int:
        body = self.command("GR")
        m = re.match(r"^E(\d+)$", body)
        if not m:
            raise DeviceError(f"{self.name}: garbled reply to 'GR': {body!r}")
        return int(m.group(1))
