"""Modbus TCP at process level: a real pymodbus client against `afrd run` on the simulated cell,
with OPC UA enabled beside it, checked against the daemon's ZeroMQ results.

The handshake (README register map): the PLC writes part number and product index, raises the
trigger bit; busy while the part is inspected; done + pass/fail/error with the result
registers; the PLC drops the trigger, done drops. Every trigger, from whichever interface, is one
result on ZeroMQ, Modbus and OPC UA.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pymodbus", reason="the plc extra (pymodbus) is not installed")
pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from pymodbus.client import ModbusTcpClient  # noqa: E402
from pymodbus.exceptions import ConnectionException  # noqa: E402

from afrd.daemon.interfaces.modbus import ADDR, BUSY, DONE, ERROR, FAIL, PASS, READY, SIZE  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import REPO, Daemon, make_brightness_bundle, wait_subscribed  # noqa: E402
from _plc_helpers import free_port, plc_config, wait_for, zmq_results  # noqa: E402

PRODUCTS = ["widget", "gizmo", "gadget"]  # index 1-3; gadget has no [[product]] recipe
RECIPES = '[[product]]\nname = "default"\n\n[[product]]\nname = "widget"\n\n'
RECIPES += '[[product]]\nname = "gizmo"\nthreshold = 0.99\n'


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plc-bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


@pytest.fixture(scope="module")
def cell(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("modbus-cell")
    mb, ua = free_port(), free_port()
    cfg = plc_config(
        d,
        bundle,
        opcua=f"port = {ua}",
        modbus=f'port = {mb}\nproducts = {PRODUCTS!r}\npart_id_format = "SN-{{n:08d}}"'.replace(
            "'", '"'
        ),
        more=RECIPES,
    )
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    client = ModbusTcpClient("127.0.0.1", port=mb, timeout=5)
    assert client.connect()
    yield dm, sub, client, mb, ua
    client.close()
    sub.close()
    assert dm.stop() == 0, dm.output()


def regs(client: ModbusTcpClient, addr: int = 0, count: int = SIZE) -> list[int]:
    r = client.read_holding_registers(addr, count=count)
    assert not r.isError(), r
    return r.registers


def u32(r: list[int], name: str) -> int:
    return (r[ADDR[name]] << 16) | r[ADDR[name] + 1]


def f32(r: list[int], name: str) -> float:
    return struct.unpack(">f", struct.pack(">HH", r[ADDR[name]], r[ADDR[name] + 1]))[0]


def handshake(client: ModbusTcpClient, number: int, product_index: int) -> list[int]:
    """One part the way a PLC triggers it; the registers at done (before the trigger drops)."""
    assert not client.write_registers(1, [number >> 16, number & 0xFFFF, product_index]).isError()
    assert not client.write_register(ADDR["control"], 1).isError()
    r = wait_for(lambda: (lambda r: r if r[ADDR["status"]] & DONE else None)(regs(client)))
    assert not r[ADDR["status"]] & BUSY
    assert not client.write_register(ADDR["control"], 0).isError()
    wait_for(lambda: not regs(client, ADDR["status"], 1)[0] & DONE, what="done cleared")
    return r


def test_handshake_pass_fail_and_result_registers_match_zeromq(cell):
    dm, sub, client, _, _ = cell
    wait_for(lambda: regs(client, ADDR["status"], 1)[0] & READY, what="ready")  # state: 0.5 s
    got = [handshake(client, 1000 + i, 1 + i % 2) for i in range(4)]  # widget, gizmo, ...
    zmq = zmq_results(sub, 4)
    for i, r in enumerate(got):
        seq = u32(r, "seq")
        msg = zmq[seq]
        assert msg["part_id"] == f"SN-{1000 + i:08d}" and msg["product"] == PRODUCTS[i % 2]
        assert u32(r, "result_part_number") == 1000 + i
        bits = r[ADDR["status"]] & (PASS | FAIL | ERROR)
        assert bits == {"pass": PASS, "fail": FAIL}[msg["verdict"]], (bits, msg)
        assert r[ADDR["verdict"]] == {"pass": 1, "fail": 2}[msg["verdict"]]
        assert f32(r, "score") == pytest.approx(msg["score"], rel=1e-6)
        assert f32(r, "threshold") == pytest.approx(msg["threshold"], rel=1e-6)
        assert msg["threshold"] == pytest.approx((0.45, 0.99)[i % 2])  # each recipe's own
        assert r[ADDR["error_code"]] == 0
    # the sim cell's defect rate 0.5 on a brightness graph: both verdicts are exercised over
    # the module; here it is enough that each part's bits match its own published verdict
    assert len({u32(r, "seq") for r in got}) == 4


def test_every_trigger_source_reaches_every_interface(cell):
    """Control socket, Modbus and OPC UA triggers: one result each on ZeroMQ, and the same
    last result and counters on Modbus and on OPC UA."""
    from asyncua import ua
    from asyncua.sync import Client

    dm, sub, client, _, ua_port = cell
    before = regs(client)
    assert dm.ctl({"cmd": "trigger", "part_id": "from-zmq"})["ok"]
    (m1,) = zmq_results(sub, 1).values()
    r = wait_for(lambda: (lambda r: r if u32(r, "last_seq") == m1["seq"] else None)(regs(client)))
    assert r[ADDR["last_verdict"]] == {"pass": 1, "fail": 2}[m1["verdict"]]
    assert f32(r, "last_score") == pytest.approx(m1["score"], rel=1e-6)
    assert u32(r, "parts") == u32(before, "parts") + 1
    # a control-socket part does not complete the PLC's handshake
    assert u32(r, "seq") == u32(before, "seq")
    with Client(f"opc.tcp://127.0.0.1:{ua_port}/afrd/", timeout=10) as c:
        ns = c.get_namespace_index("urn:afrd:inspection")

        def node(name: str):
            return c.get_node(ua.NodeId(f"Cell.{name}", ns))

        seq, pid = c.get_node(ua.NodeId("Cell", ns)).call_method(
            ua.NodeId("Cell.Trigger", ns), "from-opcua", ""
        )
        (m2,) = zmq_results(sub, 1).values()
        assert (m2["seq"], m2["part_id"]) == (seq, pid)
        r = wait_for(lambda: (lambda r: r if u32(r, "last_seq") == seq else None)(regs(client)))
        hs = handshake(client, 77, 0)
        (m3,) = zmq_results(sub, 1).values()
        assert m3["seq"] == u32(hs, "seq") and m3["part_id"] == "SN-00000077"
        assert m3["product"] == "default"  # index 0: trigger.product
        wait_for(lambda: node("LastResult.Seq").read_value() == m3["seq"], what="OPC UA seq")
        assert node("LastResult.PartId").read_value() == "SN-00000077"
        assert node("LastResult.Verdict").read_value() == m3["verdict"]
        r = regs(client)
        assert node("Counters.Parts").read_value() == u32(r, "parts")
        for name, key in (("Pass", "passed"), ("Fail", "failed"), ("Error", "errors")):
            assert node(f"Counters.{name}").read_value() == u32(r, key), name
        st = dm.ctl({"cmd": "status"})["result"]["parts"]
        assert sum(st.values()) == u32(r, "parts")


def test_error_verdict_completes_the_handshake(cell):
    dm, sub, client, _, _ = cell
    assert dm.ctl({"cmd": "pause"})["ok"]
    try:
        wait_for(lambda: not regs(client, ADDR["status"], 1)[0] & READY, what="ready dropped")
        r = handshake(client, 5, 1)
    finally:
        assert dm.ctl({"cmd": "resume"})["ok"]
    wait_for(lambda: regs(client, ADDR["status"], 1)[0] & READY, what="ready again")
    r2 = handshake(client, 6, 3)  # gadget: no such recipe, an error verdict naming it
    got = zmq_results(sub, 2)
    for regs_, code, value, product in (
        (r, "paused", 7, "widget"),
        (r2, "unknown_product", 9, "gadget"),
    ):
        msg = got[u32(regs_, "seq")]
        assert msg["verdict"] == "error" and msg["error"]["code"] == code, msg
        assert msg["product"] == product
        assert regs_[ADDR["status"]] & ERROR and not regs_[ADDR["status"]] & (PASS | FAIL)
        assert regs_[ADDR["error_code"]] == value and regs_[ADDR["verdict"]] == 3
        assert f32(regs_, "score") != f32(regs_, "score")  # NaN: no score
    assert "gadget" in got[u32(r2, "seq")]["error"]["message"]


def test_bad_client_input_is_refused_and_harmless(cell):
    dm, sub, client, _, _ = cell
    before = regs(client)

    def exc(resp) -> int:
        assert resp.isError(), resp
        return resp.exception_code

    assert exc(client.read_holding_registers(SIZE - 2, count=5)) == 2  # beyond the map
    assert exc(client.read_holding_registers(60000, count=1)) == 2
    assert exc(client.write_register(ADDR["status"], 0xFFFF)) == 2  # the cell's registers
    assert exc(client.write_registers(ADDR["parts"], [0, 0])) == 2
    assert exc(client.write_register(ADDR["control"], 2)) == 3  # a reserved control bit
    assert exc(client.write_register(ADDR["product_index"], len(PRODUCTS) + 1)) == 3
    assert exc(client.write_coil(5, True)) == 3  # coil 5 = control bit 5, reserved
    assert exc(client.write_coil(16 * ADDR["status"], True)) == 2  # a bit of the cell's
    assert exc(client.write_registers(2, [1, 2, 3])) == 2  # runs into the cell's registers
    after = regs(client)
    for name in ("product_index", "status", "parts", "seq"):
        assert after[ADDR[name]] == before[ADDR[name]], name
    # still inspecting, and the coil form of the trigger works
    assert not client.write_registers(1, [0, 9, 0]).isError()
    assert not client.write_coil(0, True).isError()
    r = wait_for(lambda: (lambda r: r if r[ADDR["status"]] & DONE else None)(regs(client)))
    bits = client.read_discrete_inputs(16 * ADDR["status"], count=7)
    assert not bits.isError() and bits.bits[2] is True  # input 162 = done
    assert not client.write_coil(0, False).isError()
    (msg,) = zmq_results(sub, 1).values()
    assert msg["seq"] == u32(r, "seq") and msg["verdict"] in ("pass", "fail")
    assert dm.proc.poll() is None


def test_every_write_path_goes_through_one_check(cell):
    """Issue 21 item 7: FC 5, 6, 15, 16 and 23 are judged on the registers they would leave.
    Reserved control bits or an unknown product index are refused with exception 3 whichever
    function writes them; nothing is triggered and the registers stay; coil 0 alone by FC 15
    triggers a part."""
    dm, sub, client, _, _ = cell
    seq0 = dm.ctl({"cmd": "trigger", "part_id": "before-the-writes"})["result"]["seq"]
    zmq_results(sub, 1)
    before = wait_for(lambda: (lambda r: r if u32(r, "last_seq") == seq0 else None)(regs(client)))
    assert before[ADDR["control"]] == 0
    pi = 16 * ADDR["product_index"]
    refused = {
        "FC15 16 coils from 0": lambda: client.write_coils(0, [True] * 16),
        "FC15 coil 0 and 1": lambda: client.write_coils(0, [True, True]),
        "FC15 a reserved bit only": lambda: client.write_coils(15, [True]),
        "FC5 a reserved bit": lambda: client.write_coil(1, True),
        "FC6": lambda: client.write_register(ADDR["control"], 0xFFFF),
        "FC16": lambda: client.write_registers(0, [3, 0, 0, 0]),
        "FC23": lambda: client.readwrite_registers(read_count=1, write_address=0, values=[0x8001]),
        "FC15 product index bits": lambda: client.write_coils(pi, [True] * 16),
        "FC23 product index": lambda: client.readwrite_registers(
            read_count=1, write_address=ADDR["product_index"], values=[len(PRODUCTS) + 1]
        ),
    }
    for what, write in refused.items():
        r = write()
        assert r.isError() and r.exception_code == 3, (what, r)
    after = regs(client)
    st = ADDR["status"]  # its heartbeat bit toggles
    assert after[:st] + after[st + 1 :] == before[:st] + before[st + 1 :], (before, after)
    # FC 15 on coil 0 alone is the trigger; the part is the next seq: nothing else was triggered
    assert not client.write_coils(0, [True]).isError()
    r = wait_for(lambda: (lambda r: r if r[ADDR["status"]] & DONE else None)(regs(client)))
    assert u32(r, "seq") == seq0 + 1 and r[ADDR["control"]] == 1
    (msg,) = zmq_results(sub, 1).values()
    assert msg["seq"] == seq0 + 1 and msg["verdict"] in ("pass", "fail")
    assert not client.write_coils(0, [False]).isError()
    wait_for(lambda: not regs(client, ADDR["status"], 1)[0] & DONE, what="done cleared")


def test_every_error_code_has_a_register_value():
    from afrd.daemon.interfaces.modbus import ERROR_CODES, OTHER_ERROR
    from afrd.daemon.verdict import ERROR_CODES as CODES

    missing = [c for c in CODES if c not in ERROR_CODES]
    assert not missing, f"error codes without a Modbus value (README table too): {missing}"
    assert (
        len(set(ERROR_CODES.values())) == len(ERROR_CODES)
        and OTHER_ERROR not in ERROR_CODES.values()
    )


def test_readme_has_the_register_map_and_error_codes():
    from afrd.daemon.interfaces.modbus import ERROR_CODES, REGISTERS

    text = (REPO / "README.md").read_text()
    for addr, words, name, kind, who, _ in REGISTERS:
        span = f"{addr}" if words == 1 else f"{addr}-{addr + words - 1}"
        assert f"| {span} | {words} | `{name}` | {kind} | {who} |" in text, name
    for code, value in ERROR_CODES.items():
        assert f"{value} `{code}`" in text, code


def test_restart_and_port_in_use(cell, bundle, tmp_path):
    """The PLC's client reconnects after `afrd run` restarts; a second daemon configured on the
    same port refuses to start, naming host:port, and the first keeps serving."""
    dm, sub, client, mb, ua_port = cell
    other = plc_config(tmp_path, bundle, modbus=f"port = {mb}")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-m", "afrd", "run", "--config", str(other)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert f"modbus.port: cannot listen on 127.0.0.1:{mb}: in use" in p.stderr
    assert "Traceback" not in p.stderr
    assert dm.stop() == 0, dm.output()
    dm = Daemon(dm.config).start()  # a new process on the same config and port
    sub2 = dm.subscriber()
    wait_subscribed(sub2)

    def ready() -> list[int] | None:
        try:  # what a PLC does: reconnect until the server answers, then wait for ready
            r = regs(client)
        except ConnectionException:
            client.close()
            client.connect()
            return None
        return r if r[ADDR["status"]] & READY else None

    r = wait_for(ready, what="ready after the restart")
    assert u32(r, "parts") == 0 and r[ADDR["last_verdict"]] == 0  # a fresh daemon
    hs = handshake(client, 4242, 1)
    (msg,) = zmq_results(sub2, 1).values()
    assert msg["seq"] == u32(hs, "seq") == 0 and msg["part_id"] == "SN-00004242"
    sub2.close()
    assert dm.stop() == 0, dm.output()


def test_rising_edge_while_busy_is_refused():
    """The server alone, with a real client: a second rising edge before the first part's result
    triggers nothing (counted in `refused`); part number 0 lets the cell number the part."""
    from afrd.config.plc import ModbusConfig
    from afrd.daemon.interfaces.base import Hooks, TriggerReply
    from afrd.daemon.interfaces.modbus import ModbusServer

    calls: list[tuple] = []

    def trigger(part_id, product):  # stands in for the daemon: takes the part, result later
        calls.append((part_id, product))
        return TriggerReply(len(calls) - 1, part_id or f"auto-{len(calls) - 1}")

    srv = ModbusServer(ModbusConfig(port=0), Hooks(trigger, lambda: {"state": "running"}))
    srv.start()
    client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=5)
    try:
        assert client.connect()
        assert not client.write_registers(1, [0, 0, 0]).isError()
        for bit in (1, 0, 1):  # edge, drop, edge again while the first part is in flight
            assert not client.write_register(ADDR["control"], bit).isError()
        r = wait_for(lambda: (lambda r: r if r[ADDR["refused"]] == 1 else None)(regs(client)))
        assert calls == [(None, "default")] and r[ADDR["status"]] & BUSY
        srv.result({"seq": 0, "verdict": "pass", "score": 0.25, "threshold": 0.5})
        r = wait_for(lambda: (lambda r: r if r[ADDR["status"]] & DONE else None)(regs(client)))
        assert r[ADDR["status"]] & PASS and not r[ADDR["status"]] & BUSY
        assert f32(r, "score") == 0.25 and u32(r, "parts") == 1
    finally:
        client.close()
        srv.close()
    assert not srv.healthy()
