"""Issue 12, cases 1 (unencodable result) and 2 (control thread health), in-process: a result
the publisher cannot encode is published as error/internal instead of being dropped; a control
thread that dies makes the daemon unhealthy (no watchdog ping, so systemd restarts it)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from afrd.daemon.ctl import request
from afrd.daemon.interfaces.control import ControlServer
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.verdict import validate_result
from afrd.runtime.loader import load_runtime


def test_an_unencodable_result_is_published_as_an_error(bundle):
    from afrd.sim.cell import SimCell

    out: list[dict] = []
    done = threading.Event()

    def sink(job, msg):
        data = json.dumps(msg, allow_nan=False)  # what the publisher does
        if msg["part_id"] == "poisoned" and msg["verdict"] != "error":
            msg["score"] = float("nan")
            data = json.dumps(msg, allow_nan=False)  # raises: the first attempt fails
        out.append(validate_result(json.loads(data), "u1"))
        if len(out) == 3:
            done.set()

    with SimCell(size=64, seed=3) as cell:
        rt = load_runtime(bundle, "onnxruntime", {"threads": 1})
        p = Pipeline("u1", cell.sequencer().acquire, rt, sink)
        p.start()
        for pid in ("before", "poisoned", "after"):
            p.trigger(pid, "x")
        assert done.wait(60), out
        p.stop()
    by_id = {m["part_id"]: m for m in out}
    assert sorted(by_id) == ["after", "before", "poisoned"]
    assert by_id["poisoned"]["verdict"] == "error"
    assert by_id["poisoned"]["error"]["code"] == "internal"
    assert by_id["after"]["verdict"] in ("pass", "fail")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_control_thread_makes_the_server_unhealthy(tmp_path):
    def die(_req):
        raise SystemExit("a bug that escapes every handler")

    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/ctl.sock"
    srv = ControlServer(ep, {"status": lambda r: {}, "die": die}, context=ctx)
    srv.start()
    try:
        assert request(ep, {"cmd": "status"}, 5) == {"ok": True, "result": {}}
        assert srv.healthy()
        assert request(ep, {"cmd": "die"}, 1.0) is None
        deadline = time.monotonic() + 10
        while srv.healthy():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        srv.close()
        ctx.term()


@pytest.mark.parametrize("frames", [[b'{"cmd": "status"}', b"x"], [b"", b"", b""]])
def test_multi_frame_requests_are_answered_and_the_thread_lives(tmp_path, frames):
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/ctl.sock"
    srv = ControlServer(ep, {"status": lambda r: {"up": True}}, context=ctx)
    srv.start()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    try:
        s.send_multipart(frames)
        assert s.poll(5000)
        r = json.loads(s.recv())
        assert not r["ok"] and "frames" in r["error"]
        assert request(ep, {"cmd": "status"}, 5) == {"ok": True, "result": {"up": True}}
        assert srv.healthy()
    finally:
        s.close()
        srv.close()
        ctx.term()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_service_counts_a_dead_control_thread_against_the_watchdog(bundle, tmp_path):
    """What run_forever pings the watchdog on: pipeline, control and heartbeat all alive."""
    from types import SimpleNamespace

    from afrd.config.cell import load_config
    from afrd.daemon.service import Service
    from afrd.sim.launch import write_config

    cfg_path = write_config(tmp_path, bundle)
    svc = Service(cfg_path, load_config(cfg_path))
    svc.pipeline = SimpleNamespace(healthy=lambda: True)
    svc.publisher = SimpleNamespace(heartbeat_alive=lambda: True)
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/ctl2.sock"

    def die(_req):
        raise SystemExit("escapes every handler")

    svc.control = ControlServer(ep, {"die": die}, context=ctx)
    svc.control.start()
    try:
        assert svc.unhealthy_parts() == []
        assert request(ep, {"cmd": "die"}, 1.0) is None
        deadline = time.monotonic() + 10
        while svc.unhealthy_parts() != ["control"]:
            assert time.monotonic() < deadline, svc.unhealthy_parts()
            time.sleep(0.02)
    finally:
        svc.control.close()
        ctx.term()
