"""End-to-end: `afrd run` as a separate process on the simulated cell, real ZeroMQ sockets.

The model here is a small genuine ONNX graph (brightness, see _daemon_helpers) so these tests
exercise the daemon, not a model; verdicts against ground truth with a trained model are in
test_daemon_model.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from afrd.daemon.verdict import parse_message

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    REPO,
    Daemon,
    collect,
    make_brightness_bundle,
    wait_subscribed,
    write_config,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


@pytest.fixture(scope="module")
def daemon(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("cell")
    cfg = write_config(d, bundle)
    dm = Daemon(cfg).start()
    yield dm
    assert dm.stop() == 0, dm.output()


def _results(msgs: list) -> list[dict]:
    return [parse_message(m)[2] for m in msgs if m[0].startswith(b"result.")]


def test_every_message_validates_and_heatmaps_decode(daemon):
    sub = daemon.subscriber()
    wait_subscribed(sub)
    ids = [f"val-{i}" for i in range(6)]
    for pid in ids:
        r = daemon.ctl({"cmd": "trigger", "part_id": pid, "product": "widget"})
        assert r["ok"], r
    msgs = collect(sub, len(ids), timeout=30)
    kinds = {"result": 0, "heatmap": 0, "status": 0}
    for frames in msgs:
        kind, cell, msg, png = parse_message(frames)  # raises on any schema violation
        assert cell == "t1"
        kinds[kind] += 1
        if kind == "heatmap":
            img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (msg["height"], msg["width"], 3) == (64, 64, 3)
    results = _results(msgs)
    assert [r["part_id"] for r in results] == ids
    assert all(r["product"] == "widget" and r["verdict"] in ("pass", "fail") for r in results)
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for r in results:
        lat = r["latency_ms"]
        assert 0 < lat["acquire"] < lat["total"] and 0 < lat["infer"] < lat["total"]
        assert r["verdict"] == ("fail" if r["score"] > r["threshold"] else "pass")
        assert len(r["model"]["sha256"]) == 64
    # a few more frames arrive after the results (heatmaps follow their result)
    more = collect(sub, 1, kind="status", timeout=5)
    n_heat = kinds["heatmap"] + sum(1 for m in more if m[0].startswith(b"heatmap."))
    assert n_heat == len(ids)
    sub.close()


def test_bad_control_requests_get_error_replies(daemon):
    for raw in (b"{not json", b"[1, 2]", b'{"cmd": "explode"}', b"\xff\xfe"):
        r = daemon.ctl(raw)
        assert r["ok"] is False and r["error"], (raw, r)
    r = daemon.ctl({"cmd": "set_threshold", "threshold": "high"})
    assert r["ok"] is False and "threshold" in r["error"]
    r = daemon.ctl({"cmd": "trigger", "part_id": 5})
    assert r["ok"] is False and "part_id" in r["error"]
    assert daemon.ctl({"cmd": "status"})["ok"]  # still serving


def test_threshold_pause_resume_and_metrics(daemon):
    sub = daemon.subscriber()
    wait_subscribed(sub)
    assert daemon.ctl({"cmd": "set_threshold", "threshold": 0.0})["ok"]
    assert daemon.ctl({"cmd": "trigger", "part_id": "thr-0"})["ok"]
    (r,) = _results(collect(sub, 1))
    assert r["threshold"] == 0.0 and r["verdict"] == "fail"  # brightness > 0 always
    assert daemon.ctl({"cmd": "pause"})["ok"]
    assert daemon.ctl({"cmd": "status"})["result"]["state"] == "paused"
    refused = daemon.ctl({"cmd": "trigger", "part_id": "paused-0"})
    assert refused["ok"] is False and "paused" in refused["error"]
    (r,) = _results(collect(sub, 1))  # ... and it is published, not dropped
    assert r["part_id"] == "paused-0" and r["error"]["code"] == "paused"
    assert daemon.ctl({"cmd": "resume"})["ok"]
    assert daemon.ctl({"cmd": "set_threshold", "threshold": 0.45})["ok"]
    st = daemon.ctl({"cmd": "status"})["result"]
    port = st["endpoints"]["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'afrd_parts_total{cell="t1",verdict="error"}' in text
    fails = [
        ln
        for ln in text.splitlines()
        if ln.startswith('afrd_parts_total{cell="t1",verdict="fail"}')
    ]
    assert fails and float(fails[0].split()[-1]) >= 1
    assert 'afrd_stage_seconds_count{cell="t1",stage="infer"}' in text
    assert 'afrd_queue_depth{cell="t1",queue="acquired"}' in text
    sub.close()


def test_sighup_reloads_threshold(daemon):
    cfg = daemon.config
    original = cfg.read_text()
    try:
        cfg.write_text(original.replace("heatmaps = true", "heatmaps = true\nthreshold = 0.123", 1))
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if daemon.ctl({"cmd": "status"})["result"]["threshold"] == pytest.approx(0.123):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"threshold not reloaded:\n{daemon.output()}")
        cfg.write_text(original.replace('cell = "t1"', 'cell = "t2"'))
        r = daemon.ctl({"cmd": "reload"})
        assert r["ok"] is False and "cell" in r["error"]  # needs a restart: refused, still up
    finally:
        cfg.write_text(original)
        assert daemon.ctl({"cmd": "reload"})["ok"]


def test_reload_swaps_the_model_between_parts(daemon, bundle, tmp_path):
    other = tmp_path / "other-bundle"
    make_brightness_bundle(other, size=32, threshold=0.3)  # another graph: another sha256
    cfg = daemon.config
    original = cfg.read_text()
    before = daemon.ctl({"cmd": "status"})["result"]["model"]["sha256"]
    sub = daemon.subscriber()
    wait_subscribed(sub)
    try:
        cfg.write_text(original.replace(f'path = "{bundle}"', f'path = "{other}"'))
        r = daemon.ctl({"cmd": "reload"})
        assert r["ok"], r
        after = daemon.ctl({"cmd": "status"})["result"]
        assert after["model"]["sha256"] != before and after["threshold"] == pytest.approx(0.3)
        assert daemon.ctl({"cmd": "trigger", "part_id": "new-model"})["ok"]
        (res,) = _results(collect(sub, 1))
        assert res["model"]["sha256"] == after["model"]["sha256"] and res["verdict"] != "error"
    finally:
        sub.close()
        cfg.write_text(original)
        assert daemon.ctl({"cmd": "reload"})["ok"]


def test_bad_config_exits_2_naming_the_key(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle)
    text = cfg.read_text().replace("level = 100.0", "level = 180.0", 1)
    cfg.write_text(text.replace("[camera]", "[camera]\nexposure = 5", 1))
    for cmd in (["run", "--config", str(cfg)], ["config", "check", str(cfg)]):
        p = subprocess.run(
            [sys.executable, "-m", "afrd", *cmd],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2, p.stderr
        assert (
            "lighting[1].channels[0].level" in p.stderr and "less than or equal to 100" in p.stderr
        )
        assert "camera.exposure: unknown key" in p.stderr and str(cfg) in p.stderr


def test_config_must_cover_bundle_lights(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle)
    text = cfg.read_text()
    cut = text.index('[[lighting]]\nname = "ring_left"')
    end = text.index("[[lighting]]", cut + 5)
    cfg.write_text(text[:cut] + text[end:])
    p = _run_to_exit(cfg)
    assert p.returncode == 2 and "ring_left" in p.stderr, p.stderr


def _run_to_exit(cfg: Path) -> subprocess.CompletedProcess:
    """`afrd run` expected to refuse its config and exit at once."""
    return subprocess.run(
        [sys.executable, "-m", "afrd", "run", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_control_refuses_wide_bind_without_curve(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle)
    cfg.write_text(
        cfg.read_text().replace(
            f'control = "ipc://{tmp_path}/ctl.sock"', 'control = "tcp://0.0.0.0:0"'
        )
    )
    p = _run_to_exit(cfg)
    assert p.returncode == 2 and "CURVE" in p.stderr, p.stderr


def test_sigterm_mid_part_publishes_it_and_exits_0(bundle, tmp_path):
    # 6 lights x 60 ms settle: the part is certainly being imaged when SIGTERM lands
    cfg = write_config(tmp_path, bundle, controller='kind = "sim"\nsettle_s = 0.06')
    dm = Daemon(cfg, env={"WATCHDOG_USEC": "400000"}).start()  # systemd's WatchdogSec=0.4
    sub = dm.subscriber()
    wait_subscribed(sub)
    assert dm.ctl({"cmd": "trigger", "part_id": "inflight"})["ok"]
    assert dm.ctl({"cmd": "trigger", "part_id": "queued"})["ok"]
    _wait_status(dm, lambda s: s["in_flight"] >= 1)  # "inflight" is being imaged
    dm.proc.send_signal(signal.SIGTERM)
    results = _results(collect(sub, 2, timeout=20))
    assert dm.stop() == 0, dm.output()
    by_id = {r["part_id"]: r for r in results}
    assert by_id["inflight"]["verdict"] in ("pass", "fail"), by_id
    assert by_id["queued"]["verdict"] == "error" and by_id["queued"]["error"]["code"] == "shutdown"
    assert any("STOPPING=1" in n for n in dm.notes)
    assert any("WATCHDOG=1" in n for n in dm.notes)  # pinged every 0.2 s while healthy


def test_controller_port_lost_gives_errors_then_recovers(bundle, tmp_path):
    from afrd.sim.emulator import ControllerEmulator

    with ControllerEmulator() as emu:
        cfg = write_config(
            tmp_path, bundle, controller=f'kind = "gardasoft"\nport = "{emu.port}"\ntimeout_s = 0.3'
        )
        dm = Daemon(cfg).start()
        try:
            sub = dm.subscriber()
            wait_subscribed(sub)
            assert dm.ctl({"cmd": "trigger", "part_id": "before"})["ok"]
            (r,) = _results(collect(sub, 1))
            assert r["verdict"] in ("pass", "fail")
            emu.close_port()
            for i in range(3):
                assert dm.ctl({"cmd": "trigger", "part_id": f"lost-{i}"})["ok"]
            lost = _results(collect(sub, 3, timeout=20))
            assert [r["verdict"] for r in lost] == ["error"] * 3, lost
            assert all(r["error"]["code"] == "acquire" for r in lost)
            assert all(r["score"] is None for r in lost)
            emu.reopen_port()
            deadline, recovered = time.monotonic() + 30, None
            while time.monotonic() < deadline and recovered is None:
                assert dm.ctl({"cmd": "trigger", "part_id": "after"})["ok"]
                (r,) = _results(collect(sub, 1, timeout=10))
                if r["verdict"] != "error":
                    recovered = r
                else:
                    time.sleep(0.3)
            assert recovered is not None, dm.output()
            assert dm.proc.poll() is None  # the daemon never went down
        finally:
            assert dm.stop() == 0, dm.output()


def test_subscriber_that_never_reads_does_not_slow_the_pipeline(bundle, tmp_path):
    import zmq

    cfg = write_config(tmp_path, bundle, size=128, extra="[queues]\ntriggers = 64")
    cfg.write_text(cfg.read_text().replace("heartbeat_s = 0.5", "heartbeat_s = 0.5\nsndhwm = 4"))
    dm = Daemon(cfg).start()
    try:
        reader = dm.subscriber()
        wait_subscribed(reader)

        def run(prefix: str, n: int = 30) -> tuple[float, list]:
            t0 = time.monotonic()
            for i in range(n):
                assert dm.ctl({"cmd": "trigger", "part_id": f"{prefix}-{i}"})["ok"]
            res = _results(collect(reader, n, timeout=60))
            return time.monotonic() - t0, res

        base_s, base = run("base")
        stuck = dm.ctx.socket(zmq.SUB)
        stuck.setsockopt(zmq.RCVHWM, 1)
        stuck.setsockopt(zmq.RCVBUF, 4096)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(f"ipc://{tmp_path}/pub.sock")
        wait_subscribed(stuck)  # its one read: the subscription is live, then it never reads
        stuck_s, res = run("stuck")
        assert len(base) == 30 and len(res) == 30  # the reading subscriber misses nothing
        # never reading must not cost throughput (generous bound: shared 2-core CI)
        assert stuck_s < 2.0 * base_s + 1.0, (base_s, stuck_s)
        totals = [r["latency_ms"]["total"] for r in res]
        assert max(totals) < 2000, totals
        stuck.close()
    finally:
        assert dm.stop() == 0, dm.output()


def test_watch_and_ctl_clients(daemon, tmp_path):
    ep = f"ipc://{daemon.dir}/pub.sock"
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "afrd",
            "watch",
            "--connect",
            ep,
            "--save",
            str(tmp_path / "hm"),
            "--count",
            "2",
            "--timeout",
            "60",
            "--status",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = watch.stdout.readline()  # a heartbeat printed: the subscription is live
    assert " status " in first, first
    ctl = [sys.executable, "-m", "afrd", "ctl", "--connect", f"ipc://{daemon.dir}/ctl.sock"]
    for i in range(2):
        p = subprocess.run(
            [*ctl, "trigger", "--part-id", f"w-{i}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 0 and json.loads(p.stdout)["ok"], p.stderr
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    out = first + out
    assert "w-0" in out and "w-1" in out
    pngs = sorted((tmp_path / "hm").glob("*.png"))
    assert len(pngs) >= 1 and cv2.imread(str(pngs[0])) is not None
    p = subprocess.run(
        [*ctl, "set-threshold", "nan"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 1  # refused by the daemon, reported as such


def test_systemd_unit_verifies(tmp_path):
    import shutil

    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed on this machine")
    unit = (REPO / "systemd" / "afrd.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's afrd
    afrd_bin = Path(sys.executable).parent / "afrd"
    if not afrd_bin.exists():
        pytest.skip(f"{afrd_bin} missing (package not installed in this venv)")
    (tmp_path / "afrd.service").write_text(unit.replace("/opt/afrd/.venv/bin/afrd", str(afrd_bin)))
    p = subprocess.run(
        [exe, "verify", str(tmp_path / "afrd.service")], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "DeviceAllow=char-ttyUSB" in unit


def test_example_config_is_valid():
    from afrd.daemon.config_check import check

    assert check(str(REPO / "systemd" / "cell.example.toml"), bundle=False) == []


def test_free_run_trigger_inspects_on_its_own(bundle, tmp_path):
    cfg = write_config(
        tmp_path, bundle, trigger='mode = "free-run"\ninterval_s = 0.1\nproduct = "fr"'
    )
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber()
        wait_subscribed(sub)
        res = _results(collect(sub, 5, timeout=30))
        assert len(res) == 5 and all(r["product"] == "fr" for r in res)
        assert all(r["verdict"] in ("pass", "fail") for r in res), res
        assert len({r["part_id"] for r in res}) == 5
        assert dm.ctl({"cmd": "pause"})["ok"]
        # paused: the timer's triggers are not taken (no part, not even an error/paused one)
        _wait_status(dm, lambda s: s["in_flight"] == 0 and not any(s["queues"].values()))
        n_paused = dm.ctl({"cmd": "status"})["result"]["parts"]
        # three heartbeats = 1.5 s = 15 timer periods later, still the same count
        hb = collect(sub, 3, kind="status", timeout=10)
        assert sum(m[0].startswith(b"status.") for m in hb) == 3
        assert dm.ctl({"cmd": "status"})["result"]["parts"] == n_paused
    finally:
        assert dm.stop() == 0, dm.output()


def _wait_status(dm: Daemon, ready, timeout: float = 20.0) -> dict:
    """Poll the daemon's status until ``ready(status)``; the status then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = dm.ctl({"cmd": "status"})["result"]
        if ready(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"status never ready: {st}\n{dm.output()}")


