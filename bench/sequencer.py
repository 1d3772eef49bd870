"""Sequencer overhead per six-light part on the simulated cell, exposure zero.

Everything real except the sensor: the Gardasoft driver talks to the emulator over a pty, the
camera renders the lit lamps. The renderer's time (the simulated exposure: part sampling +
rendering) is measured inside the camera and subtracted, leaving the sequencer's own cost:
serial round-trips, Python/pydantic work, frame copies, stacking, flat-field correction.

    .venv/bin/python bench/sequencer.py [--quick]   -> table + bench/out/sequencer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from afrd.acquire.correction import FlatField
from afrd.acquire.sequencer import Setup
from afrd.sim.cell import SimCell
from afrd.sim.config import sim_lighting_conditions


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "median": statistics.median(xs),
        "p95": xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))],
        "mean": statistics.fmean(xs),
    }


def round_trip(cell: SimCell, n: int) -> dict:
    ctl = cell.controller
    ctl.command("VR")
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        ctl.command("RS1,0")
        ts.append(time.perf_counter() - t)
    return {k: v * 1e6 for k, v in _stats(ts).items()}


def _relevelled(conds: list, factor: float) -> list:
    """The same conditions at ``factor`` x their levels: a second product's recipe."""
    return [
        c.model_copy(
            update={
                "channels": [
                    ch.model_copy(update={"level": ch.level * factor}) for ch in c.channels
                ]
            }
        )
        for c in conds
    ]


def run_case(
    name: str,
    size: int,
    parts: int,
    cache: bool,
    pipeline: bool,
    pulse: bool,
    flat: bool,
    changeover: bool = False,
) -> dict:
    """``changeover``: parts alternate between two product recipes (every light re-levelled,
    another exposure per light), as a line running two products part by part."""
    with SimCell(size=size, defect_rate=0.3) as cell:
        cell.controller.config.cache = cache
        cell.controller.config.pipeline = pipeline
        conds = sim_lighting_conditions(pulse_us=100.0 if pulse else None)
        corr = None
        if flat:
            white = np.full((size, size, 3), 128, np.uint8)
            corr = FlatField.from_captures({c.name: white for c in conds})
        seq = cell.sequencer(conds, corrections=corr, settle_s=0.0)
        setups = [None]
        if changeover:
            setups = [
                Setup(conds, corr, dict.fromkeys((c.name for c in conds), 1000.0)),
                Setup(_relevelled(conds, 0.8), corr, dict.fromkeys((c.name for c in conds), 900.0)),
            ]
        seq.acquire("warm-up", "", setups[0])
        rt = round_trip(cell, 200)
        totals, renders, overheads, trips, cmds, wire = [], [], [], [], [], []
        steps: dict[str, list[float]] = {k: [] for k in ("apply", "trigger", "grab", "correct")}
        for i in range(parts):
            ctl = cell.controller
            r0, n0, b0 = cell.camera.render_s, ctl.round_trips, ctl.bytes_out + ctl.bytes_in
            c0 = ctl.commands_sent
            s = seq.acquire(f"bench-{i}", "", setups[i % len(setups)])
            t = s.meta["timings"]
            render = cell.camera.render_s - r0
            totals.append(t["total"])
            renders.append(render)
            overheads.append(t["total"] - render)
            trips.append(ctl.round_trips - n0)
            cmds.append(ctl.commands_sent - c0)
            # 8N1: 10 bits per byte on a real 115200 baud line (the pty has no baud rate)
            wire.append((ctl.bytes_out + ctl.bytes_in - b0) * 10 / ctl.config.baudrate)
            steps["apply"].append(t["apply"])
            steps["trigger"].append(t["trigger"] - render)  # render happens at trigger
            steps["grab"].append(t["grab"])
            steps["correct"].append(t["correct"])
    ms = lambda xs: {k: round(v * 1e3, 3) for k, v in _stats(xs).items()}  # noqa: E731
    return {
        "case": name,
        "size": size,
        "parts": parts,
        "cache": cache,
        "pipeline": pipeline,
        "pulse": pulse,
        "flatfield": flat,
        "changeover": changeover,
        "total_ms": ms(totals),
        "renderer_ms": ms(renders),
        "overhead_ms": ms(overheads),
        "steps_ms": {k: ms(v) for k, v in steps.items()},
        "round_trips_per_part": statistics.fmean(trips),
        "commands_per_part": statistics.fmean(cmds),
        "wire_ms_per_part_at_115200": round(statistics.fmean(wire) * 1e3, 3),
        "round_trip_us": {k: round(v, 1) for k, v in rt.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few parts, small images")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "sequencer.json")
    args = ap.parse_args()
    parts = 10 if args.quick else 60
    sizes = (128,) if args.quick else (128, 512)
    cases = []
    for size in sizes:
        cases += [
            ("continuous", size, parts, True, True, False, False),
            ("continuous, no pipelining", size, parts, True, False, False, False),
            ("continuous, neither", size, parts, False, False, False, False),
            ("pulse + strobe", size, parts, True, True, True, False),
            ("continuous + flat-field", size, parts, True, True, False, True),
            ("2 recipes alternating", size, parts, True, True, False, False, True),
        ]
    results = [run_case(*c) for c in cases]
    hdr = (
        f"{'case':<27}{'px':>5}{'total':>9}{'render':>9}{'overhead':>10}{'p95':>8}"
        f"{'apply':>8}{'trig':>7}{'grab':>7}{'corr':>7}{'cmds':>6}{'xchg':>6}{'rt us':>7}{'wire':>7}"
    )
    print("per six-light part, ms (median over parts); exposure 0, settle 0;")
    print("cmds = controller commands, xchg = write/read exchanges (pipelined batches count once);")
    print("rt us = one command's round trip; wire = bytes per part at 115200 8N1 (a real line")
    print("adds this; the pty does not)")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        s = r["steps_ms"]
        print(
            f"{r['case']:<27}{r['size']:>5}{r['total_ms']['median']:>9.2f}"
            f"{r['renderer_ms']['median']:>9.2f}{r['overhead_ms']['median']:>10.2f}"
            f"{r['overhead_ms']['p95']:>8.2f}{s['apply']['median']:>8.2f}"
            f"{s['trigger']['median']:>7.2f}{s['grab']['median']:>7.2f}"
            f"{s['correct']['median']:>7.2f}{r['commands_per_part']:>6.0f}"
            f"{r['round_trips_per_part']:>6.0f}"
            f"{r['round_trip_us']['median']:>7.0f}{r['wire_ms_per_part_at_115200']:>7.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "bench": "sequencer",
                "quick": args.quick,
                "machine": {"python": platform.python_version(), "cpu": platform.processor()},
                "note": "overhead = total - renderer time; trigger excludes the render",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
