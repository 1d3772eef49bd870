"""Daemon benchmark: throughput and the daemon's own overhead per part, on the simulated cell.

The real `afrd run` process, triggered over its control socket, results read from its PUB socket.
Per engine (null: zero maps, no model; onnxruntime: a bundle's graph):

- overhead per part (parts triggered one at a time): trigger-to-publish minus acquisition minus
  inference, from each result's own latency_ms (the daemon's clocks), and the same on the
  subscriber's clock (issue 23): from sending the trigger to receiving the part's last message
  (its heatmap when heatmaps are on), which adds the control round trip, JSON encoding, the
  ZeroMQ sends and the heatmap PNG that the daemon's stamp (taken before them) leaves out;
- throughput (parts/s) with the pipeline kept full (a window of outstanding triggers), and its
  ratio to 1 / max(mean acquire, mean infer) measured in the same run: 1.0 means the pipeline
  overlaps perfectly and only the slowest stage limits it.

Goals (issue 6): overhead <= 3 ms per part at 256x256 with heatmaps on; ratio >= 0.9.

    python bench/daemon.py [--quick] [--size 256] [--bundle DIR] [--afrd] [--web-pages 5] [--plc] [--lights]

``--bundle`` times an exported AFRD bundle; ``--afrd`` builds one (EfficientNet-Lite0 teacher,
one epoch on a few sim parts, cached in .cache/afrd/bench: timing only, not a useful model);
default: a cheap real ONNX graph (brightness), so the numbers isolate the daemon.
``--web-pages N`` measures each engine three times in the same run: as above (no page), with
`afrd web` subscribed but no browser, and with N page event streams open (one never reading,
one reconnecting every 0.5 s, the rest reading): the second isolates what the page process's
own CPU costs on a shared machine, the third what browsers add to that.
``--plc`` measures each engine also with the OPC UA and Modbus TCP servers enabled, an OPC UA
client subscribed to the last result and a Modbus client reading the register map every 20 ms
(bench/plc_clients.py), against the same engine without them in the same run (issue 13).
``--mqtt`` measures each engine also with ``[mqtt]`` on: a local mosquitto (TLS, password; as
the tests start it, afrd.sim.broker) with a subscriber reading every result, and with the
broker down (results queue on disk), interleaved with runs without MQTT (``--rounds``, default
2: off, on, down, off, on, down), each against the mean of the off rows (issue 24).
``--shadow`` adds a row per engine with a shadow run (issue 25): the same bundle opened again as
the candidate (a shadow model of the live one's cost); its one-at-a-time parts come in blocks
of 10 without and with the shadow run (stopped and started between blocks, the same daemon),
so a busy machine's drift hits both alike: the live verdict latency p50 (trigger-to-publish on
the daemon's clock, trigger sent to result received on the subscriber's) off against on, and
the parts the candidate compared and skipped (the throughput phase runs with it on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from afrd.daemon.verdict import parse_message  # noqa: E402
from afrd.sim.launch import Daemon, make_brightness_bundle, wait_subscribed, write_config  # noqa: E402


def _afrd_bundle(size: int) -> Path:
    out = REPO / ".cache" / "afrd" / "bench" / f"afrd-lite0-{size}"
    if (out / "bundle.json").exists():
        return out
    from afrd.export.onnx_export import export_onnx
    from afrd.model.train import TrainConfig, train
    from afrd.sim.cell import SimCell

    with SimCell(size=size, seed=5, defect_rate=0.0) as cell:
        seq = cell.sequencer()
        sets = [seq.acquire(f"b{i}", "bench") for i in range(4)]
    ckpt = train(
        TrainConfig(
            out=str(out.parent / f"run-{size}"),
            teacher="efficientnet_lite0",
            fusion="attention-pooled",
            epochs=1,
            batch_size=4,
            image_size=size,
            progress=False,
        ),
        sets=sets,
    )
    b = export_onnx(ckpt, out, force=True, echo=False)
    b.set_threshold(1.0, source="bench (timing only)")
    return out


MQTT_USERS = {"cell": "bench-cell", "mes": "bench-mes"}


def _mqtt_setup(d: Path, mode: str):
    """A broker (started for "on"; "down": its port reserved, nobody listening) and the
    [mqtt] TOML for it; a fresh on-disk queue each run."""
    from afrd.sim.broker import Broker

    broker = Broker(d / "broker", MQTT_USERS)
    if mode == "on":
        broker.start()
    for old in d.glob("mqtt.sqlite3*"):
        old.unlink()
    (d / "mqtt-password").write_text(MQTT_USERS["cell"] + "\n")
    toml = f"""[mqtt]
