"""Daemon pieces in-process: pipeline failure paths on the real simulated cell and ONNX Runtime,
schema, config errors, sd_notify, metrics, recorder retention."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from _contracts import GOOD_RESULT

from afrd.config.cell import parse_config
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.systemd import Notifier
from afrd.daemon.verdict import SchemaError, parse_message, validate_result
from afrd.errors import ConfigError
from afrd.runtime.loader import Runtime, load_runtime

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import make_brightness_bundle  # noqa: E402


def _runtime(bundle) -> Runtime:
    return load_runtime(bundle.path, "onnxruntime", {"threads": 1})


def _run_pipeline(bundle, n: int, triggers: int = 16, acquired: int = 2, burst: bool = False):
    from afrd.sim.cell import SimCell

    out: list[dict] = []
    done = threading.Event()

    def sink(job, msg):
        validate_result(msg, "u1")
        out.append(msg)
        if len(out) >= n:
            done.set()

    with SimCell(size=32, seed=3) as cell:
        p = Pipeline("u1", cell.sequencer().acquire, _runtime(bundle), sink, triggers, acquired)
        p.start()
        for i in range(n):
            p.trigger(f"p{i}", "x")
            if not burst:
                time.sleep(0.002)
        assert done.wait(60), out
        p.stop()
    return out


def test_nan_score_is_an_error_verdict(tmp_path):
    out = _run_pipeline(make_brightness_bundle(tmp_path / "nan", 32, nan_score=True), 3)
    assert [m["verdict"] for m in out] == ["error"] * 3
    assert all(m["error"]["code"] == "nan_score" and m["score"] is None for m in out)


def test_engine_error_is_an_error_verdict(tmp_path):
    # a bundle for 5 lights fed the cell's 6 images: the engine refuses the set
    lights = ("ring_all", "ring_bottom", "ring_right", "ring_top", "ring_left")
    b = make_brightness_bundle(tmp_path / "five", size=32, lights=lights)
    out = _run_pipeline(b, 2)
    assert [m["error"]["code"] for m in out] == ["infer", "infer"]
    assert "5" in out[0]["error"]["message"] and "6" in out[0]["error"]["message"]


def test_overrun_publishes_every_part(tmp_path):
    b = make_brightness_bundle(tmp_path / "b", size=32)
    out = _run_pipeline(b, 25, triggers=1, acquired=1, burst=True)
    assert sorted(m["seq"] for m in out) == list(range(25))  # one result per part, none lost
    codes = [m.get("error", {}).get("code") for m in out]
    assert "overrun" in codes and codes.count(None) >= 1


def test_error_codes_follow_the_failure_type():
    from afrd.daemon.verdict import ERROR_CODES, error_code
    from afrd.errors import DataError, DeviceError, FrameTimeout, RegistrationError

    assert error_code(RegistrationError("no part found"), "infer") == "register"
    assert error_code(FrameTimeout("no frame"), "acquire") == "acquire"
    assert error_code(DeviceError("port lost"), "infer") == "acquire"
    assert error_code(DataError("5 images, expected 6"), "infer") == "infer"
    assert error_code(ValueError("bug"), "acquire") == "acquire"
    assert "register" in ERROR_CODES


def test_schema_rejects_malformed_messages():
    good = dict(GOOD_RESULT)
    validate_result(dict(good))
    bad_cases = [
        {"verdict": "fail"},  # fail with score <= threshold
        {"verdict": "error"},  # error without error{}
        {"timestamp": "2026-01-01T00:00:00"},  # not UTC
        {"score": float("nan")},
        {"seq": "1"},
        {"schema": "afrd.result/2"},
    ]
    for change in bad_cases:
        with pytest.raises(SchemaError):
            validate_result({**good, **change})
    with pytest.raises(SchemaError):
        parse_message([b"result.c"])
    with pytest.raises(SchemaError):
        parse_message([b"heatmap.c", b"{}", b"not a png"])


def _cfg(**over) -> dict:
    d = {
        "cell": "c1",
        "camera": {"kind": "sim"},
        "controller": {"kind": "sim"},
        "lighting": [{"name": "box", "channels": [{"channel": 5, "level": 36}]}],
        "bundle": {"path": "b"},
    }
    d.update(over)
    return d


def test_config_error_paths():
    assert parse_config(_cfg()).trigger.mode == "control"
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(camera={"kind": "webcam"}), "cell.toml")
    assert "cell.toml" in str(e.value)
    # the registered kinds (afrd.acquire.registry), at the key the user wrote
    assert "camera.kind: expected 'genicam' or 'sim' (got 'webcam')" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(controller={"kind": "genicam"}))
    assert "controller.kind: expected 'gardasoft' or 'sim' (got 'genicam')" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(camera={"kind": "sim", "exposure": 3}))
    assert "camera.exposure: unknown key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(controller={"kind": "gardasoft", "port": "/dev/ttyUSB0", "baud": 9600}))
    assert "controller.baud: unknown key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(trigger={"mode": "free-run", "interval_s": 0}))
    assert "trigger.interval_s" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(
            _cfg(lighting=[{"name": "box", "channels": [{"channel": 5, "level": 36}]}] * 2)
        )
    assert "unique" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(recorder={"pass_sample_rate": 2}))
    assert "recorder.pass_sample_rate" in str(e.value)
    cfg = parse_config(_cfg())
    with pytest.raises(ConfigError) as e:
        cfg.conditions_for(("box", "ring_top"))
    assert "ring_top" in str(e.value)


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_datagrams(tmp_path, abstract):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"afrd-test-{os.getpid()}"
        s.bind("\0" + name)
        addr = "@" + name
    else:
        addr = str(tmp_path / "notify")
        s.bind(addr)
    s.settimeout(2)
    n = Notifier(addr)
    assert n.ready("hello") and n.watchdog() and n.extend_timeout(1.5) and n.stopping()
    got = [s.recv(256).decode() for _ in range(4)]
    assert got == [
        "READY=1\nSTATUS=hello",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=1500000",
        "STOPPING=1",
    ]
    s.close()
    assert Notifier("").notify("READY=1") is False  # outside systemd: a no-op


def test_metrics_text_format():
    from afrd.daemon.interfaces.metrics import Metrics

    m = Metrics("c1")
    m.part("pass")
    m.part("error", "acquire")
    m.observe("infer", 0.004)
    m.observe("infer", 0.2)
    m.queue_fn = lambda: {"triggers": 3}
    text = m.render()
    # prometheus_client's exposition: labels sorted, values as floats
    assert 'afrd_parts_total{cell="c1",verdict="pass"} 1.0' in text
    assert 'afrd_errors_total{cell="c1",code="acquire"} 1.0' in text
    assert 'afrd_stage_seconds_bucket{cell="c1",le="0.005",stage="infer"} 1.0' in text
    assert 'afrd_stage_seconds_bucket{cell="c1",le="+Inf",stage="infer"} 2.0' in text
    assert 'afrd_queue_depth{cell="c1",queue="triggers"} 3.0' in text
    assert "_created" not in text


def test_recorder_keeps_fails_samples_passes_and_enforces_size(tmp_path):
    import numpy as np

    from afrd.config.cell import RecorderConfig
    from afrd.daemon.recorder import Recorder
    from afrd.data.imageset import ImageSet

    rec = Recorder(
        RecorderConfig(
            enabled=True,
            dir=tmp_path / "cap",
            pass_sample_rate=0.25,
            max_bytes=10**9,
            min_free_bytes=0,
        )
    )
    rec.start()
    rng = np.random.default_rng(0)
    for i in range(12):
        ims = ImageSet(
            rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8),
            ("ring_all", "ring_bottom", "ring_right", "ring_top", "ring_left", "box"),
            part_id=f"p{i}",
            product="x",
        )
        verdict = "fail" if i % 4 == 0 else "pass"
        rec.submit(ims, {"part_id": f"p{i}", "verdict": verdict, "score": 1.0, "threshold": 0.5})
    rec.close()
    assert rec.recorded == 3 + 2  # 3 fails + 25 % of 9 passes (2)
    per_part = rec.total_bytes / rec.recorded
    rec.cfg.max_bytes = int(per_part * 2.5)
    rec.enforce_retention()
    assert rec.total_bytes <= rec.cfg.max_bytes and len(rec._index) >= 1


def test_control_over_curve_when_bound_wide(tmp_path):
    import zmq
    import zmq.auth

    from afrd.daemon.ctl import request
    from afrd.daemon.interfaces.control import ControlServer

    if not zmq.has("curve"):
        pytest.skip("libzmq built without CURVE")
    keys = tmp_path / "curve"
    keys.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    (keys / "authorized_clients").mkdir()
    zmq.auth.create_certificates(str(tmp_path), "client")
    (keys / "authorized_clients" / "client.key").write_bytes((tmp_path / "client.key").read_bytes())
    (tmp_path / "other").mkdir()
    zmq.auth.create_certificates(str(tmp_path / "other"), "stranger")
    ctx = zmq.Context()
    srv = ControlServer(
        "tcp://0.0.0.0:0", {"status": lambda r: {"pong": r["cmd"]}}, keys, context=ctx
    )
    srv.start()
    try:
        port = srv.bound.rsplit(":", 1)[1]
        ep = f"tcp://127.0.0.1:{port}"
        r = request(ep, {"cmd": "status"}, 5, keys / "server.key", tmp_path / "client.key_secret")
        assert r == {"ok": True, "result": {"pong": "status"}}
        stranger = tmp_path / "other" / "stranger.key_secret"
        assert request(ep, {"cmd": "status"}, 1.5, keys / "server.key", stranger) is None
        assert request(ep, {"cmd": "status"}, 1.5) is None  # plain text is not answered
    finally:
        srv.close()
        ctx.term()


def test_daemon_path_imports_without_torch():
    import subprocess

    code = (
        "import sys\n"
        "import afrd.daemon.service, afrd.daemon.pipeline, afrd.daemon.watch, afrd.daemon.ctl\n"
        "import afrd.sim.demo, afrd.daemon.config_check, afrd.daemon.recorder\n"
        "import afrd.runtime.engines.onnxruntime\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_recorder_stops_on_a_full_disk_and_says_why(tmp_path, caplog):
    import numpy as np

    from afrd.config.cell import RecorderConfig
    from afrd.daemon.recorder import Recorder
    from afrd.data.imageset import ImageSet

    # "full": less free space than the configured minimum (as good as ENOSPC, and testable)
    rec = Recorder(RecorderConfig(enabled=True, dir=tmp_path / "cap", min_free_bytes=10**18))
    rec.start()
    ims = ImageSet(
        np.zeros((6, 16, 16, 3), np.uint8),
        ("ring_all", "ring_bottom", "ring_right", "ring_top", "ring_left", "box"),
        part_id="p0",
        product="x",
    )
    with caplog.at_level("WARNING", logger="afrd.daemon.recorder"):
        assert rec.submit(ims, {"part_id": "p0", "verdict": "fail"})
        rec.close()
    assert rec.recorded == 0 and "free" in (rec.stopped_reason or "")
    assert "recording stopped" in caplog.text and "inspection goes on" in caplog.text
    assert rec.submit(ims, {"part_id": "p1", "verdict": "fail"}) is False  # stays off


def test_sd_notify_never_blocks_on_a_full_receiver(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))  # nobody reads: the datagram queue fills up
    n = Notifier(str(tmp_path / "notify"))
    t0 = time.monotonic()
    sent = [n.status(f"message {i}") for i in range(200)]
    assert time.monotonic() - t0 < 2.0  # a blocking send would hang here forever
    assert sent[0] is True and sent[-1] is False
    s.close()
