"""Daemon test helpers: they live in afrd.sim.launch (shared with `afrd demo` and the bench),
plus the polling helper and the `afrd` command runner the process-level tests share."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager

from afrd.sim.launch import (  # noqa: F401
    REPO,
    Daemon,
    collect,
    make_brightness_bundle,
    sim_lighting_toml,
    wait_subscribed,
    write_config,
)


def wait_for(fn, timeout: float = 20.0, what: str = "condition"):
    """Poll ``fn()`` until it returns something truthy; that value (a test failure on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def afrd(*args: str, timeout: float = 600, path: tuple = ()) -> subprocess.CompletedProcess:
    """One `afrd` command as a user types it: a child process of this checkout's package (and
    ``path``, e.g. a plugin's folder, on PYTHONPATH), run from / to its exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join((str(REPO), *path)))
    return subprocess.run(
        [sys.executable, "-m", "afrd", *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def daemon_and_web(cfg, *web_args: str, heartbeat: bool = True):
    """The daemon and `afrd web` on ``cfg`` (web options ``web_args``), both stopped after;
    with ``heartbeat`` the page has seen the daemon's first heartbeat first."""
    from afrd.web.launch import WebProcess

    dm = Daemon(cfg).start()
    web = WebProcess(cfg, *web_args).start()
    try:
        if heartbeat:
            wait_for(lambda: web.get("/api/live")["liveness"]["up"], what="the first heartbeat")
        yield dm, web
    finally:
        web.stop()
        dm.stop()
