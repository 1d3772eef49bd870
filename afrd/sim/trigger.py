"""The simulated cell's hardware-trigger wiring: part sensor -> the light controller's trigger
input -> strobe and camera trigger (docs/architecture.md, "Hardware trigger").

:class:`PartSensor` is the sensor: a UNIX datagram socket, one datagram per edge (a part
arriving), handed to a callback from its own thread, as an opto input interrupts a controller.
:class:`Strobe` is what the controller puts on its camera-trigger output for one edge: the
time, the channels lit continuously and the pulses that edge fired, each with its delay and
width, so the camera can integrate exactly the light that falls inside its exposure window.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from afrd.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Strobe:
    """One edge on the controller's trigger input ``input`` at ``t`` (time.monotonic()), as
    its camera-trigger output carries it: ``continuous`` {channel: level %} lit throughout,
    ``pulses`` {channel: (level %, delay µs, width µs)} fired by this edge."""

    input: int
    t: float
    continuous: dict[int, float] = field(default_factory=dict)
    pulses: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def light(self, exposure_us: float) -> dict[int, float]:
        """{channel: level %} seen by an exposure that opens at the edge and lasts
        ``exposure_us``: continuous channels whole, each pulse scaled by the fraction of its
        width inside the window (a pulse delayed past the exposure adds nothing)."""
        out = {c: lv for c, lv in self.continuous.items() if lv > 0}
        for c, (level, delay, width) in self.pulses.items():
            inside = max(0.0, min(delay + width, exposure_us) - max(delay, 0.0))
            if level > 0 and inside > 0:
                out[c] = out.get(c, 0.0) + level * inside / width
        return out


class PartSensor:
    """A part sensor on ``path``: every datagram received calls ``on_edge()`` (from the
    sensor's thread). ``close()`` unbinds it and removes the socket file."""

    def __init__(self, path: Path | str, on_edge: Callable[[], object]) -> None:
        self.path = Path(path)
        self._on_edge = on_edge
        self.edges = 0
        self.path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(str(self.path))
        except OSError as exc:
            self._sock.close()
            raise DeviceError(f"part sensor: cannot bind {self.path}: {exc}") from exc
        # close() wakes the blocked recv through this pipe: closing a socket another thread is
        # blocked on does not reliably wake it
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="afrd-part-sensor", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                self._sock.recv(64)
            except OSError:
                return
            self.edges += 1
            try:
                self._on_edge()
            except Exception as exc:  # a wiring fault must not stop the sensor
                log.error("part sensor %s: edge handler failed: %s", self.path, exc)

    def close(self) -> None:
        if self._thread is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2.0)
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._sock.close()
        self.path.unlink(missing_ok=True)
