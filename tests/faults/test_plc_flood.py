"""Issue 21, item 4: a flood of idle TCP connections to the OPC UA and Modbus ports, against the
real `afrd run` with its descriptor limit lowered to 1024 (``prlimit`` on the running daemon, so
whatever limit the daemon raised itself to at start does not hide a missing cap). Each server
holds at most ``max_connections`` and closes the rest at once; idle ones are dropped after
``idle_timeout_s`` (Modbus) or ``hello_timeout_s`` (OPC UA). The daemon stays up, control
answers, parts triggered during the flood get exactly one result, real clients get in, and the
log grows by a few lines, not thousands."""

from __future__ import annotations

import asyncio
import resource
import socket

import pytest

pytest.importorskip("pymodbus", reason="the plc extra (pymodbus) is not installed")
pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from _flood import closed_by_server, open_idle, usage  # noqa: E402
from _plc_helpers import free_port, plc_config, wait_for  # noqa: E402
from conftest import results_for  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402
from pymodbus.exceptions import ModbusException  # noqa: E402

from afrd.sim.launch import Daemon, wait_subscribed  # noqa: E402

FLOOD = 1100  # per port: more than the daemon's descriptor limit below
FD_LIMIT = 1024
CAP = 32  # the default max_connections of both servers


def modbus_reads(port: int) -> bool:
    """A fresh Modbus client connects and reads. The asyncio client: the sync one select()s,
    which fails on this process's descriptors above 1023 while the flood is open."""

    async def read() -> bool:
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        try:
            return await c.connect() and not (await c.read_holding_registers(0, count=4)).isError()
        except ModbusException:
            return False
        finally:
            c.close()

    return asyncio.run(read())


def opcua_parts(url: str) -> int | None:
    """Counters.Parts read by a fresh OPC UA client session; None if it cannot connect."""
    from asyncua import ua
    from asyncua.sync import Client

    c = Client(url, timeout=3)
    try:
        c.connect()
    except Exception:
        c.tloop.stop()  # a refused client keeps its loop thread: stop it
        return None
    try:
        ns = c.get_namespace_index("urn:afrd:inspection")
        return c.get_node(ua.NodeId("Cell.Counters.Parts", ns)).read_value()
    finally:
        c.disconnect()


@pytest.mark.timeout(240)
def test_idle_connection_flood_on_both_plc_ports(bundle, tmp_path):
    mb, ua_port = free_port(), free_port()
    cfg = plc_config(
        tmp_path,
        bundle,
        opcua=f"port = {ua_port}\nhello_timeout_s = 2",
        modbus=f"port = {mb}\nidle_timeout_s = 2",
    )
    url = f"opc.tcp://127.0.0.1:{ua_port}/afrd/"
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    flood: list[socket.socket] = []
    log = tmp_path / "daemon.log"
    try:
        wait_subscribed(sub)
        pid = dm.proc.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        fds0, rss0 = usage(pid)
        lines0 = len(log.read_text().splitlines())
        open_idle(mb, FLOOD, flood)
        open_idle(ua_port, FLOOD, flood)
        ids = [f"flood-{i}" for i in range(5)]
        for pid_ in ids:  # control answers during the flood
            assert dm.ctl({"cmd": "trigger", "part_id": pid_})["ok"]
        results_for(sub, ids)  # each exactly once
        # the servers closed every connection over their caps; the daemon's descriptors stay
        # within the caps (+ the client sessions below)
        want = 2 * (FLOOD - CAP)
        got = wait_for(
            lambda: (lambda n: n if n >= want else 0)(closed_by_server(flood)),
            timeout=60,
            what=f"{want} flood connections closed by the daemon",
        )
        fds1, rss1 = usage(pid)
        assert dm.proc.poll() is None, dm.output()
        assert fds1 <= fds0 + 2 * CAP + 8, (fds0, fds1)
        # the idle slot holders are dropped (2 s): real clients get in while the flood's
        # sockets are all still open on this side
        wait_for(lambda: modbus_reads(mb), timeout=60, what="a Modbus client during the flood")
        parts = wait_for(lambda: opcua_parts(url), timeout=60, what="OPC UA during the flood")
        assert parts == len(ids)
        dropped = closed_by_server(flood)
        fds2, rss2 = usage(pid)
    finally:
        for s in flood:
            s.close()
    try:
        # after the flood: clients and triggers as before
        assert modbus_reads(mb)
        assert dm.ctl({"cmd": "trigger", "part_id": "after-flood"})["ok"]
        results_for(sub, ["after-flood"])
        wait_for(lambda: opcua_parts(url) == len(ids) + 1, what="OPC UA after the flood")
        text = log.read_text()
        new = text.splitlines()[lines0:]
        print(
            f"\nflood: {2 * FLOOD} connections opened, {got} closed at once by the servers, "
            f"{dropped} closed in all by the end (idle ones dropped); daemon fds {fds0} -> "
            f"{fds1} (during) -> {fds2}, RSS {rss0} -> {rss1} -> {rss2} KiB; "
            f"{len(new)} log lines during the flood"
        )
        assert "out of system resource" not in text
        assert len(new) < 40, "\n".join(new[:60])
        assert any("max_connections" in line for line in new), new  # refusals are reported
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
