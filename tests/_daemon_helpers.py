"""Daemon test helpers: they live in afrd.sim.launch (shared with `afrd demo` and the bench)."""

from afrd.sim.launch import (  # noqa: F401
    REPO,
    Daemon,
    collect,
    make_brightness_bundle,
    sim_lighting_toml,
    wait_subscribed,
    write_config,
)
