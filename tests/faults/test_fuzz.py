"""Property-based fuzz (hypothesis, bounded: a few dozen examples each, no deadline) of the two
ways input reaches the daemon: the control protocol, against one real `afrd run`, and config
loading. No request may go unanswered or stop inspection, and every trigger answered ``ok`` is
published exactly once; no config text or value may raise anything but ConfigError."""

from __future__ import annotations

import copy
import json
import math
import time
from collections import Counter

import pytest
import tomllib
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afrd.config.cell import load_config, parse_config
from afrd.daemon.verdict import parse_message
from afrd.errors import ConfigError
from afrd.sim.launch import Daemon, wait_subscribed, write_config

COMMANDS = ["status", "trigger", "set_threshold", "pause", "resume", "reload", "nope", ""]
# any JSON value, text with any code point (lone surrogates included: json escapes them)
TEXT = st.text(st.characters(blacklist_categories=()), max_size=40)
ID = st.from_regex(r"[A-Za-z0-9ü製._-]{1,20}", fullmatch=True)  # ids a trigger accepts
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=12,
)
REQUEST = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda cmd, args: json.dumps({**args, "cmd": cmd}).encode(),
        st.sampled_from(COMMANDS) | TEXT,
        st.dictionaries(
            st.sampled_from(["part_id", "product", "threshold"]) | TEXT, JSON, max_size=3
        ),
    ),
    st.builds(lambda v: json.dumps(v).encode(), JSON),
    st.builds(  # triggers that may well be accepted, with odd ids and products
        lambda pid, prod: json.dumps({"cmd": "trigger", "part_id": pid, "product": prod}).encode(),
        ID | TEXT | st.none(),
        ID | TEXT,
    ),
)
FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def cell(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    dm = Daemon(write_config(d, bundle, heatmaps=False)).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    accepted: list[int] = []  # seq of every trigger answered ok
    seen: Counter = Counter()  # seq of every result read
    yield dm, sub, accepted, seen
    sub.close()
    assert dm.stop() == 0, dm.output()


def _ask(dm: Daemon, frames: list[bytes]) -> dict:
    s = dm.ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(dm.control)
    try:
        s.send_multipart(frames)
        assert s.poll(10_000), f"no reply to {frames!r}:\n{dm.output()}"
        reply = json.loads(s.recv())
    finally:
        s.close()
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    return reply


@FUZZ
@given(frames=st.lists(REQUEST, min_size=1, max_size=3))
def test_control_protocol_fuzz(cell, frames):
    dm, sub, accepted, seen = cell
    reply = _ask(dm, frames)
    if len(frames) == 1 and reply["ok"] and b"trigger" in frames[0]:
        result = reply["result"]
        if isinstance(result, dict) and "seq" in result:
            accepted.append(result["seq"])
    assert dm.proc.poll() is None, dm.output()
    # undo what a valid command may have changed, so the next example starts alike
    assert _ask(dm, [b'{"cmd": "resume"}'])["ok"]
    assert _ask(dm, [b'{"cmd": "set_threshold", "threshold": 0.45}'])["ok"]
    _read(sub, seen, 0)  # keep the subscriber read: the PUB socket drops past its SNDHWM


def _read(sub: zmq.Socket, seen: Counter, timeout_ms: int) -> None:
    """Count the results ``sub`` has (waiting up to ``timeout_ms`` for the first)."""
    while sub.poll(timeout_ms):
        kind, _, msg, _ = parse_message(sub.recv_multipart())
        if kind == "result":
            seen[msg["seq"]] += 1
        timeout_ms = 0


def test_after_the_fuzz_every_accepted_trigger_was_published_once(cell):
    dm, sub, accepted, seen = cell
    marker = _ask(dm, [b'{"cmd": "trigger", "part_id": "fuzz-marker"}'])
    assert marker["ok"], marker
    assert accepted, "the fuzz never had a trigger accepted: it tested nothing of publishing"
    want = set(accepted) | {marker["result"]["seq"]}
    deadline = time.monotonic() + 60
    while not want <= set(seen) and time.monotonic() < deadline:
        _read(sub, seen, 200)
    assert want <= set(seen), sorted(want - set(seen))
    assert all(seen[s] == 1 for s in want), [s for s in want if seen[s] != 1]


# ---------------------------------------------------------------- config loading
@pytest.fixture(scope="module")
def config_text(bundle, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("fuzzcfg"), bundle).read_text()


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    out += _paths(item, (*prefix, k, i))
    return out


@FUZZ
@given(data=st.data())
def test_config_values_fuzz(config_text, data):
    """Any value at any key path: a CellConfig whose numbers are finite, or a ConfigError."""
    doc = tomllib.loads(config_text)
    path = data.draw(st.sampled_from(_paths(doc)))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON)
    try:
        cfg = parse_config(copy.deepcopy(doc), "fuzz.toml")
    except ConfigError:
        return
    for value in (cfg.threshold, cfg.sockets.heartbeat_s, cfg.trigger.interval_s):
        assert value is None or math.isfinite(value)


@FUZZ
@given(data=st.data())
def test_config_bytes_fuzz(config_text, tmp_path_factory, data):
    """Bytes overwritten anywhere in the file: it loads or raises ConfigError."""
    raw = bytearray(config_text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at : at + 1] = data.draw(st.binary(min_size=0, max_size=3))
    p = tmp_path_factory.mktemp("bytes") / "cell.toml"
    p.write_bytes(bytes(raw))
    try:
        load_config(p)
    except ConfigError:
        pass
