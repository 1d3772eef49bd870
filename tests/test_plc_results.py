"""Results on the PLC interfaces against the daemon's ZeroMQ results, with OPC UA and Modbus both
enabled on one `afrd run` (issue 21): the counters agree across interfaces after error verdicts,
and an OPC UA client that sees Seq change reads that result's PartId and Verdict, however fast
results come."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("pymodbus", reason="the plc extra (pymodbus) is not installed")
pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from asyncua import Client as AsyncClient  # noqa: E402
from asyncua import ua  # noqa: E402
from asyncua.sync import Client  # noqa: E402
from pymodbus.client import ModbusTcpClient  # noqa: E402

from afrd.daemon.interfaces.modbus import ADDR, SIZE  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import Daemon, make_brightness_bundle, wait_subscribed  # noqa: E402
from _plc_helpers import free_port, plc_config, wait_for, zmq_results  # noqa: E402

NS = "urn:afrd:inspection"
RECIPES = '[[product]]\nname = "default"\n\n[[product]]\nname = "widget"\n'


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    d = tmp_path_factory.mktemp("plc-results")
    make_brightness_bundle(d / "bundle", size=64, threshold=0.45)
    mb, ua_port = free_port(), free_port()
    cfg = plc_config(
        d, d / "bundle", opcua=f"port = {ua_port}", modbus=f"port = {mb}", more=RECIPES
    )
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    yield dm, sub, mb, f"opc.tcp://127.0.0.1:{ua_port}/afrd/"
    sub.close()
    assert dm.stop() == 0, dm.output()


def modbus_u32(client: ModbusTcpClient, name: str) -> int:
    r = client.read_holding_registers(0, count=SIZE)
    assert not r.isError(), r
    return (r.registers[ADDR[name]] << 16) | r.registers[ADDR[name] + 1]


def trigger(dm, part_id: str, product: str = "default") -> int:
    r = dm.ctl({"cmd": "trigger", "part_id": part_id, "product": product})
    assert r["ok"], r
    return r["result"]["seq"]


def test_counters_agree_across_interfaces_after_error_verdicts(cell):
    """OPC UA Counters.Parts == Pass + Fail + Error == Modbus `parts`, each verdict's count equal
    on OPC UA, Modbus and ZeroMQ, with `unknown_product` and `paused` errors among the parts."""
    dm, sub, mb, url = cell
    client = ModbusTcpClient("127.0.0.1", port=mb, timeout=5)
    assert client.connect()
    try:
        with Client(url, timeout=10) as c:
            ns = c.get_namespace_index(NS)

            def read(name: str):
                return c.get_node(ua.NodeId(f"Cell.{name}", ns)).read_value()

            for i in range(6):
                trigger(dm, f"count-{i}", ("default", "widget")[i % 2])
            trigger(dm, "count-nope", "no-such-recipe")  # an unknown_product error
            assert dm.ctl({"cmd": "pause"})["ok"]
            try:  # a paused error, triggered over OPC UA: refused there, published all the same
                wait_for(lambda: read("State") == "paused", what="State paused")
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                    c.get_node(ua.NodeId("Cell", ns)).call_method(
                        ua.NodeId("Cell.Trigger", ns), "count-paused", ""
                    )
            finally:
                assert dm.ctl({"cmd": "resume"})["ok"]
            got = zmq_results(sub, 8)
            codes = {m["error"]["code"] for m in got.values() if m["verdict"] == "error"}
            assert {"unknown_product", "paused"} <= codes, codes
            last = list(got)[-1]  # the last published (a paused part overtakes the queue)
            wait_for(lambda: read("LastResult.Seq") == last, what="OPC UA's last result")
            wait_for(lambda: modbus_u32(client, "last_seq") == last, what="Modbus's last result")
            opc = {v: read(f"Counters.{v.capitalize()}") for v in ("pass", "fail", "error")}
            opc_parts = read("Counters.Parts")
        mod = {
            v: modbus_u32(client, key)
            for v, key in (("pass", "passed"), ("fail", "failed"), ("error", "errors"))
        }
        mod_parts = modbus_u32(client, "parts")
    finally:
        client.close()
    want = {v: sum(m["verdict"] == v for m in got.values()) for v in ("pass", "fail", "error")}
    assert opc == mod == want, (opc, mod, want)
    assert opc_parts == sum(opc.values()) == mod_parts == len(got)
    status = dm.ctl({"cmd": "status"})["result"]["parts"]
    assert sum(status.values()) == opc_parts and status.get("error", 0) == want["error"]


async def _watch(url: str, final: list[int], started: threading.Event, done: threading.Event):
    """Subscribe to LastResult.Seq; on each change read Seq, PartId and Verdict in one Read; and
    read them in a tight loop besides, until Seq is ``final[0]``. (notified seqs, reads)."""
    notified: list[int] = []
    reads: list[list] = []
    async with AsyncClient(url, timeout=10) as c:
        ns = await c.get_namespace_index(NS)
        names = ("Seq", "PartId", "Verdict")
        nodes = [c.get_node(ua.NodeId(f"Cell.LastResult.{k}", ns)) for k in names]

        class Handler:
            async def datachange_notification(self, node, val, data) -> None:
                notified.append(val)
                reads.append(await c.read_values(nodes))

        subscription = await c.create_subscription(10, Handler())
        await subscription.subscribe_data_change(nodes[0])
        started.set()
        while True:
            values = await c.read_values(nodes)
            reads.append(values)
            if done.is_set() and (not final or values[0] == final[0]):
                break
        await asyncio.sleep(0.3)  # the last notifications
        await subscription.delete()
    return notified, reads


@pytest.mark.timeout(120)
def test_a_client_that_sees_seq_change_reads_that_result(cell):
    """60 triggers as fast as the control socket takes them (those past the trigger queue are
    `overrun` errors, published at once, between the inspected ones)."""
    dm, sub, _, url = cell
    n = 60
    got: dict[int, dict] = {}
    final: list[int] = []
    started, done = threading.Event(), threading.Event()

    def fire() -> None:
        try:
            started.wait(30)
            for i in range(n):
                dm.ctl({"cmd": "trigger", "part_id": f"burst-{i}", "product": "widget"})
            got.update(zmq_results(sub, n))
            final.append(list(got)[-1])  # the last published
        finally:
            done.set()

    t = threading.Thread(target=fire)
    t.start()
    try:
        notified, reads = asyncio.run(asyncio.wait_for(_watch(url, final, started, done), 90))
    finally:
        done.set()
        t.join()
    assert len(got) == n
    ours = [r for r in reads if r[0] in got and r[2]]  # Seq 0, Verdict "": no result yet
    tally = {v: sum(m["verdict"] == v for m in got.values()) for v in ("pass", "fail", "error")}
    print(f"\n{len(ours)} reads saw {len({r[0] for r in ours})} of {n} results; verdicts {tally}")
    assert len({r[0] for r in ours}) >= 5, reads  # the reads saw the burst go by
    for seq, part_id, verdict in ours:
        assert (part_id, verdict) == (got[seq]["part_id"], got[seq]["verdict"]), (seq, got[seq])
    order = list(got)  # publish order
    seen = [order.index(s) for s in notified[1:] if s in got]  # [0]: the value at subscribing
    assert seen and seen == sorted(seen) and seen[-1] == n - 1, notified  # in order, to the end
    assert "yielded while writing" not in dm.output()