def test_hardware_trigger_images_a_part_per_line_edge(bundle, tmp_path):
    """Hardware mode on the simulated camera: the daemon keeps a grab armed on the camera's line
    (a datagram socket here); an edge is a part, an idle line is no part, never an error."""
    import socket

    line = tmp_path / "line.sock"
    cfg = write_config(
        tmp_path,
        bundle,
        trigger='mode = "hardware"\nproduct = "hw"',
        camera=f'seed = 7\ntimeout_s = 0.2\nline = "{line}"',
    )
    dm = Daemon(cfg).start()
    edge = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sub = dm.subscriber()
        wait_subscribed(sub)
        # no part on the line: armed grabs time out, nothing is published
        st = _wait_status(dm, lambda s: s["idle_grabs"] >= 3)
        assert st["trigger"] == "hardware" and sum(st["parts"].values()) == 0, st
        results = []
        for _ in range(3):
            edge.sendto(b"\x01", str(line))
            results += _results(collect(sub, 1, timeout=20))
        assert [r["verdict"] in ("pass", "fail") for r in results] == [True] * 3, results
        assert [r["seq"] for r in results] == [0, 1, 2]  # idle grabs take no sequence number
        assert all(r["product"] == "hw" for r in results)
        assert len({r["part_id"] for r in results}) == 3
        idle = dm.ctl({"cmd": "status"})["result"]["idle_grabs"]
        st = _wait_status(dm, lambda s: s["idle_grabs"] >= idle + 2)  # idle again, still quiet
        assert st["parts"]["error"] == 0 and sum(st["parts"].values()) == 3, st
    finally:
        edge.close()
        assert dm.stop() == 0, dm.output()


