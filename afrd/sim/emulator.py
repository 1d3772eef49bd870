"""A Gardasoft RT-style lighting controller emulated on a pseudo-terminal.

The emulator owns the master side of a pty; ``.port`` is a stable symlink to the slave (like a
udev ``/dev/serial/by-id`` link), so a closed-and-reopened port comes back under the same name.
The driver talks to it through pyserial exactly as to a USB-serial adapter.

Hardware trigger: ``input_edge(i)`` is an edge on trigger input ``i`` (the part sensor, see
``afrd.sim.trigger``). It pulses every channel in pulse mode bound to that input (``RPc,i``)
and raises the camera-trigger output: each function given to ``connect_camera`` receives the
edge as a :class:`~afrd.sim.trigger.Strobe`. ``TRc`` stays a software pulse of one channel and
does not trigger the camera.
"""

from __future__ import annotations

import os
import queue
import re
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from afrd.acquire.gardasoft_protocol import PROMPT, TERMINATOR
from afrd.sim.trigger import Strobe

FAULTS = ("no_reply", "garbled", "err")
_CMD = re.compile(r"^([A-Z]{2})(.*)$")


@dataclass(frozen=True)
class ChannelState:
    mode: str = "off"  # off | continuous | pulse
    level: float = 0.0
    pulse_us: float = 0.0
    delay_us: float = 0.0
    trigger_input: int = 1


