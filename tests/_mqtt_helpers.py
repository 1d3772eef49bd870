"""MQTT test helpers: a real mosquitto (afrd.sim.broker) with TLS and logins, a sim cell whose
[mqtt] section points at it, and reading what arrived (results de-duplicated by (cell, seq))."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _daemon_helpers import write_config

from afrd.sim import broker as mosquitto

DAEMON_USER, DAEMON_PASSWORD = "cell-t1", "daemon-secret"
MES_USER, MES_PASSWORD = "mes", "mes-secret"
ROOT = "afrd/plant1/line2/t1"  # the topic root mqtt_config gives cell t1

needs_mosquitto = pytest.mark.skipif(
    mosquitto.missing() is not None, reason=str(mosquitto.missing())
)


def start_broker(d: Path) -> mosquitto.Broker:
    return mosquitto.Broker(d, {DAEMON_USER: DAEMON_PASSWORD, MES_USER: MES_PASSWORD}).start()


def mqtt_config(
    d: Path,
    bundle: Path,
    broker: mosquitto.Broker,
    mqtt: str = "",
    tls: str = "",
    password: str = DAEMON_PASSWORD,
    more: str = "",
    ca_file: Path | None = None,
    tables: str = "",
) -> Path:
    """A 32 px sim cell in ``d`` on ``broker`` (TLS, the daemon's login); ``mqtt`` / ``tls``:
    further lines of [mqtt] / [mqtt.tls]; ``more``: top-level TOML (e.g. [queues]);
    ``ca_file``: the CA the daemon trusts (default: the one that signed the broker's);
    ``tables``: further tables after [mqtt.tls] (e.g. [mqtt.sparkplug])."""
    (d / "mqtt-password").write_text(password + "\n")
    extra = f"""{more}

[mqtt]
brokers = ["{broker.address}"]
username = "{DAEMON_USER}"
password_file = "mqtt-password"
site = "plant1"
line = "line2"
store = "mqtt.sqlite3"
keepalive_s = 5
reconnect_max_s = 0.3
status_interval_s = 0.5
{mqtt}

[mqtt.tls]
ca_file = "{ca_file or broker.ca_file}"
{tls}

{tables}
"""
    return write_config(d, bundle, size=32, heatmaps=False, extra=extra)


def mes(
    broker: mosquitto.Broker, topics: list[str], client_id: str = "mes"
) -> mosquitto.Subscriber:
    """A subscriber with a persistent session (it outlives a broker restart), subscribed."""
    sub = mosquitto.Subscriber(broker, MES_USER, MES_PASSWORD, topics, client_id=client_id)
    assert sub.ready.wait(10), "the test subscriber did not connect"
    return sub


def results(sub: mosquitto.Subscriber, topic: str = f"{ROOT}/result") -> list[dict]:
    return [json.loads(p) for t, p, _ in sub.take(topic)]


def first_arrivals(msgs: list[dict]) -> list[dict]:
    """What a subscriber keeps after de-duplicating by (cell, seq): each first arrival."""
    seen, out = set(), []
    for m in msgs:
        if (m["cell"], m["seq"]) not in seen:
            seen.add((m["cell"], m["seq"]))
            out.append(m)
    return out