brokers = ["{broker.address}"]
username = "cell"
password_file = "mqtt-password"
site = "bench"
line = "l1"
store = "mqtt.sqlite3"
reconnect_max_s = 1

[mqtt.tls]
ca_file = "{broker.ca_file}"
"""
    return broker, toml


def _mqtt_subscriber(broker):
    from afrd.sim.broker import Subscriber

    sub = Subscriber(broker, "mes", MQTT_USERS["mes"], ["afrd/bench/l1/+/result"], "bench-mes")
    if not sub.ready.wait(10):
        raise RuntimeError("the bench's MQTT subscriber did not connect")
    return sub


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used: its own cost, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mqtt_settled(dm, n: int, up: bool, timeout: float = 30.0) -> dict:
    """The link's status once all ``n`` results were acknowledged (broker up) or queued
    (broker down), or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        st = dm.ctl({"cmd": "status"})["result"]["mqtt"]
        if st["sent" if up else "queued"] >= n or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def _shadow_counts(dm) -> dict | None:
    sh = dm.ctl({"cmd": "status"})["result"]["shadow"]
    return {k: sh[k] for k in ("offered", "compared", "skipped")} if sh else None


def _shadow_run(dm, bundle: Path, on: bool) -> None:
    """Start a shadow run of ``bundle`` (the live one again: a candidate of the same cost), or
    stop the one running."""
    if on:
        r = dm.ctl({"cmd": "shadow_start", "bundle": str(bundle)}, timeout_s=300)
    elif dm.ctl({"cmd": "status"})["result"]["shadow"] is None:
        return
    else:
        r = dm.ctl({"cmd": "shadow_stop"}, timeout_s=60)
    assert r["ok"], r


def _off_on(values: list[float], on: list[bool]) -> list[float] | None:
    """The medians of ``values`` where ``on`` is False and where it is True."""
    if not any(on):
        return None
    return [
        statistics.median(v for v, o in zip(values, on, strict=True) if o is s)
        for s in (False, True)
    ]


def _results(sub: zmq.Socket, timeout_ms: int, seen: dict | None = None) -> list[dict]:
    """Results received; each message's arrival on the subscriber's clock goes into
    ``seen[(kind, part_id)]``."""
    out = []
    while sub.poll(timeout_ms):
        frames = sub.recv_multipart()
        t = time.perf_counter()
        kind, _, msg, _ = parse_message(frames)
        if seen is not None:
            seen[(kind, msg.get("part_id"))] = t
        if kind == "result":
            out.append(msg)
        timeout_ms = 0
    return out


