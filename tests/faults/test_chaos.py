"""Issue 21: the chaos soak. One real `afrd run` on the simulated cell with every interface on
(ZeroMQ, OPC UA, Modbus, metrics, the recorder, the operator page as its own process) inspects
2,000 parts while a fixed schedule injects faults: an engine that raises or answers with an
empty batch (about one part in four, `_bundles.make_faulty_bundle`), frames lost on the way
(camera timeouts), controller errors, pauses, good and broken reloads over the control socket
and by SIGHUP, floods of idle connections on every port, and a subscriber that never reads.

It asserts the invariant: every trigger has exactly one result and the sequence numbers are
contiguous; the OPC UA and Modbus counters equal the ZeroMQ counts; the process never dies and
logs no traceback; the recorder's directory trains (`afrd train --data` accepts it)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter

import pytest
import zmq
from _bundles import make_faulty_bundle
from _daemon_helpers import wait_for
from _flood import open_idle
from _plc_helpers import free_port
from conftest import afrd

from afrd.daemon.ctl import request
from afrd.daemon.verdict import parse_message
from afrd.sim.launch import Daemon, wait_subscribed, write_config
from afrd.web.launch import WebProcess

PARTS = 2000
FLOOD = 150  # idle connections per port, on six ports at once
OUTSTANDING = 24  # triggers ahead of the results: the queue stays busy, mostly not overrun


class Results:
    """Every result on the PUB socket, by seq, read on a thread of its own."""

    def __init__(self, sub: zmq.Socket) -> None:
        self.sub, self.by_seq, self.twice = sub, {}, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(100):
                kind, _, msg, _ = parse_message(self.sub.recv_multipart())
                if kind == "result":
                    if msg["seq"] in self.by_seq:
                        self.twice.append(msg["seq"])
                    self.by_seq[msg["seq"]] = msg

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


def _config(tmp_path, bundle) -> tuple:
    ports = {k: free_port() for k in ("pub", "control", "opcua", "modbus", "metrics")}
    extra = f"""[recorder]
enabled = true
dir = "{tmp_path}/captures"
pass_sample_rate = 0.05
max_bytes = 400000
min_free_bytes = 0

[queues]
triggers = 32

[opcua]
enabled = true
host = "127.0.0.1"
port = {ports["opcua"]}

