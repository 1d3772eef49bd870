"""The PLC side of `bench/daemon.py --plc`: what a line puts on the daemon's OPC UA and Modbus
servers while it inspects.

- an OPC UA client (asyncua) subscribed to the last result (Seq, Verdict, Score, PartId) at a
  50 ms publishing interval, as an MES or SCADA client would be;
- a Modbus TCP client (pymodbus) reading the whole register map every 20 ms, a PLC's cycle.

``PlcClients(ua_port, mb_port)`` is a context manager; ``.ua_changes`` and ``.mb_reads`` count
what they received, so a run shows the servers were answering throughout.
"""

from __future__ import annotations

import threading
import time


class PlcClients:
    def __init__(self, ua_port: int, mb_port: int, poll_s: float = 0.02) -> None:
        self.ua_url = f"opc.tcp://127.0.0.1:{ua_port}/afrd/"
        self.mb_port = mb_port
        self.poll_s = poll_s
        self.ua_changes = 0
        self.mb_reads = 0
        self.mb_errors = 0
        self.ua_status: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-modbus", daemon=True)
        self._ua = None

    def datachange_notification(self, _node, _val, _data) -> None:  # asyncua handler
        self.ua_changes += 1

    def status_change_notification(self, status) -> None:  # e.g. the subscription timed out
        self.ua_status.append(str(status))

    def __enter__(self) -> PlcClients:
        from asyncua import ua
        from asyncua.sync import Client

        self._ua = Client(self.ua_url, timeout=10)
        self._ua.connect()
        ns = self._ua.get_namespace_index("urn:afrd:inspection")
        nodes = [
            self._ua.get_node(ua.NodeId(f"Cell.LastResult.{n}", ns))
            for n in ("Seq", "Verdict", "Score", "PartId")
        ]
        self._sub = self._ua.create_subscription(50, self)
        self._sub.subscribe_data_change(nodes)
        self._thread.start()
        return self

    def _poll(self) -> None:
        from pymodbus.client import ModbusTcpClient

        from afrd.daemon.interfaces.modbus import SIZE

        c = ModbusTcpClient("127.0.0.1", port=self.mb_port, timeout=5)
        c.connect()
        try:
            while not self._stop.is_set():
                r = c.read_holding_registers(0, count=SIZE)
                if r.isError():
                    self.mb_errors += 1
                else:
                    self.mb_reads += 1
                time.sleep(self.poll_s)
        finally:
            c.close()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._ua is not None:
            try:
                self._sub.delete()
            finally:
                self._ua.disconnect()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_clients(ua_port: int, mb_port: int, stop, conn) -> None:
    with PlcClients(ua_port, mb_port) as c:
        conn.send("ready")
        stop.wait()
    conn.send((c.ua_changes, c.mb_reads, c.mb_errors, c.ua_status))


class PlcClientsProcess:
    """``PlcClients`` in a child process (spawned), as on a line where the PLC and the MES are
    other machines: their Python does not compete for the server process's GIL. ``.seen`` after
    exit: (OPC UA data changes, Modbus reads, Modbus errors, OPC UA status changes)."""

    def __init__(self, ua_port: int, mb_port: int) -> None:
        self.ports = (ua_port, mb_port)
        self.seen: tuple | None = None

    def __enter__(self) -> PlcClientsProcess:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_run_clients, args=(*self.ports, self._stop, child))
        self._proc.start()
        if not self._conn.poll(120) or self._conn.recv() != "ready":
            self._proc.kill()
            raise RuntimeError("PLC clients did not connect within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._conn.poll(30):
            self.seen = self._conn.recv()
        self._proc.join(timeout=30)
