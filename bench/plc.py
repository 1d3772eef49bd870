"""PLC servers' cost per part, in CPU time (robust on a loaded machine, unlike wall time).

The real OpcUaServer and ModbusServer in this process, with the clients a line puts on them
(bench/plc_clients.py, in a child process as on a line: an OPC UA subscription to the last
result, a Modbus client reading the whole map every 20 ms), fed N result messages like the daemon's output thread feeds them:

- output thread: wall time of ``Interfaces.result(msg)`` per part (what the daemon's output
  thread pays: an enqueue per server), against ``Publisher.result(msg)`` (the ZeroMQ publish of
  the same message) measured in the same run as the baseline;
- server threads: CPU time each server's own thread spends per part (applying the result,
  serving its client meanwhile), from ``time.thread_time`` on that thread.

Three OPC UA servers run side by side, fed the same results at the same time: today's
(``opcua``, Cell only), one with the Machine Vision object on (``opcua+mv``: its result store,
state and a ResultReadyEvent per part; its client also subscribes to the events) and the same
with asyncua's own event generator (``opcua+mv-copy``: deep-copies each event field for each
subscriber; afrd's ``event_generator`` does not). The parts go in ``--rounds`` rounds; each
round gives every server's cost per part, so the ratios are taken under the same load of a
shared machine, round by round.

    python bench/plc.py [--parts 2000] [--rate 50] [--rounds 4] [--no-clients]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plc_clients import PlcClientsProcess, free_port  # noqa: E402

from afrd.config.plc import ModbusConfig, OpcUaConfig  # noqa: E402
from afrd.daemon.interfaces import Interfaces  # noqa: E402
from afrd.daemon.interfaces.base import Hooks, TriggerReply  # noqa: E402
from afrd.daemon.interfaces.modbus import ModbusServer  # noqa: E402
from afrd.daemon.interfaces.opcua import OpcUaServer  # noqa: E402
from afrd.daemon.interfaces.publisher import Publisher  # noqa: E402


def message(seq: int) -> dict:
    return {
        "schema": "afrd.result/1",
        "cell": "bench",
        "part_id": f"SN-{seq:08d}",
        "product": "widget",
        "seq": seq,
        "timestamp": "2026-12-01T10:00:00.000000Z",
        "verdict": ("pass", "fail", "error")[seq % 3],
        "score": None if seq % 3 == 2 else 0.1 + (seq % 7) / 10,
        "threshold": 0.5,
        "latency_ms": {"acquire": 30.0, "infer": 5.0, "total": 36.0},
        "model": {"name": "bench", "sha256": "0" * 64},
        # an engine error, not a device's: a third of parts failing on the camera would hold the
        # Machine Vision state machine in Error and back (a state change per part)
        **({"error": {"code": "infer", "message": "bench"}} if seq % 3 == 2 else {}),
    }


def stock_events(server) -> None:
    """Give ``server``'s VisionSystem asyncua's own event generator (which deep-copies each
    field for each subscriber), to measure what afrd's ``event_generator`` saves."""

    async def swap() -> None:
        mv = server.mv
        etype = mv.t.nodes["ResultReadyEventType"]
        mv._event = await mv.srv.get_event_generator(etype, mv.nodes["VisionSystem"])

    asyncio.run_coroutine_threadsafe(swap(), server.loop).result(30)


def thread_cpu(server) -> float:
    """CPU seconds the server's loop thread has used so far."""

    async def now() -> float:
        return time.thread_time()

    return asyncio.run_coroutine_threadsafe(now(), server.loop).result(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50.0, help="parts per second fed")
    ap.add_argument("--rounds", type=int, default=4, help="rounds the parts are fed in")
    ap.add_argument("--no-clients", action="store_true", help="servers without any client")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "plc.json")
    args = ap.parse_args(argv)
    sys.setswitchinterval(0.001)  # as `afrd run` sets it
    hooks = Hooks(
        lambda p, q: TriggerReply(0, p or "x"),
        lambda: {"state": "running"},
        pause=lambda: None,
        resume=lambda: None,
    )
    ua_port, mb_port, mv_port = free_port(), free_port(), free_port()
    ua = OpcUaServer(OpcUaConfig(port=ua_port), hooks, "bench")
    mv = OpcUaServer(OpcUaConfig(port=mv_port, machine_vision=True), hooks, "bench")
    mv.name = "opcua+mv"  # its thread's label in the table
    cp_port = free_port()
    cp = OpcUaServer(OpcUaConfig(port=cp_port, machine_vision=True), hooks, "bench")
    cp.name = "opcua+mv-copy"
    mb = ModbusServer(ModbusConfig(port=mb_port), hooks)
    itfs = Interfaces([ua, mv, cp, mb])
    for s in itfs:
        s.start()
    stock_events(cp)
    tmp = tempfile.mkdtemp(prefix="afrd-bench-plc-")
    pub = Publisher(f"ipc://{tmp}/pub.sock", "bench")
    msgs = [message(i) for i in range(args.parts)]
    period = 1.0 / args.rate
    out_itf, out_pub = [], []
    try:
        clients = (
            None if args.no_clients else PlcClientsProcess(ua_port, mb_port, (mv_port, cp_port))
        )
        with clients or contextlib.nullcontext():
            time.sleep(1.0)
            cpu0 = {s.name: thread_cpu(s) for s in itfs}
            idle0 = time.perf_counter()
            time.sleep(2.0)  # the servers' idle cost (ticks, client polls) over 2 s
            idle_s = time.perf_counter() - idle0
            cpu_idle = {s.name: thread_cpu(s) - cpu0[s.name] for s in itfs}
            cpu_run = {s.name: 0.0 for s in itfs}
            run_s, rounds = 0.0, []
            size = -(-len(msgs) // args.rounds)
            for r in range(0, len(msgs), size):
                cpu1 = {s.name: thread_cpu(s) for s in itfs}
                t_start = time.perf_counter()
                nxt = t_start
                for m in msgs[r : r + size]:
                    t0 = time.perf_counter()
                    pub.result(m)
                    t1 = time.perf_counter()
                    itfs.result(m)
                    t2 = time.perf_counter()
                    out_pub.append(t1 - t0)
                    out_itf.append(t2 - t1)
                    nxt += period
                    time.sleep(max(0.0, nxt - time.perf_counter()))
                time.sleep(0.5)  # let the loops drain
                span = time.perf_counter() - t_start
                used = {s.name: thread_cpu(s) - cpu1[s.name] for s in itfs}
                k = len(msgs[r : r + size])
                per = {n: (c - cpu_idle[n] / idle_s * span) / k * 1e3 for n, c in used.items()}
                rounds.append(per)
                run_s += span
                for n, c in used.items():
                    cpu_run[n] += c
        seen = (0, 0, 0, ["no clients"], 0) if clients is None else clients.seen
        seen = seen or (0, 0, 0, ["clients reported nothing"], 0)
    finally:
        itfs.close()
        pub.close()
    n = args.parts
    rows = {}
    for s in itfs:
        idle_per_s = cpu_idle[s.name] / idle_s
        per_part = (cpu_run[s.name] - idle_per_s * run_s) / n
        rows[s.name] = {
            "thread_cpu_ms_per_part": per_part * 1e3,
            "thread_cpu_ms_per_part_incl_idle": cpu_run[s.name] / n * 1e3,
            "idle_cpu_ms_per_s": idle_per_s * 1e3,
        }
    itf_us = [v * 1e6 for v in out_itf]
    pub_us = [v * 1e6 for v in out_pub]
    res = {
        "parts": n,
        "rate": args.rate,
        "output_thread_us_p50": {
            "interfaces.result": statistics.median(itf_us),
            "publisher.result": statistics.median(pub_us),
        },
        "output_thread_us_p90": {
            "interfaces.result": sorted(itf_us)[int(0.9 * n)],
            "publisher.result": sorted(pub_us)[int(0.9 * n)],
        },
        "output_thread_us_mean": {
            "interfaces.result": statistics.fmean(itf_us),
            "publisher.result": statistics.fmean(pub_us),
        },
        "servers": rows,
        "rounds_ms_per_part": rounds,
        "mv_over_plain_per_round": [r["opcua+mv"] / r["opcua"] for r in rounds],
        "copying_events_over_mv_per_round": [r["opcua+mv-copy"] / r["opcua+mv"] for r in rounds],
        "clients_seen": {
            "ua_changes": seen[0],
            "mb_reads": seen[1],
            "mb_errors": seen[2],
            "ua_status": seen[3],
            "mv_events": seen[4],
        },
    }
    who = (
        "no clients"
        if args.no_clients
        else "OPC UA subscription on each server (+ ResultReady events on opcua+mv*), Modbus "
        "poll 20 ms"
    )
    print(f"\nPLC servers, {n} parts at {args.rate:g}/s, {who}")
    print("| where | per part | baseline (same run) | ratio |")
    print("|---|---:|---:|---:|")
    for stat in ("p50", "p90", "mean"):
        v = res[f"output_thread_us_{stat}"]
        print(
            f"| output thread: Interfaces.result ({len(itfs)} servers), {stat} | "
            f"{v['interfaces.result']:.1f} us | ZeroMQ Publisher.result {v['publisher.result']:.1f}"
            f" us | {v['interfaces.result'] / v['publisher.result']:.2f} |"
        )
    for name, r in rows.items():
        print(
            f"| {name} server thread CPU | {r['thread_cpu_ms_per_part']:.3f} ms "
            f"({r['thread_cpu_ms_per_part_incl_idle']:.3f} incl. idle) | - | - |"
        )
    for what, a, b in (
        ("Machine Vision on / off", "opcua+mv", "opcua"),
        ("asyncua's copying events / afrd's", "opcua+mv-copy", "opcua+mv"),
    ):
        ratios = [r[a] / r[b] for r in rounds]
        print(
            f"| OPC UA thread CPU per part, {what}, per round | "
            + " ".join(f"{r[a]:.3f}/{r[b]:.3f}" for r in rounds)
            + f" ms | - | {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max "
            f"{max(ratios):.2f}) |"
        )
    print(f"clients saw: {res['clients_seen']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