def run_engine(
    kind: str,
    bundle: Path,
    size: int,
    n_seq: int,
    n_tp: int,
    work: Path,
    threads: int,
    pages: int | None = None,
    plc: bool = False,
    lights: bool = False,
    mqtt: str | None = None,
    shadow: bool = False,
    gap_s: float = 0.0,
) -> dict:
    d = work / kind
    d.mkdir(parents=True, exist_ok=True)
    extra = "[queues]\ntriggers = 64\nacquired = 2"
    broker = None
    if mqtt is not None:  # "on": a local broker and a subscriber; "down": nobody listens
        broker, mqtt_toml = _mqtt_setup(d, mqtt)
        extra = mqtt_toml + "\n\n" + extra
    if plc:  # both PLC servers on free ports
        from plc_clients import free_port

        ua_port, mb_port = free_port(), free_port()
        extra += f"\n\n[opcua]\nport = {ua_port}\n\n[modbus]\nport = {mb_port}"
    if lights:  # the opt-in lights.<cell> JPEG mosaic after every result
        extra += "\n\n[lights_preview]\nenabled = true"
    cfg = write_config(
        d,
        bundle,
        size=size,
        engine=kind,
        extra=extra,
        engine_options=f"threads = {threads}" if kind == "onnxruntime" else None,
    )
    dm = Daemon(cfg).start(timeout=300)
    stack = contextlib.ExitStack()
    try:
        if pages is not None:  # the operator's page and its browsers, as on a line PC
            from afrd.web.launch import PageClients, WebProcess

            web = WebProcess(cfg).start()
            stack.callback(web.stop)
            clients = stack.enter_context(PageClients(web.port, pages))
        if plc:
            from plc_clients import PlcClients

            plc_clients = stack.enter_context(PlcClients(ua_port, mb_port))
        if mqtt == "on":
            stack.callback(broker.stop)
            mqtt_sub = _mqtt_subscriber(broker)
            stack.callback(mqtt_sub.close)
        sub = dm.subscriber()
        wait_subscribed(sub)

        def trig(pid: str) -> None:
            r = dm.ctl({"cmd": "trigger", "part_id": pid})
            assert r["ok"], r

        seen: dict = {}  # (kind, part_id) -> arrival on this (the subscriber's) clock
        for i in range(3):  # warm-up (first renders, allocations)
            trig(f"warm-{i}")
            while not _results(sub, 10000, seen):
                pass
        deadline = time.perf_counter() + 2.0  # heatmaps on: the last warm-up part's comes
        while ("heatmap", "warm-2") not in seen and time.perf_counter() < deadline:
            _results(sub, 100, seen)
        heatmaps = ("heatmap", "warm-2") in seen
        # one part at a time: the daemon's own overhead without queueing; on the subscriber's
        # clock, from sending the trigger to the part's last message (its heatmap when on)
        seq_res, e2e, e2e_result, shadow_on = [], [], [], []
        for i in range(n_seq):
            if shadow and i % 10 == 0:  # blocks of 10 parts: without, with, without, ...
                _shadow_run(dm, bundle, on=(i // 10) % 2 == 1)
            shadow_on.append(shadow and (i // 10) % 2 == 1)
            pid = f"seq-{i}"
            t_sent = time.perf_counter()
            trig(pid)
            got: list = []
            while not got or (heatmaps and ("heatmap", pid) not in seen):
                got += _results(sub, 10000, seen)
            seq_res += got
            e2e.append((seen[("heatmap" if heatmaps else "result", pid)] - t_sent) * 1000)
            e2e_result.append((seen[("result", pid)] - t_sent) * 1000)
            if gap_s:  # a line's takt: the time a real line leaves between parts
                time.sleep(gap_s)
        seq_shadow = _shadow_counts(dm) if shadow else None
        if shadow and not shadow_on[-1]:
            _shadow_run(dm, bundle, on=True)
        # pipeline kept full
        window, sent, tp_res = 6, 0, []
        t0, cpu0 = time.perf_counter(), _cpu_s(dm.proc.pid)
        while len(tp_res) < n_tp:
            while sent < n_tp and sent - len(tp_res) < window:
                trig(f"tp-{sent}")
                sent += 1
            tp_res += _results(sub, 50)
        t1, cpu1 = time.perf_counter(), _cpu_s(dm.proc.pid)
        sub.close()
        page_events = clients.events if pages is not None else 0
        plc_seen = (plc_clients.ua_changes, plc_clients.mb_reads) if plc else None
        mqtt_seen = None
        if mqtt is not None:  # what the link did: every result acknowledged, or queued
            n_all = 3 + n_seq + n_tp
            st = _mqtt_settled(dm, n_all, up=mqtt == "on")
            got = len(mqtt_sub.take()) if mqtt == "on" else 0
            mqtt_seen = {"sent": st["sent"], "queued": st["queued"], "received": got}
        shadow_seen = _shadow_counts(dm) if shadow else None
    finally:
        stack.close()
        rc = dm.stop()
    bad = [r for r in seq_res + tp_res if r["verdict"] == "error"]
    if bad:
        raise RuntimeError(f"{kind}: {len(bad)} error verdicts, e.g. {bad[0]['error']}")

    def mean(rs, key):
        return statistics.fmean(r["latency_ms"][key] for r in rs)

    over = [
        r["latency_ms"]["total"] - r["latency_ms"]["acquire"] - r["latency_ms"]["infer"]
        for r in seq_res
    ]
    over.sort()

    # trigger sent -> last message received, less acquisition and inference: what an MES
    # client sees the daemon add (control round trip, JSON, ZeroMQ, the heatmap PNG)
    def _less_work(times: list) -> list:
        return sorted(
            t - r["latency_ms"]["acquire"] - r["latency_ms"]["infer"]
            for t, r in zip(times, seq_res, strict=True)
        )

    sub_over, sub_result = _less_work(e2e), _less_work(e2e_result)
    acq, inf = mean(tp_res, "acquire"), mean(tp_res, "infer")
    rate = n_tp / (t1 - t0)
    bound = 1000.0 / max(acq, inf)
    return {
        "engine": kind,
        "web_pages": pages,
        "plc": plc,
        "lights": lights,
        "plc_ua_changes_mb_reads": plc_seen,
        "mqtt": mqtt,
        "mqtt_seen": mqtt_seen,
        "shadow": shadow,
        "shadow_seen": shadow_seen,
        "shadow_seen_sequential": seq_shadow,  # its counts after the one-at-a-time parts
        "gap_ms": gap_s * 1000,
        # --shadow: the same daemon's one-at-a-time parts without / with the shadow run
        "shadow_total_ms_p50_off_on": _off_on(
            [r["latency_ms"]["total"] for r in seq_res], shadow_on
        ),
        "shadow_verdict_ms_p50_off_on": _off_on(e2e_result, shadow_on),
        "page_events_read": page_events,
        "size": size,
        "parts_sequential": n_seq,
        "parts_throughput": n_tp,
        "overhead_ms_p50": over[len(over) // 2],
        "overhead_ms_p90": over[int(len(over) * 0.9)],
        "overhead_ms_mean": statistics.fmean(over),
        "subscriber_overhead_ms_p50": sub_over[len(sub_over) // 2],
        "subscriber_overhead_ms_p90": sub_over[int(len(sub_over) * 0.9)],
        "subscriber_heatmaps": heatmaps,
        "subscriber_to_result_ms_p50": sub_result[len(sub_result) // 2],
        "acquire_ms_seq": mean(seq_res, "acquire"),
        "infer_ms_seq": mean(seq_res, "infer"),
        "total_ms_seq": mean(seq_res, "total"),
        "total_ms_p50": statistics.median(r["latency_ms"]["total"] for r in seq_res),
        "verdict_ms_p50": statistics.median(e2e_result),  # subscriber: trigger -> result
        "acquire_ms_tp": acq,
        "infer_ms_tp": inf,
        "throughput_parts_s": rate,
        "stage_bound_parts_s": bound,
        "throughput_ratio": rate / bound,
        "daemon_cpu_ms_per_part": (cpu1 - cpu0) * 1000 / n_tp,
        "exit_code": rc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--engines", default="null,onnxruntime")
    ap.add_argument("--bundle", type=Path, help="AFRD bundle to time with onnxruntime")
    ap.add_argument("--afrd", action="store_true", help="build and time a small AFRD bundle")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--web-pages", type=int, default=0, help="also run with N page streams")
    ap.add_argument("--plc", action="store_true", help="also run with OPC UA + Modbus on")
    ap.add_argument("--lights", action="store_true", help="also run with [lights_preview] on")
    ap.add_argument("--mqtt", action="store_true", help="also run with [mqtt] on, broker up/down")
    ap.add_argument("--rounds", type=int, default=2, help="--mqtt: interleaved off/on/down rounds")
    ap.add_argument("--shadow", action="store_true", help="also run with a shadow model on")
    ap.add_argument(
        "--gap-ms", type=float, default=0.0, help="pause between the one-at-a-time parts (takt)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "daemon.json")
    args = ap.parse_args(argv)
    n_seq, n_tp = (20, 40) if args.quick else (100, 200)
    work = REPO / ".cache" / "afrd" / "bench" / f"daemon-{args.size}"
    work.mkdir(parents=True, exist_ok=True)
    simple = work / "brightness-bundle"
    if not (simple / "bundle.json").exists():
        make_brightness_bundle(simple, size=args.size, threshold=0.5)
    model_bundle = args.bundle or (_afrd_bundle(args.size) if args.afrd else simple)
    rows = []
    for kind in args.engines.split(","):
        b = simple if kind == "null" else model_bundle
        for pages in [None, 0, args.web_pages] if args.web_pages else [None]:
            for plc in (False, True) if args.plc else (False,):
                for lights in (False, True) if args.lights else (False,):
                    for mq in [None, "on", "down"] * args.rounds if args.mqtt else [None]:
                        for sh in [False, True] if args.shadow else [False]:
                            row = run_engine(
                                *(kind, b, args.size, n_seq, n_tp, work, args.threads, pages),
                                *(plc, lights, mq, sh),
                                gap_s=args.gap_ms / 1000,
                            )
                            row["bundle"] = (
                                "brightness graph (not a model)" if b == simple else b.name
                            )
                            rows.append(row)
    print(
        f"\ndaemon bench: sim cell, {args.size}x{args.size}, 6 lights, heatmaps on, "
        f"{platform.processor() or platform.machine()}"
    )
    hdr = (
        "engine",
        "pages",
        "plc",
        "lights",
        "mqtt",
        "bundle",
        "overhead p50/p90 ms",
        "at subscriber p50/p90 ms",
        "acq ms",
        "infer ms",
        "parts/s",
        "1/max(stage)",
        "ratio",
    )
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(
            f"| {r['engine']} | {'-' if r['web_pages'] is None else r['web_pages']} | "
            f"{'on' if r['plc'] else '-'} | {'on' if r['lights'] else '-'} | {r['mqtt'] or '-'} | "
            f"{r['bundle']} | {r['overhead_ms_p50']:.2f} / {r['overhead_ms_p90']:.2f} | "
            f"{r['subscriber_overhead_ms_p50']:.2f} / {r['subscriber_overhead_ms_p90']:.2f} | "
            f"{r['acquire_ms_tp']:.1f} | {r['infer_ms_tp']:.1f} | {r['throughput_parts_s']:.1f} | "
            f"{r['stage_bound_parts_s']:.1f} | {r['throughput_ratio']:.2f} |"
        )
    compare = []
    for base in (r for r in rows if args.web_pages and r["web_pages"] is None):
        for paged in (
            r for r in rows if r["engine"] == base["engine"] and r["web_pages"] is not None
        ):
            c = {
                "engine": base["engine"],
                "web_pages": paged["web_pages"],
                "throughput_ratio_vs_no_page": paged["throughput_parts_s"]
                / base["throughput_parts_s"],
                "overhead_p50_delta_ms": paged["overhead_ms_p50"] - base["overhead_ms_p50"],
                "page_events_read": paged["page_events_read"],
            }
            compare.append(c)
            print(
                f"{c['engine']}: afrd web + {c['web_pages']} pages vs no page: throughput x"
                f"{c['throughput_ratio_vs_no_page']:.3f}, overhead p50 "
                f"{c['overhead_p50_delta_ms']:+.2f} ms ({c['page_events_read']} events read)"
            )
    plc_cmp = []
    for base in (r for r in rows if args.plc and not r["plc"]):
        on = next(
            r
            for r in rows
            if r["plc"] and (r["engine"], r["web_pages"]) == (base["engine"], base["web_pages"])
        )
        c = {
            "engine": base["engine"],
            "web_pages": base["web_pages"],
            "throughput_ratio_vs_no_plc": on["throughput_parts_s"] / base["throughput_parts_s"],
            "overhead_p50_delta_ms": on["overhead_ms_p50"] - base["overhead_ms_p50"],
            "overhead_mean_delta_ms": on["overhead_ms_mean"] - base["overhead_ms_mean"],
            "ua_changes_mb_reads": on["plc_ua_changes_mb_reads"],
        }
        plc_cmp.append(c)
        print(
            f"{c['engine']}: OPC UA + Modbus on vs off: throughput x"
            f"{c['throughput_ratio_vs_no_plc']:.3f}, overhead p50 "
            f"{c['overhead_p50_delta_ms']:+.2f} ms, mean {c['overhead_mean_delta_ms']:+.2f} ms "
            f"(OPC UA data changes, Modbus reads: {c['ua_changes_mb_reads']})"
        )
    lights_cmp = []
    for base in (r for r in rows if args.lights and not r["lights"]):
        on = next(
            r
            for r in rows
            if r["lights"]
            and (r["engine"], r["web_pages"], r["plc"])
            == (base["engine"], base["web_pages"], base["plc"])
        )
        c = {
            "engine": base["engine"],
            "throughput_ratio_vs_no_lights": on["throughput_parts_s"] / base["throughput_parts_s"],
            "overhead_p50_off_on_ms": [base["overhead_ms_p50"], on["overhead_ms_p50"]],
            "overhead_mean_delta_ms": on["overhead_ms_mean"] - base["overhead_ms_mean"],
        }
        lights_cmp.append(c)
        print(
            f"{c['engine']}: [lights_preview] on vs off: throughput x"
            f"{c['throughput_ratio_vs_no_lights']:.3f}, overhead p50 "
            f"{base['overhead_ms_p50']:.2f} -> {on['overhead_ms_p50']:.2f} ms, mean "
            f"{c['overhead_mean_delta_ms']:+.2f} ms"
        )
    mqtt_cmp = _mqtt_compare(rows) if args.mqtt else []
    shadow_cmp = _shadow_compare(rows) if args.shadow else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "rows": rows,
                "web_pages": compare,
                "plc": plc_cmp,
                "lights": lights_cmp,
                "mqtt": mqtt_cmp,
                "shadow": shadow_cmp,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    ok = all(r["overhead_ms_p50"] <= 3.0 and r["throughput_ratio"] >= 0.9 for r in rows)
    print("goals (overhead <= 3 ms, ratio >= 0.9):", "met" if ok else "NOT met")
    return 0


def _mqtt_compare(rows: list[dict]) -> list[dict]:
    """Each MQTT row against the mean of the same engine's rows without MQTT in this run."""
    out = []
    for kind in dict.fromkeys(r["engine"] for r in rows):
        mine = [r for r in rows if r["engine"] == kind]
        off = [r for r in mine if r["mqtt"] is None]
        tp = statistics.fmean(r["throughput_parts_s"] for r in off)
        p50 = statistics.fmean(r["overhead_ms_p50"] for r in off)
        cpu = statistics.fmean(r["daemon_cpu_ms_per_part"] for r in off)
        for r in (r for r in mine if r["mqtt"] is not None):
            c = {
                "engine": kind,
                "mqtt": r["mqtt"],
                "throughput_ratio_vs_off": r["throughput_parts_s"] / tp,
                "overhead_p50_delta_ms": r["overhead_ms_p50"] - p50,
                "daemon_cpu_ms_per_part_delta": r["daemon_cpu_ms_per_part"] - cpu,
                "seen": r["mqtt_seen"],
            }
            out.append(c)
            print(
                f"{kind}: MQTT {c['mqtt']} vs off (mean of {len(off)}): throughput x"
                f"{c['throughput_ratio_vs_off']:.3f}, overhead p50 "
                f"{c['overhead_p50_delta_ms']:+.2f} ms, daemon CPU per part "
                f"{c['daemon_cpu_ms_per_part_delta']:+.2f} ms; link {c['seen']}"
            )
    return out


def _shadow_compare(rows: list[dict]) -> list[dict]:
    """Each row with a shadow run: its one-at-a-time parts without against with it."""
    out = []
    for r in (r for r in rows if r["shadow"]):
        (t_off, t_on), (v_off, v_on) = (
            r["shadow_total_ms_p50_off_on"],
            r["shadow_verdict_ms_p50_off_on"],
        )
        c = {
            "engine": r["engine"],
            "total_ms_p50_off_on": [t_off, t_on],
            "verdict_ms_p50_off_on": [v_off, v_on],
            "total_p50_delta_ms": t_on - t_off,
            "seen": r["shadow_seen"],
            "seen_last_sequential_block": r["shadow_seen_sequential"],
            "gap_ms": r["gap_ms"],
        }
        out.append(c)
        print(
            f"{r['engine']}: live verdict p50 without / with a shadow run (blocks of 10, same "
            f"daemon): {t_off:.2f} / {t_on:.2f} ms ({t_on - t_off:+.2f}) trigger to publish, "
            f"{v_off:.2f} / {v_on:.2f} ms ({v_on - v_off:+.2f}) at the subscriber; candidate "
            f"{c['seen']}, in the last one-at-a-time block {c['seen_last_sequential_block']} "
            f"(gap {c['gap_ms']:.0f} ms between parts)"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
