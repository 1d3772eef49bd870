"""PLC servers' cost per part, in CPU time (robust on a loaded machine, unlike wall time).

The real OpcUaServer and ModbusServer in this process, with the clients a line puts on them
(bench/plc_clients.py, in a child process as on a line: an OPC UA subscription to the last
result, a Modbus client reading the whole map every 20 ms), fed N result messages like the daemon's output thread feeds them:

- output thread: wall time of ``Interfaces.result(msg)`` per part (what the daemon's output
  thread pays: an enqueue per server), against ``Publisher.result(msg)`` (the ZeroMQ publish of
  the same message) measured in the same run as the baseline;
- server threads: CPU time each server's own thread spends per part (applying the result,
  serving its client meanwhile), from ``time.thread_time`` on that thread.

    python bench/plc.py [--parts 2000] [--rate 50] [--no-clients]
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
        **({"error": {"code": "acquire", "message": "bench"}} if seq % 3 == 2 else {}),
    }


def thread_cpu(server) -> float:
    """CPU seconds the server's loop thread has used so far."""

    async def now() -> float:
        return time.thread_time()

    return asyncio.run_coroutine_threadsafe(now(), server.loop).result(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50.0, help="parts per second fed")
    ap.add_argument("--no-clients", action="store_true", help="servers without any client")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "plc.json")
    args = ap.parse_args(argv)
    sys.setswitchinterval(0.001)  # as `afrd run` sets it
    hooks = Hooks(lambda p, q: TriggerReply(0, p or "x"), lambda: {"state": "running"})
    ua_port, mb_port = free_port(), free_port()
    ua = OpcUaServer(OpcUaConfig(port=ua_port), hooks, "bench")
    mb = ModbusServer(ModbusConfig(port=mb_port), hooks)
    itfs = Interfaces([ua, mb])
    for s in itfs:
        s.start()
    tmp = tempfile.mkdtemp(prefix="afrd-bench-plc-")
    pub = Publisher(f"ipc://{tmp}/pub.sock", "bench")
    msgs = [message(i) for i in range(args.parts)]
    period = 1.0 / args.rate
    out_itf, out_pub = [], []
    try:
        clients = None if args.no_clients else PlcClientsProcess(ua_port, mb_port)
        with clients or contextlib.nullcontext():
            time.sleep(1.0)
            cpu0 = {s.name: thread_cpu(s) for s in itfs}
            idle0 = time.perf_counter()
            time.sleep(2.0)  # the servers' idle cost (ticks, client polls) over 2 s
            idle_s = time.perf_counter() - idle0
            cpu_idle = {s.name: thread_cpu(s) - cpu0[s.name] for s in itfs}
            cpu1 = {s.name: thread_cpu(s) for s in itfs}
            t_start = time.perf_counter()
            nxt = t_start
            for m in msgs:
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
            run_s = time.perf_counter() - t_start
            cpu_run = {s.name: thread_cpu(s) - cpu1[s.name] for s in itfs}
        seen = (0, 0, 0, ["no clients"]) if clients is None else clients.seen
        seen = seen or (0, 0, 0, ["clients reported nothing"])
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
        "clients_seen": {
            "ua_changes": seen[0],
            "mb_reads": seen[1],
            "mb_errors": seen[2],
            "ua_status": seen[3],
        },
    }
    who = "no clients" if args.no_clients else "OPC UA subscription + Modbus poll 20 ms"
    print(f"\nPLC servers, {n} parts at {args.rate:g}/s, {who}")
    print("| where | per part | baseline (same run) | ratio |")
    print("|---|---:|---:|---:|")
    for stat in ("p50", "p90", "mean"):
        v = res[f"output_thread_us_{stat}"]
        print(
            f"| output thread: Interfaces.result (2 servers), {stat} | "
            f"{v['interfaces.result']:.1f} us | ZeroMQ Publisher.result {v['publisher.result']:.1f}"
            f" us | {v['interfaces.result'] / v['publisher.result']:.2f} |"
        )
    for name, r in rows.items():
        print(
            f"| {name} server thread CPU | {r['thread_cpu_ms_per_part']:.3f} ms "
            f"({r['thread_cpu_ms_per_part_incl_idle']:.3f} incl. idle) | - | - |"
        )
    print(f"clients saw: {res['clients_seen']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
