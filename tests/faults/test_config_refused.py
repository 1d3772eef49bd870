"""Issue 12, cases 1, 6, 11, 12: a config the daemon must not run with is refused by both
`afrd config check` and `afrd run` with exit 2 and one line naming the key and the expected
value (never a traceback, never "OK" from the check and a refusal from the daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import afrd, refused

from afrd.sim.launch import write_config

SOCK = "ctl.sock"


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# name -> (edit of the written config, strings one stderr line must hold)
CASES = {
    "threshold-nan": (("cell = ", "threshold = nan\ncell = "), ["threshold", "finite number"]),
    "threshold-inf": (("cell = ", "threshold = inf\ncell = "), ["threshold", "finite number"]),
    "threshold-huge-negative": (
        ("cell = ", "threshold = -2e6\ncell = "),
        ["threshold", "[-1e+06, 1e+06]"],
    ),
    "threshold-absurd": (
        ("cell = ", "threshold = 1e41\ncell = "),
        ["threshold", "[-1e+06, 1e+06]"],
    ),
    "pub-bogus-scheme": (('pub = "ipc://', 'pub = "bogus://x"\n#'), ["sockets.pub", "tcp://HOST"]),
    "control-port-99999": (
        ('control = "ipc://', 'control = "tcp://127.0.0.1:99999"\n#'),
        ["sockets.control", "port 0-65535"],
    ),
    "control-ipv6-no-port": (
        ('control = "ipc://', 'control = "tcp://[::1]"\n#'),
        ["sockets.control", "tcp://HOST:PORT"],
    ),
    "engine-option-not-int": (
        ("threads = 1", 'threads = "two"'),
        ["engine.options.threads", "valid integer"],
    ),
    "engine-option-misspelt": (("threads = 1", "thread = 1"), ["engine.options.thread", "unknown"]),
    "heartbeat-inf": (
        ("heartbeat_s = 0.5", "heartbeat_s = inf"),
        ["sockets.heartbeat_s", "finite number"],
    ),
    "heartbeat-huge": (
        ("heartbeat_s = 0.5", "heartbeat_s = 1e9"),
        ["sockets.heartbeat_s", "less than or equal to 3600"],
    ),
    "pub-and-control-one-path": ((SOCK, "pub.sock"), ["sockets", "its own endpoint"]),
    "queue-absurd": (
        ("[metrics]", "[queues]\ntriggers = 1_000_000_000\n\n[metrics]"),
        ["queues.triggers", "less than or equal to"],
    ),
    "wide-control-without-curve": (
        ('control = "ipc://', 'control = "tcp://0.0.0.0:0"\n#'),
        ["sockets.control", "CURVE"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_value_is_refused_naming_the_key(name, bundle, tmp_path):
    (old, new), expect = CASES[name]
    cfg = write_config(tmp_path, bundle)
    cfg.write_text(_edit(cfg.read_text(), old, new))
    refused(cfg, *expect)


def test_non_utf8_config_is_refused(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle)
    cfg.write_bytes(b"# caf\xe9 (latin-1)\n" + cfg.read_bytes())
    refused(cfg, "not UTF-8", "byte 5")


def _curve_keys(tmp_path: Path, clients: bool) -> Path:
    import zmq.auth

    keys = tmp_path / "curve"
    keys.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    if clients:
        (keys / "authorized_clients").mkdir()
    return keys


def test_curve_without_authorized_clients_needs_allow_any_client(bundle, tmp_path):
    keys = _curve_keys(tmp_path, clients=False)
    cfg = write_config(tmp_path, bundle)
    text = _edit(
        cfg.read_text(),
        f'control = "ipc://{tmp_path}/{SOCK}"',
        f'control = "tcp://0.0.0.0:0"\ncurve_keys_dir = "{keys}"',
    )
    cfg.write_text(text)
    refused(cfg, "sockets.curve_keys_dir", "authorized_clients", "allow_any_client = true")
    # said explicitly, it is allowed: the check passes the whole config, bundle and engine
    cfg.write_text(_edit(text, "heartbeat_s = 0.5", "heartbeat_s = 0.5\nallow_any_client = true"))
    p = afrd("config", "check", str(cfg))
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr
