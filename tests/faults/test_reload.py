"""Issue 21, item 3: a reload opens and warms the new engines off the main thread. While a
slow one loads (seconds, like a large TensorRT engine), the watchdog keeps being pinged, the
control socket answers (triggers included) and parts are judged by the running model until the
swap. A reload that would change the recorder or metrics is refused by name."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from _bundles import make_slow_warmup_bundle
from _daemon_helpers import wait_for
from conftest import results_for

from afrd.daemon.ctl import request
from afrd.sim.launch import Daemon, wait_subscribed, write_config

WATCHDOG_S = 2.0  # WatchdogSec: the daemon pings every second


def _pings(dm: Daemon) -> int:
    return sum("WATCHDOG=1" in n for n in dm.notes)


def _watch_pings(dm: Daemon, done: threading.Event) -> float:
    """The longest stretch without a WATCHDOG=1 ping until ``done`` is set, in seconds."""
    last_n, last_t, gap = _pings(dm), time.monotonic(), 0.0
    while not done.is_set():
        n = _pings(dm)
        now = time.monotonic()
        if n != last_n:
            last_n, last_t = n, now
        gap = max(gap, now - last_t)
        done.wait(0.05)
    return gap


@pytest.mark.timeout(240)
def test_a_slow_reload_keeps_the_watchdog_control_and_judging_alive(bundle, tmp_path):
    slow = [make_slow_warmup_bundle(tmp_path / f"slow-{i}", 2_000_000 + i) for i in (1, 2)]
    cfg = write_config(tmp_path, bundle)
    original = cfg.read_text()
    env = {"WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    dm = Daemon(cfg, env=env).start()
    sub = dm.subscriber([b"result.", b"status."])
    try:
        wait_subscribed(sub)
        sha = dm.ctl({"cmd": "status"})["result"]["model"]["sha256"]
        for how, to in zip(("sighup", "control"), slow, strict=True):
            cfg.write_text(original.replace(f'path = "{bundle}"', f'path = "{to}"'))
            sha = _reload_while_judging(dm, sub, how, sha)
    finally:
        sub.close()
        cfg.write_text(original)
        assert dm.stop() == 0, dm.output()
    assert "Traceback" not in dm.output()


def _reload_while_judging(dm: Daemon, sub, how: str, old_sha: str) -> str:
    """Reload (by SIGHUP or the control socket) to a slow bundle; while it loads, the daemon
    says so, answers, judges with the old model and pings. Returns the new model's sha256."""
    done = threading.Event()
    reply: list = []
    gap: list[float] = []
    if how == "sighup":
        dm.proc.send_signal(signal.SIGHUP)
    else:
        threading.Thread(
            target=lambda: reply.append(request(dm.control, {"cmd": "reload"}, 120)), daemon=True
        ).start()
    watcher = threading.Thread(target=lambda: gap.append(_watch_pings(dm, done)))
    watcher.start()
    try:
        st = _wait_state(dm, "reloading")
        t0 = time.monotonic()
        pid = f"during-{how}"
        assert dm.ctl({"cmd": "trigger", "part_id": pid}, timeout_s=1.0)["ok"]
        assert time.monotonic() - t0 < 1.0
        (res,) = results_for(sub, [pid], timeout=10)
        assert res["model"]["sha256"] == old_sha and res["verdict"] != "error", res
        assert dm.ctl({"cmd": "status"}, timeout_s=1.0)["result"]["state"] == "reloading"
        new = _wait_model_change(dm, old_sha)
    finally:
        done.set()
        watcher.join()
    assert gap[0] < WATCHDOG_S, f"no watchdog ping for {gap[0]:.1f} s during the reload"
    assert st["model"]["sha256"] == old_sha
    if how == "control":
        wait_for(lambda: reply, what="the reload's reply")
        assert reply[0]["ok"] and reply[0]["result"]["model"] == new["model"]["name"], reply
    after = f"after-{how}"
    assert dm.ctl({"cmd": "trigger", "part_id": after})["ok"]
    (res,) = results_for(sub, [after], timeout=10)
    assert res["model"]["sha256"] == new["model"]["sha256"], res
    return new["model"]["sha256"]


@pytest.mark.parametrize(
    "edit",
    [
        ("[metrics]\nport = 0", "[metrics]\nport = 0\nmax_connections = 3", "metrics"),
        ("heatmaps = true", "heatmaps = true\n[recorder]\nenabled = true", "recorder"),
        # the kept models' folder holds the rollback history: a new one would hide it
        ("heatmaps = true", 'heatmaps = true\n[models]\ndir = "elsewhere"', "models"),
    ],
)
@pytest.mark.timeout(120)
def test_a_reload_that_changes_the_recorder_metrics_or_models_is_refused(bundle, tmp_path, edit):
    old, new, section = edit
    cfg = write_config(tmp_path, bundle)
    original = cfg.read_text()
    dm = Daemon(cfg).start()
    try:
        cfg.write_text(original.replace(old, new, 1))
        r = dm.ctl({"cmd": "reload"})
        assert not r["ok"] and f"['{section}']" in r["error"] and "restart" in r["error"], r
        st = dm.ctl({"cmd": "status"})["result"]
        assert st["state"] == "running"
        cfg.write_text(original)
        assert dm.ctl({"cmd": "reload"})["ok"]
    finally:
        assert dm.stop() == 0, dm.output()


def _wait_state(dm: Daemon, state: str) -> dict:
    return wait_for(
        lambda: (st := dm.ctl({"cmd": "status"}, timeout_s=1.0)["result"])["state"] == state and st,
        what=f"state {state}",
    )


def _wait_model_change(dm: Daemon, old_sha: str) -> dict:
    return wait_for(
        lambda: (
            (st := dm.ctl({"cmd": "status"}, timeout_s=1.0)["result"])["state"] == "running"
            and st["model"]["sha256"] != old_sha
            and st
        ),
        timeout=60,
        what="the new model",
    )
