"""Daemon test helpers: they live in afrd.daemon.launch (shared with `afrd demo` and the bench)."""

from afrd.daemon.launch import (  # noqa: F401
    REPO,
    Daemon,
    collect,
    make_brightness_bundle,
    sim_lighting_toml,
    wait_subscribed,
    write_config,
)
