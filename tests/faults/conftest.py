"""Fault tests: the real `afrd run` / `afrd config check` processes of this checkout, fed the
inputs issue 12 listed (bad configs, tampered bundles, hostile control requests, signals at bad
moments). Each asserts the daemon refused with exit 2 and one line naming the key, or kept
running and published exactly one result per accepted trigger."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _daemon_helpers import afrd, make_brightness_bundle  # noqa: E402, F401 - afrd: for the tests


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults-bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


def refused(cfg: Path, *expect: str) -> None:
    """`afrd config check` and `afrd run` both exit 2 on ``cfg``, no traceback, and every string
    of ``expect`` on one line of what they print."""
    for args in (("config", "check", str(cfg)), ("run", "--config", str(cfg))):
        p = afrd(*args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        lines = p.stderr.splitlines()
        assert any(all(e in line for e in expect) for line in lines), (args, expect, p.stderr)


def results_for(sub, ids: list[str], timeout: float = 30.0) -> list[dict]:
    """Read ``sub`` until a result for every part id in ``ids`` came; every result message
    validates, and none of ``ids`` is published twice or missing."""
    import time
    from collections import Counter

    import zmq

    from afrd.daemon.verdict import parse_message

    want, got = set(ids), []
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while want - {r["part_id"] for r in got} and time.monotonic() < deadline:
        if poller.poll(200):
            frames = sub.recv_multipart()
            kind, _, msg, _ = parse_message(frames)
            if kind == "result":
                got.append(msg)
    counts = Counter(r["part_id"] for r in got)
    missing = [i for i in ids if counts[i] == 0]
    twice = [i for i in ids if counts[i] > 1]
    assert not missing and not twice, (missing, twice)
    return [r for r in got if r["part_id"] in want]


def inspect(dm, sub, ids: list[str], **fields) -> list[dict]:
    """Trigger one part per id (each answered ok) and return their results."""
    for pid in ids:
        r = dm.ctl({"cmd": "trigger", "part_id": pid, **fields})
        assert r["ok"], r
    return results_for(sub, ids)