[modbus]
enabled = true
host = "127.0.0.1"
port = {ports["modbus"]}
"""
    cfg = write_config(
        tmp_path,
        bundle,
        size=32,
        controller='kind = "sim"\nerror_every = 997',
        camera="seed = 7\ntimeout_s = 0.2\nlose_every = 89",
        extra=extra,
    )
    text = cfg.read_text()
    for key in ("pub", "control"):
        sock = "pub.sock" if key == "pub" else "ctl.sock"
        text = text.replace(f'"ipc://{tmp_path}/{sock}"', f'"tcp://127.0.0.1:{ports[key]}"')
    text = text.replace("heartbeat_s = 0.5", "heartbeat_s = 0.5\nsndhwm = 100000")
    text = text.replace("[metrics]\nport = 0", f"[metrics]\nport = {ports['metrics']}")
    cfg.write_text(text)
    return cfg, ports


def _counters_opcua(port: int) -> dict[str, int]:
    from asyncua import ua
    from asyncua.sync import Client

    with Client(f"opc.tcp://127.0.0.1:{port}/afrd/", timeout=5) as c:
        ns = c.get_namespace_index("urn:afrd:inspection")
        names = ("Parts", "Pass", "Fail", "Error")
        return {n: c.get_node(ua.NodeId(f"Cell.Counters.{n}", ns)).read_value() for n in names}


def _counters_modbus(port: int) -> dict[str, int]:
    from pymodbus.client import ModbusTcpClient

    from afrd.daemon.interfaces.modbus import ADDR, from_words32

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert c.connect()
    try:
        r = c.read_holding_registers(ADDR["parts"], count=8).registers
    finally:
        c.close()
    names = ("Parts", "Pass", "Fail", "Error")
    return {n: from_words32(r[2 * i], r[2 * i + 1]) for i, n in enumerate(names)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_soak(tmp_path):
    bundle = make_faulty_bundle(tmp_path / "faulty", size=32)
    cfg, ports = _config(tmp_path, bundle)
    good = cfg.read_text()
    dm = Daemon(cfg).start()
    web = WebProcess(cfg).start()
    ports["web"] = web.port
    ctx = zmq.Context.instance()
    deaf = ctx.socket(zmq.SUB)  # a subscriber that never reads
    deaf.setsockopt(zmq.RCVHWM, 1)
    deaf.setsockopt(zmq.SUBSCRIBE, b"")
    deaf.connect(dm.pub)
    sub = dm.subscriber([b"result.", b"status."])
    wait_subscribed(sub)
    results = Results(sub)
    flood: list[socket.socket] = []
    refused: Counter = Counter()
    t0 = time.monotonic()

    def reload(text: str | None, how: str) -> None:
        cfg.write_text(text if text is not None else good)
        if how == "hup":
            dm.proc.send_signal(signal.SIGHUP)
        else:
            r = dm.ctl({"cmd": "reload"}, timeout_s=30)
            assert r["ok"] == (text is None or "threshold = 0.4" in text), r

    schedule = {
        150: lambda: [open_idle(port, FLOOD, flood) for port in ports.values()],
        300: lambda: reload(good.replace("heatmaps = true", "heatmaps = true\nthreshold = 0.4"), "ctl"),
        450: lambda: [s.close() for s in flood] and flood.clear(),
        600: lambda: reload("cell = [broken\n", "ctl"),
        650: lambda: reload(None, "hup"),
        800: lambda: dm.ctl({"cmd": "pause"}),
        830: lambda: dm.ctl({"cmd": "resume"}),
        1000: lambda: reload(good.replace(str(bundle), str(tmp_path / "gone")), "hup"),
        1100: lambda: reload(None, "ctl"),
        1300: lambda: [open_idle(port, FLOOD, flood) for port in ports.values()],
        1500: lambda: [s.close() for s in flood] and flood.clear(),
        1700: lambda: reload(good.replace("heatmaps = true", "heatmaps = false"), "hup"),
        1850: lambda: reload(None, "ctl"),
    }  # fmt: skip
    try:
        for i in range(PARTS):
            if i in schedule:
                schedule[i]()
            wait_for(lambda i=i: i - len(results.by_seq) < OUTSTANDING, timeout=60, what="results")
            r = request(dm.control, {"cmd": "trigger", "part_id": f"chaos-{i}"}, 10.0)
            assert r is not None, f"control did not answer trigger {i}"
            if not r["ok"]:
                refused[r["error"].split(": ")[-1].split(";")[0][:40]] += 1
            assert dm.proc.poll() is None, dm.output()
        wait_for(lambda: len(results.by_seq) >= PARTS, timeout=60, what="every result")
        took = time.monotonic() - t0
        st = dm.ctl({"cmd": "status"})["result"]
        zmq_counts = Counter(m["verdict"] for m in results.by_seq.values())
        want = {
            "Parts": PARTS,
            "Pass": zmq_counts["pass"],
            "Fail": zmq_counts["fail"],
            "Error": zmq_counts["error"],
        }
        opc = wait_for(lambda: (c := _counters_opcua(ports["opcua"])) == want and c, what="OPC UA")
        mb = wait_for(lambda: (c := _counters_modbus(ports["modbus"])) == want and c, what="Modbus")
    finally:
        for s in flood:
            s.close()
        results.stop()
        deaf.close()
        sub.close()
        web.stop()
        rc = dm.stop()
    assert rc == 0, dm.output()
    assert not results.twice, results.twice
    assert sorted(results.by_seq) == list(range(PARTS))
    codes = Counter(m["error"]["code"] for m in results.by_seq.values() if m["verdict"] == "error")
    print(
        f"\nchaos: {PARTS} parts in {took:.0f} s, verdicts {dict(zmq_counts)}, error codes "
        f"{dict(codes)}, refused at the socket {dict(refused)}, status parts {st['parts']}, "
        f"OPC UA {opc}, Modbus {mb}"
    )
    # every kind of fault happened and was survived
    assert {"infer", "acquire", "paused"} <= set(codes), codes
    assert zmq_counts["pass"] + zmq_counts["fail"] > PARTS // 2
    assert st["flushed_frames"] == 0  # a lost frame never comes late: nothing to flush
    log = (dm.dir / "daemon.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    assert "reload failed" in log  # the broken SIGHUP reload was logged, not fatal
    # the recorder's directory trains
    rec = tmp_path / "captures"
    assert afrd("label", str(rec), "--all", "--good").returncode == 0
    p = afrd(
        "train", "--data", str(rec), "--model", "memory", "--image-size", "32",
        "--threads", "1", "--out", str(tmp_path / "run"), timeout=240,
    )  # fmt: skip
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