class _CommandError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ControllerEmulator:
    """Serve the RT command set on a pty from a background thread.

    Fault injection (``inject``): ``no_reply`` (answer nothing), ``garbled`` (answer noise ending
    in ``>``), ``err`` (answer ``Err code`` and leave the state unchanged), each for the next
    ``count`` commands (``None``: until ``clear_faults``) starting with ``command`` (None:
    any); ``error_every`` answers every Nth command with ``Err 3`` for as long as it runs (a
    config's fault schedule, for a cell in another process). ``close_port()`` hangs up the pty
    as an unplugged adapter does; ``reopen_port()`` plugs a new one in under the same ``.port``.
    """

    def __init__(
        self,
        n_channels: int = 8,
        n_inputs: int = 4,
        version: str = "GARDASOFT RT820F-EMU V1.0",
        link_dir: str | os.PathLike | None = None,
        error_every: int | None = None,
    ) -> None:
        if n_channels < 1:
            raise ValueError("n_channels must be >= 1")
        self.n_channels = n_channels
        self.n_inputs = n_inputs
        self.version = version
        self._dir = Path(link_dir) if link_dir else Path(tempfile.mkdtemp(prefix="afrd-emu-"))
        self._own_dir = link_dir is None
        self.port = str(self._dir / "ttyLIGHT0")
        self.slave_path: str | None = None
        self._lock = threading.Lock()
        self._channels = {c: ChannelState() for c in range(1, n_channels + 1)}
        self._triggers = {c: 0 for c in range(1, n_channels + 1)}
        self._edges = {i: 0 for i in range(1, n_inputs + 1)}
        self._camera: list[Callable[[Strobe], object]] = []  # the camera-trigger output
        self._last_error = 0
        # kind, remaining, code, the command prefix it applies to (None: every command)
        self._fault: tuple[str, int | None, int, str | None] | None = None
        self.commands: deque[str] = deque(maxlen=10_000)
        self._error_every = error_every
        self._n_commands = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._requests: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ControllerEmulator:
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="afrd-light-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_pty()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ControllerEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what others read --------------------------------------------------------------------
    def lit(self, include_pulsed: bool = True) -> dict[int, float]:
        """Channels giving light now: {channel: level %}. Pulsed channels count as lit (the
        camera's exposure is assumed synchronised with the strobe)."""
        with self._lock:
            return {
                c: s.level
                for c, s in self._channels.items()
                if s.level > 0
                and (s.mode == "continuous" or (include_pulsed and s.mode == "pulse"))
            }

    def state(self) -> dict[int, ChannelState]:
        with self._lock:
            return dict(self._channels)

    def triggers(self) -> dict[int, int]:
        with self._lock:
            return dict(self._triggers)

    def edges(self) -> dict[int, int]:
        """Edges seen per trigger input."""
        with self._lock:
            return dict(self._edges)

    @property
    def last_error(self) -> int:
        with self._lock:
            return self._last_error

    # -- hardware trigger --------------------------------------------------------------------
    def connect_camera(self, fn: Callable[[Strobe], object]) -> None:
        """Wire a camera's trigger line to the camera-trigger output."""
        with self._lock:
            self._camera.append(fn)

    def disconnect_camera(self, fn: Callable[[Strobe], object]) -> None:
        with self._lock:
            if fn in self._camera:
                self._camera.remove(fn)

    def input_edge(self, trigger_input: int = 1) -> Strobe:
        """An edge on ``trigger_input``: the channels in pulse mode bound to it each fire one
        pulse (after their delay, for their width), and the camera-trigger output rises at the
        edge carrying what is lit. Returns that :class:`Strobe`."""
        if not 1 <= trigger_input <= self.n_inputs:
            raise ValueError(f"trigger input {trigger_input} not in 1..{self.n_inputs}")
        with self._lock:
            t = time.monotonic()
            pulses = {}
            for c, s in self._channels.items():
                if s.mode == "pulse" and s.trigger_input == trigger_input:
                    self._triggers[c] += 1
                    pulses[c] = (s.level, s.delay_us, s.pulse_us)
            cont = {c: s.level for c, s in self._channels.items() if s.mode == "continuous"}
            strobe = Strobe(trigger_input, t, cont, pulses)
            cameras = list(self._camera)
        for fn in cameras:  # outside the lock: a camera may ask what is lit
            fn(strobe)
        with self._lock:
            self._edges[trigger_input] += 1  # counted once handled: the camera has its frame
        return strobe

    # -- faults ------------------------------------------------------------------------------
    def inject(
        self, fault: str, count: int | None = 1, code: int = 3, command: str | None = None
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        with self._lock:
            self._fault = (fault, count, code, command)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None

    def close_port(self, timeout_s: float = 2.0) -> None:
        """Hang up: the driver's next read or write fails, ``.port`` dangles."""
        self._request("close", timeout_s)

    def reopen_port(self, timeout_s: float = 2.0) -> None:
        """A new pty behind the same ``.port`` (the adapter plugged back in)."""
        self._request("open", timeout_s)

    def _request(self, what: str, timeout_s: float) -> None:
        done = threading.Event()
        if self._thread is None:
            (self._close_pty if what == "close" else self._open_pty)()
            return
        self._requests.put((what, done))
        if not done.wait(timeout_s):
            raise TimeoutError(f"emulator did not {what} its port within {timeout_s} s")

    # -- pty ---------------------------------------------------------------------------------
    def _open_pty(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a plain byte pipe like a UART
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        tmp = self.port + ".new"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(self.slave_path, tmp)
        os.replace(tmp, self.port)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        try:
            os.unlink(self.port)
        except FileNotFoundError:
            pass

    # -- serving -----------------------------------------------------------------------------
    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            while not self._requests.empty():
                what, done = self._requests.get_nowait()
                if what == "close":
                    self._close_pty()
                    buf = b""
                else:
                    self._open_pty()
                done.set()
            fd = self._master
            if fd is None:
                self._stop.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.02)
                if not ready:
                    continue
                data = os.read(fd, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self._stop.wait(0.02)
                continue
            buf += data.replace(b"\n", b"")
            while TERMINATOR in buf:
                line, buf = buf.split(TERMINATOR, 1)
                reply = self._handle(line)
                if reply is not None:
                    self._write(fd, reply)

    def _write(self, fd: int, data: bytes) -> None:
        while data:
            try:
                n = os.write(fd, data)
                data = data[n:]
            except BlockingIOError:
                select.select([], [fd], [], 0.05)
            except OSError:
                return

    def _handle(self, raw: bytes) -> bytes | None:
        text = raw.decode("ascii", errors="replace").strip().upper()
        with self._lock:
            self.commands.append(text)
            self._n_commands += 1
            fault = self._fault
            if self._error_every and self._n_commands % self._error_every == 0:
                fault = ("err", None, 3, None)
            if fault is not None and (fault[3] is None or text.startswith(fault[3])):
                kind, remaining, code, prefix = fault
                if remaining is not None:
                    self._fault = (kind, remaining - 1, code, prefix) if remaining > 1 else None
                if kind == "no_reply":
                    return None
                if kind == "garbled":
                    return b"\xfe\x13Q#\x00~\x8a" + PROMPT
                self._last_error = code
                return f"Err {code}\r\n".encode() + PROMPT
            if not text:
                return PROMPT
            try:
                body = self._execute(text)
            except _CommandError as e:
                self._last_error = e.code
                return f"Err {e.code}\r\n".encode() + PROMPT
            return (body + "\r\n").encode() + PROMPT if body else PROMPT

    def _execute(self, text: str) -> str:
        m = _CMD.match(text)
        if not m:
            raise _CommandError(1)
        cmd, rest = m.group(1), m.group(2)
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        nargs = {"RS": 2, "RT": 4, "RP": 2, "TR": 1, "VR": 0, "ST": 0, "GR": 0}
        if cmd not in nargs:
            raise _CommandError(1)
        if len(args) != nargs[cmd]:
            raise _CommandError(2)
        try:
            nums = [float(a) for a in args]
        except ValueError:
            raise _CommandError(3) from None
        if cmd == "VR":
            return self.version
        if cmd == "GR":
            return f"E{self._last_error}"
        if cmd == "ST":
            return "\r\n".join(self._status_line(c, s) for c, s in self._channels.items())
        ch = int(nums[0])
        if nums[0] != ch or ch not in self._channels:
            raise _CommandError(4)
        state = self._channels[ch]
        if cmd == "RS":
            level = nums[1]
            if not 0 <= level <= 100:
                raise _CommandError(3)
            mode = "continuous" if level > 0 else "off"
            self._channels[ch] = replace(state, mode=mode, level=level)
        elif cmd == "RT":
            width, delay, level = nums[1:]
            if not (0 < width <= 999_999 and 0 <= delay <= 999_999 and 0 <= level <= 100):
                raise _CommandError(3)
            self._channels[ch] = replace(
                state, mode="pulse", level=level, pulse_us=width, delay_us=delay
            )
        elif cmd == "RP":
            inp = int(nums[1])
            if nums[1] != inp or not 1 <= inp <= self.n_inputs:
                raise _CommandError(7)
            self._channels[ch] = replace(state, trigger_input=inp)
        elif cmd == "TR":
            if state.mode != "pulse":
                raise _CommandError(5)
            self._triggers[ch] += 1
        return ""

    @staticmethod
    def _status_line(c: int, s: ChannelState) -> str:
        if s.mode == "pulse":
            return f"CH{c} PULSE {s.level:g} W{s.pulse_us:g} D{s.delay_us:g} T{s.trigger_input}"
        if s.mode == "continuous":
            return f"CH{c} CONT {s.level:g}"
        return f"CH{c} OFF 0"
