"""Daemon test helpers: they live in afrd.sim.launch (shared with `afrd demo` and the bench),
plus the one polling helper the process-level tests share."""

import time

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