def test_recorder_writes_sets_afrd_train_can_read(bundle, tmp_path):
    from afrd.data.capture import CaptureDataset

    rec = tmp_path / "captures"
    extra = f'[recorder]\nenabled = true\ndir = "{rec}"\npass_sample_rate = 1.0\nmin_free_bytes = 0'
    cfg = write_config(tmp_path, bundle, extra=extra)
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber()
        wait_subscribed(sub)
        for i in range(3):
            assert dm.ctl({"cmd": "trigger", "part_id": f"rec-{i}", "product": "widget"})["ok"]
        res = _results(collect(sub, 3))
        deadline = time.monotonic() + 10
        while dm.ctl({"cmd": "status"})["result"]["recorder"]["recorded"] < 3:
            assert time.monotonic() < deadline, dm.output()
            time.sleep(0.1)
    finally:
        assert dm.stop() == 0, dm.output()
    ds = CaptureDataset(rec, split="all")
    assert len(ds) == 3
    got = sorted(ds[i].part_id for i in range(3))
    assert got == ["rec-0", "rec-1", "rec-2"] and all(r["verdict"] != "error" for r in res)
    assert ds[0].images.shape == (6, 64, 64, 3)


def test_daemon_with_a_genicam_camera_on_a_real_gentl_producer(bundle, tmp_path):
    """`camera.kind = "genicam"` through harvesters on TLSimu (a real GenTL producer)."""
    cti = Path(
        os.environ.get("AFRD_TEST_CTI", REPO / ".cache" / "genicam" / "1.5.0" / "TLSimu.cti")
    )
    if not cti.is_file():
        pytest.skip(f"{cti} missing: run scripts/fetch_test_assets.py")
    cfg = write_config(tmp_path, bundle)
    text = cfg.read_text()
    start = text.index("[camera]")
    end = text.index("[controller]")
    cam = f'[camera]\nkind = "genicam"\nproducer = "{cti}"\nserial = "SN_InterfaceB_1"\ntimeout_s = 2.0\n\n'
    cfg.write_text(text[:start] + cam + text[end:])
    dm = Daemon(cfg).start(timeout=90)
    try:
        sub = dm.subscriber()
        wait_subscribed(sub)
        for i in range(2):
            assert dm.ctl({"cmd": "trigger", "part_id": f"gc-{i}"})["ok"]
        msgs = collect(sub, 2, timeout=30)
        res = _results(msgs)
        assert [r["verdict"] in ("pass", "fail") for r in res] == [True, True], res
    finally:
        assert dm.stop() == 0, dm.output()
