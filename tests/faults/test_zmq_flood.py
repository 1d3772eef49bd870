"""Issue 21, item 4 (ZeroMQ part): a flood of idle TCP connections to the PUB and control ports.

libzmq accepts every peer and aborts the process ("Too many open files") when a descriptor it
needs is not there; the daemon started under Linux's default soft limit of 1024 used to die
that way (rc -6), control deaf before. Now it raises its soft limit to the hard one at start
(the reserve for its own sockets and files) and drops peers that never complete the ZeroMQ
handshake after 5 s: control answers during the flood, parts get exactly one result, and the
idle peers are gone soon after."""

from __future__ import annotations

import resource
import socket

import pytest
from _daemon_helpers import wait_for
from _flood import closed_by_server, open_idle, usage
from _plc_helpers import free_port
from conftest import results_for

from afrd.sim.launch import Daemon, wait_subscribed, write_config

FLOOD = 1100  # per port: more than the default soft limit of 1024


def _soft_limit(pid: int) -> int:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]


@pytest.mark.timeout(240)
def test_idle_connection_flood_on_the_pub_and_control_ports(bundle, tmp_path):
    pub, ctl = free_port(), free_port()
    cfg = write_config(tmp_path, bundle)
    text = cfg.read_text()
    text = text.replace(f'"ipc://{tmp_path}/pub.sock"', f'"tcp://127.0.0.1:{pub}"')
    cfg.write_text(text.replace(f'"ipc://{tmp_path}/ctl.sock"', f'"tcp://127.0.0.1:{ctl}"'))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * FLOOD + 256:
        pytest.skip(f"hard descriptor limit {hard}: too low to flood {FLOOD} per port")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the child inherits
    try:
        dm = Daemon(cfg).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    sub = dm.subscriber([b"result.", b"status."])
    flood: list[socket.socket] = []
    try:
        wait_subscribed(sub)
        pid = dm.proc.pid
        assert _soft_limit(pid) == hard, "the daemon did not raise its descriptor limit"
        fds0, _ = usage(pid)
        open_idle(pub, FLOOD, flood)
        open_idle(ctl, FLOOD, flood)
        fds1, _ = usage(pid)
        assert fds1 >= fds0 + FLOOD, (fds0, fds1)  # the daemon holds them: a real flood
        ids = [f"flood-{i}" for i in range(5)]
        for part in ids:  # control answers during the flood
            assert dm.ctl({"cmd": "trigger", "part_id": part}, timeout_s=5)["ok"]
        results_for(sub, ids)
        # peers that never said hello are dropped after the handshake interval
        wait_for(
            lambda: closed_by_server(flood) >= 2 * FLOOD - 10,
            timeout=60,
            what="the idle peers dropped",
        )
        fds2, _ = usage(pid)
        assert fds2 < fds0 + 50, (fds0, fds1, fds2)
        assert dm.proc.poll() is None
    finally:
        for s in flood:
            s.close()
    try:
        assert dm.ctl({"cmd": "trigger", "part_id": "after-flood"})["ok"]
        results_for(sub, ["after-flood"])
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
    assert "Traceback" not in dm.output()
