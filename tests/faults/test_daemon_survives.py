"""Issue 12, cases 2, 5, 7, 9, 13, 14 and the non-finite threshold at run time: one real
`afrd run` on the simulated cell takes hostile control requests and a bad reload, and after
each still answers, inspects and publishes exactly one result per accepted trigger."""

from __future__ import annotations

import json
import signal
import time

import pytest
import zmq
from conftest import inspect, results_for

from afrd.runtime.bundle import sha256_file
from afrd.sim.launch import Daemon, wait_subscribed, write_config


@pytest.fixture(scope="module")
def cell(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("survives")
    cfg = write_config(
        d,
        bundle,
        extra=f'[recorder]\nenabled = true\ndir = "{d}/captures"\npass_sample_rate = 1.0',
    )
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    yield dm, sub
    sub.close()
    assert dm.stop() == 0, dm.output()


def _raw(dm: Daemon, frames: list[bytes], timeout_s: float = 5.0) -> dict | None:
    """Send ``frames`` as one request from a fresh REQ socket; the reply or None."""
    s = dm.ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(dm.control)
    try:
        s.send_multipart(frames)
        if s.poll(int(timeout_s * 1000)):
            return json.loads(s.recv())
        return None
    finally:
        s.close()


def test_a_two_frame_request_gets_an_error_and_control_lives(cell):
    dm, sub = cell
    r = _raw(dm, [b'{"cmd": "status"}', b"x"])
    assert r is not None and not r["ok"] and "2 frames" in r["error"], r
    inspect(dm, sub, ["after-two-frames"])


def test_an_oversized_request_is_cut_and_a_long_part_id_refused(cell):
    dm, sub = cell
    huge = json.dumps({"cmd": "trigger", "part_id": "x" * (1 << 20)}).encode()
    assert _raw(dm, [huge], timeout_s=2.0) is None  # libzmq drops the peer at MAXMSGSIZE
    r = dm.ctl({"cmd": "trigger", "part_id": "y" * 1000})
    assert not r["ok"] and "at most 256 characters" in r["error"] and len(r["error"]) < 300
    inspect(dm, sub, ["after-oversized"])
    assert len((dm.dir / "daemon.log").read_text()) < 200_000  # nothing huge was logged


def test_a_part_id_with_a_lone_surrogate_is_refused_at_the_socket(cell):
    dm, sub = cell
    r = _raw(dm, [b'{"cmd": "trigger", "part_id": "bad\\ud800id"}'])
    assert r is not None and not r["ok"] and "part_id" in r["error"], r
    assert "surrogate" in r["error"]
    (res,) = inspect(dm, sub, ["after-surrogate"])
    assert res["verdict"] in ("pass", "fail")  # the camera was never blamed


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -2e6, 1e41, "high", None, True])
def test_a_bad_set_threshold_is_refused_before_it_applies(cell, bad):
    dm, sub = cell
    before = dm.ctl({"cmd": "status"})["result"]["threshold"]
    # json.dumps writes inf/nan as Infinity/NaN, which Python's decoder (the daemon's) reads
    r = dm.ctl({"cmd": "set_threshold", "threshold": bad})
    assert not r["ok"] and "finite number" in r["error"], r
    assert dm.ctl({"cmd": "status"})["result"]["threshold"] == before
    (res,) = inspect(dm, sub, [f"after-threshold-{bad}"])
    assert res["threshold"] == before


def test_a_non_ascii_product_is_recorded(cell):
    dm, sub = cell
    product = "製品"  # no ASCII character at all
    (res,) = inspect(dm, sub, ["nonascii-1"], product=product)
    assert res["product"] == product and res["verdict"] in ("pass", "fail")
    folder = dm.dir / "captures" / product
    deadline = time.monotonic() + 20
    while not any(folder.glob("*/nonascii-1")):  # pass_sample_rate = 1: every part recorded
        assert time.monotonic() < deadline, (dm.output(), list(folder.parent.iterdir()))
        time.sleep(0.05)
    assert "no usable characters" not in dm.output()


def test_sighup_and_reload_with_an_unreadable_config_keep_the_daemon(cell):
    dm, sub = cell
    good = dm.config.read_bytes()
    try:
        dm.config.write_bytes(b"\xff\xfe not utf-8\n" + good)
        r = dm.ctl({"cmd": "reload"})
        assert not r["ok"] and "not UTF-8" in r["error"], r
        dm.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload failed" not in dm.output():
            assert time.monotonic() < deadline and dm.proc.poll() is None, dm.output()
            time.sleep(0.05)
        assert "Traceback" not in dm.output()
        inspect(dm, sub, ["after-bad-hup-1", "after-bad-hup-2"])
    finally:
        dm.config.write_bytes(good)
    assert dm.ctl({"cmd": "reload"})["ok"]


def test_results_carry_the_sha256_of_model_onnx(cell, bundle):
    dm, sub = cell
    (res,) = inspect(dm, sub, ["hash"])
    assert res["model"]["sha256"] == sha256_file(bundle / "model.onnx")
    assert dm.ctl({"cmd": "status"})["result"]["model"]["sha256"] == res["model"]["sha256"]


def test_every_accepted_trigger_so_far_published_once(cell):
    dm, sub = cell
    ids = [f"burst-{i}" for i in range(12)]  # within the trigger queue (16): no overrun
    for pid in ids:
        assert dm.ctl({"cmd": "trigger", "part_id": pid})["ok"]
    assert dm.ctl({"cmd": "trigger", "part_id": "marker"})["ok"]
    # results come in seq order: a duplicate of the burst would arrive before the marker's
    results = results_for(sub, [*ids, "marker"])
    assert len({r["seq"] for r in results}) == len(ids) + 1
    assert all(r["verdict"] in ("pass", "fail") for r in results)


def test_a_reload_with_a_non_finite_threshold_is_refused_before_it_applies(cell):
    dm, sub = cell
    good = dm.config.read_text()
    before = dm.ctl({"cmd": "status"})["result"]["threshold"]
    try:
        dm.config.write_text(good.replace("heatmaps = ", "threshold = inf\nheatmaps = ", 1))
        r = dm.ctl({"cmd": "reload"})
        assert not r["ok"] and "threshold" in r["error"] and "finite" in r["error"], r
        assert dm.ctl({"cmd": "status"})["result"]["threshold"] == before
        (res,) = inspect(dm, sub, ["after-inf-reload"])
        assert res["threshold"] == before
    finally:
        dm.config.write_text(good)


def test_a_non_finite_score_is_published_as_an_error_and_heartbeats_go_on(tmp_path):
    from afrd.sim.launch import collect, make_brightness_bundle

    nan = make_brightness_bundle(tmp_path / "nan", size=64, nan_score=True)
    dm = Daemon(write_config(tmp_path, nan.path)).start()
    sub = dm.subscriber()
    try:
        wait_subscribed(sub)
        results = inspect(dm, sub, ["nan-1", "nan-2"])
        assert [r["error"]["code"] for r in results] == ["nan_score", "nan_score"]
        assert all(r["score"] is None for r in results)
        assert sum(m[0].startswith(b"status.") for m in collect(sub, 2, kind="status")) == 2
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
