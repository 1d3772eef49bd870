"""The PLC side of `bench/daemon.py --plc`: what a line puts on the daemon's OPC UA and Modbus
servers while it inspects.

- an OPC UA client (asyncua) subscribed to the last result (Seq, Verdict, Score, PartId) at a
  50 ms publishing interval, as an MES or SCADA client would be;
- a Modbus TCP client (pymodbus) reading the whole register map every 20 ms, a PLC's cycle;
- with ``mv_ports``, OPC UA servers with the Machine Vision object (`bench/plc.py`): on each
  the same subscription plus one to its ResultReadyEvents, as a vision-standard client would.

``PlcClients(ua_port, mb_port)`` is a context manager; ``.ua_changes`` and ``.mb_reads`` count
what they received, so a run shows the servers were answering throughout.
"""

from __future__ import annotations

import threading
import time


class PlcClients:
    def __init__(
        self, ua_port: int, mb_port: int, poll_s: float = 0.02, mv_ports: tuple[int, ...] = ()
    ) -> None:
        self.ua_url = f"opc.tcp://127.0.0.1:{ua_port}/afrd/"
        self.mv_urls = [f"opc.tcp://127.0.0.1:{p}/afrd/" for p in mv_ports]
        self.mv_events = 0
        self._mv: list = []  # (client, subscription) per MV server
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

    def event_notification(self, _event) -> None:  # asyncua handler: a ResultReadyEvent
        self.mv_events += 1

    def _subscribe(self, url: str):
        from asyncua import ua
        from asyncua.sync import Client

        c = Client(url, timeout=10)
        c.connect()
        ns = c.get_namespace_index("urn:afrd:inspection")
        nodes = [
            c.get_node(ua.NodeId(f"Cell.LastResult.{n}", ns))
            for n in ("Seq", "Verdict", "Score", "PartId")
        ]
        sub = c.create_subscription(50, self)
        sub.subscribe_data_change(nodes)
        return c, sub

    def __enter__(self) -> PlcClients:
        from asyncua import ua

        from afrd.daemon.interfaces.opcua_mv_types import register_aliases

        self._ua, self._sub = self._subscribe(self.ua_url)
        for url in self.mv_urls:
            c, sub = self._subscribe(url)
            self._mv.append((c, sub))
            mv = c.get_namespace_index("http://opcfoundation.org/UA/MachineVision")
            register_aliases(mv)
            c.load_data_type_definitions()  # decode the events' structures
            afrd = c.get_namespace_index("urn:afrd:inspection")
            vs = c.nodes.objects.get_child(f"{afrd}:VisionSystem")
            sub.subscribe_events(vs, c.get_node(ua.NodeId(1024, mv)))
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
        for c, sub in [(self._ua, getattr(self, "_sub", None)), *self._mv]:
            if c is not None:
                try:
                    sub.delete()
                finally:
                    c.disconnect()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_clients(ua_port: int, mb_port: int, mv_ports: tuple, stop, conn) -> None:
    with PlcClients(ua_port, mb_port, mv_ports=mv_ports) as c:
        conn.send("ready")
        stop.wait()
    conn.send((c.ua_changes, c.mb_reads, c.mb_errors, c.ua_status, c.mv_events))


class PlcClientsProcess:
    """``PlcClients`` in a child process (spawned), as on a line where the PLC and the MES are
    other machines: their Python does not compete for the server process's GIL. ``.seen`` after
    exit: (OPC UA data changes, Modbus reads, Modbus errors, OPC UA status changes,
    ResultReadyEvents received)."""

    def __init__(self, ua_port: int, mb_port: int, mv_ports: tuple[int, ...] = ()) -> None:
        self.ports = (ua_port, mb_port, mv_ports)
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
