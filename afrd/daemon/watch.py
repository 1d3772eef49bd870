"""`afrd watch --connect tcp://host:5556 [--save DIR]`: print a cell's verdicts live.

Every message is checked against the schema (a malformed one is reported, not trusted).
``--save DIR`` writes each heatmap overlay PNG as DIR/<seq>_<part_id>_<verdict>.png.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import zmq

from afrd import cliargs
from afrd.daemon.ctl import connect
from afrd.daemon.messages import SchemaError, parse_message


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)[:80]


def format_result(msg: dict) -> str:
    lat = msg["latency_ms"]
    score = "-" if msg["score"] is None else f"{msg['score']:.4f}"
    line = (
        f"{msg['timestamp']}  #{msg['seq']:<6} {msg['part_id']:<20} {msg['verdict'].upper():<5} "
        f"score {score} (thr {msg['threshold']:.4f})  total {lat['total'] or 0:.1f} ms"
        if msg["threshold"] is not None
        else f"{msg['timestamp']}  #{msg['seq']:<6} {msg['part_id']:<20} {msg['verdict'].upper()}"
    )
    if msg["verdict"] == "error":
        line += f"  [{msg['error']['code']}] {msg['error']['message']}"
    return line


def main(argv: list[str]) -> int:
    ap = cliargs.parser("afrd watch", __doc__.split("\n\n")[0])
    ap.add_argument("--connect", default="tcp://127.0.0.1:5556", help="the cell's PUB endpoint")
    ap.add_argument("--cell", default="", help="only this cell (default: every cell)")
    ap.add_argument("--save", type=Path, help="directory for heatmap overlay PNGs")
    ap.add_argument("--status", action="store_true", help="also print heartbeats")
    ap.add_argument("--json", action="store_true", help="print raw result JSON lines")
    ap.add_argument("--count", type=int, default=0, help="exit after N results (0 = never)")
    ap.add_argument("--timeout", type=float, default=0, help="exit after S seconds (0 = never)")
    args = ap.parse_args(cliargs.take_global_flags(argv))
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    suffix = f".{args.cell}" if args.cell else ""
    for kind in ("result", "heatmap", "status"):
        sub.setsockopt(zmq.SUBSCRIBE, f"{kind}{suffix}".encode())
    connect(sub, args.connect)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    counts = {"pass": 0, "fail": 0, "error": 0}
    n, bad = 0, 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    print(f"watching {args.connect} (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                break
            if not sub.poll(200):
                continue
            frames = sub.recv_multipart()
            try:
                kind, cell, msg, png = parse_message(frames)
            except SchemaError as exc:
                bad += 1
                print(f"INVALID message: {exc}", file=sys.stderr)
                continue
            if kind == "result":
                n += 1
                counts[msg["verdict"]] += 1
                print(json.dumps(msg) if args.json else f"{cell}  {format_result(msg)}", flush=True)
                if args.count and n >= args.count:
                    break
            elif kind == "heatmap" and args.save and png is not None:
                name = f"{msg['seq']:08d}_{_safe(msg['part_id'])}_{msg.get('verdict', 'x')}.png"
                (args.save / name).write_bytes(png)
            elif kind == "status" and args.status:
                print(f"{cell}  status {msg['state']} parts {msg['parts']}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    print(f"{n} results: {counts}" + (f", {bad} invalid messages" if bad else ""), file=sys.stderr)
    return 1 if bad else 0
