"""The PLC servers' connection bounds (issue 21 item 4), each server alone with real clients and
raw sockets: over ``max_connections`` a connection is closed at once; a Modbus client that keeps
polling keeps its connection past ``idle_timeout_s`` while a silent one is dropped; an OPC UA
connection that never says Hello is dropped after ``hello_timeout_s`` while a client session
stays. (tests/faults/test_plc_flood.py floods the real daemon.)"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pymodbus", reason="the plc extra (pymodbus) is not installed")
pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from pymodbus.client import ModbusTcpClient  # noqa: E402

from afrd.config.plc import ModbusConfig, OpcUaConfig  # noqa: E402
from afrd.daemon.interfaces.base import Hooks  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _plc_helpers import free_port, wait_for  # noqa: E402


def hooks() -> Hooks:
    def trigger(part_id, product):  # stands in for the daemon; these tests trigger nothing
        raise AssertionError(f"unexpected trigger {part_id!r} {product!r}")

    return Hooks(trigger, lambda: {"state": "running"})


def closed_within(s: socket.socket, timeout: float) -> float:
    """Seconds until the server closed ``s`` (EOF or reset); fails after ``timeout``."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    try:
        assert s.recv(1) == b"", "the server sent data"
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


@pytest.mark.timeout(60)
def test_modbus_cap_and_idle_timeout():
    from afrd.daemon.interfaces.modbus import ModbusServer

    srv = ModbusServer(ModbusConfig(port=0, max_connections=2, idle_timeout_s=1.0), hooks())
    srv.start()
    client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=5, retries=0)
    extra: list[socket.socket] = []
    try:
        silent = socket.create_connection(("127.0.0.1", srv.port))
        extra.append(silent)
        t0 = time.monotonic()
        assert client.connect()
        assert not client.read_holding_registers(0, count=1).isError()
        over = socket.create_connection(("127.0.0.1", srv.port))  # the third: over the cap
        extra.append(over)
        assert closed_within(over, 5) < 1.0
        first = client.socket
        while time.monotonic() - t0 < 2.5:  # a PLC polling every 0.2 s, past the idle timeout
            assert not client.read_holding_registers(0, count=1).isError()
            time.sleep(0.2)
        assert client.socket is first  # never dropped, never reconnected
        closed_within(silent, 1)  # the silent one went meanwhile (else: a timeout)
        assert srv.guard.refused == 1 and srv.guard.dropped == 1
        wait_for(lambda: len(srv.guard.open) == 1, what="one connection left")
    finally:
        client.close()
        for s in extra:
            s.close()
        srv.close()


@pytest.mark.timeout(60)
def test_opcua_cap_and_hello_timeout():
    from asyncua.sync import Client

    from afrd.daemon.interfaces.opcua import OpcUaServer

    port = free_port()
    cfg = OpcUaConfig(port=port, max_connections=2, hello_timeout_s=1.0)
    srv = OpcUaServer(cfg, hooks(), "t1")
    srv.start()
    extra: list[socket.socket] = []
    try:
        with Client(f"opc.tcp://127.0.0.1:{port}/afrd/", timeout=10) as c:
            silent = socket.create_connection(("127.0.0.1", port))
            extra.append(silent)
            over = socket.create_connection(("127.0.0.1", port))
            extra.append(over)
            assert closed_within(over, 5) < 1.0  # the session + the silent one fill the cap
            assert 0.5 < closed_within(silent, 10) < 5  # no Hello within 1 s: dropped
            node = c.get_node("ns=0;i=2259")  # Server_ServerStatus_State: the session is alive
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:  # well past hello_timeout_s
                assert node.read_value() == 0
                time.sleep(0.2)
        assert srv.guard.refused == 1 and srv.guard.dropped == 1
    finally:
        for s in extra:
            s.close()
        srv.close()


def test_asyncio_errors_on_a_server_loop_are_rate_limited(caplog):
    """An accept() short of descriptors makes asyncio report it on every retry: a server's loop
    logs one line per message per 10 s, not thousands."""
    import threading

    from afrd.daemon.interfaces.modbus import ModbusServer

    srv = ModbusServer(ModbusConfig(port=0), hooks())
    srv.start()
    done = threading.Event()
    msg = "socket.accept() out of system resource"

    def burst() -> None:
        for _ in range(1000):
            srv.loop.call_exception_handler({"message": msg, "exception": OSError(24, "EMFILE")})
        done.set()

    try:
        srv.loop.call_soon_threadsafe(burst)
        assert done.wait(10)
    finally:
        srv.close()
    assert [r.getMessage() for r in caplog.records if msg in r.getMessage()] == [msg]
