"""Connection floods for the fault tests: idle TCP connections that never send a byte, opened
as fast as the listener takes them, and what the daemon's process holds meanwhile."""

from __future__ import annotations

import errno
import os
import select
import socket

from _daemon_helpers import wait_for


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listener on 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # LISTEN: rx_queue = accept queue
                return int(fields[4].split(":")[1], 16)
    return 0


def open_idle(port: int, n: int, out: list[socket.socket], batch: int = 16) -> None:
    """``n`` connections to ``port`` that never send a byte, into ``out`` (the caller closes
    them, also when this fails), ``batch`` at a time: each batch waits until the listener took
    the last from its accept queue (a queue that overflows turns further connections into
    SYN-cookie ghosts the daemon never sees; the PLC servers' backlog is their cap, 32)."""
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)
        out.append(s)
        if (i + 1) % batch == 0:
            wait_for(lambda: accept_queue(port) == 0, what=f"port {port} accepting")


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server closed (EOF or reset; a greeting it sent, as ZeroMQ
    sends one, is read and does not count)."""
    poller = select.poll()  # select() stops at descriptor 1023
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    for fd, _ in poller.poll(0):
        s = by_fd[fd]
        try:
            while s.recv(65536):
                pass
            closed += 1  # b"": end of file
        except BlockingIOError:
            pass  # data only, still open
        except OSError:
            closed += 1  # reset
    return closed


def usage(pid: int) -> tuple[int, int]:
    """(open descriptors, RSS in KiB) of ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss
