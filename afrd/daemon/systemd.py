"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET per state change.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same from a
terminal. ``watchdog_interval()`` is half of WatchdogSec (from $WATCHDOG_USEC), or None.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr:
            # '@name' is an abstract socket: the name starts with a NUL byte
            self._addr = b"\0" + addr[1:].encode() if addr.startswith("@") else addr

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; True when sent. Never raises and never blocks: a receiver
        whose queue is full (net.unix.max_dgram_qlen) loses this message rather than stalling
        the thread that reports, which may be the one publishing verdicts."""
        if self._addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self._addr)
                s.send("\n".join(fields).encode(), socket.MSG_DONTWAIT)
            return True
        except OSError:  # includes BlockingIOError (queue full) and a vanished socket
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on start-up (engine loading)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec, None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None
