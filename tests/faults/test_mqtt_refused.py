"""[mqtt] the daemon must not run with: `afrd config check` and `afrd run` both exit 2 with one
line naming the key (a broker that is away is not among them: results queue until it comes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import refused

from afrd.config.cell import parse_config
from afrd.errors import ConfigError
from afrd.sim.launch import write_config

GOOD = """[mqtt]
brokers = ["127.0.0.1:8883"]
username = "cell"
password_file = "pw"
site = "plant1"
line = "line2"
store = "mqtt.sqlite3"
"""


def _cell(d: Path, bundle: Path, mqtt: str) -> Path:
    (d / "pw").write_text("secret\n")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    return write_config(d, bundle, heatmaps=False, extra=mqtt)


@pytest.mark.parametrize(
    "edit, expect",
    [
        (
            ("", '\n[mqtt.tls]\nca_file = "ca.pem"\n'),
            ["mqtt.tls.ca_file", "ca.pem", "not a readable"],
        ),
        (('password_file = "pw"', 'password_file = "absent"'), ["mqtt.password_file", "absent"]),
        (
            ('store = "mqtt.sqlite3"', 'store = "no/such/dir/q.sqlite3"'),
            ["mqtt.store", "no/such/dir"],
        ),
    ],
    ids=["ca-not-a-certificate", "password-file-missing", "store-folder-missing"],
)
def test_mqtt_files_refused_by_check_and_run(tmp_path, bundle, edit, expect):
    old, new = edit
    text = GOOD.replace(old, new, 1) if old else GOOD + new
    refused(_cell(tmp_path, bundle, text), *expect)


@pytest.mark.parametrize(
    "edit, expect",
    [
        (('"127.0.0.1:8883"', '"127.0.0.1:99999"'), "mqtt.brokers: Value error, brokers[0]"),
        (('site = "plant1"', 'site = "plant/1"'), "mqtt.site"),
        (('line = "line2"', ""), "topic_root 'afrd/{site}/{line}/{cell}' uses {line}: set line"),
        (("", 'topic_root = "x/{plant}"'), "mqtt.topic_root"),
        (("", "keepalive_s = 0"), "mqtt.keepalive_s"),
        (("", 'heatmaps = "fail"'), "mqtt.heatmaps"),
        (("", '[mqtt.tls]\ncafile = "x"'), "mqtt.tls.cafile: unknown key"),
        (("127.0.0.1", "broker.plant"), None),  # TLS (the default) to a remote broker: fine
        (("", "[mqtt.tls]\nenabled = false"), None),  # plain MQTT on loopback: fine
        (("127.0.0.1", "broker.plant", "[mqtt.tls]\nenabled = false"), "would cross the network"),
    ],
)
def test_mqtt_values_refused_naming_the_key(edit, expect):
    """Each wrong value is named by its key path (the same lines `afrd config check` prints)."""
    import tomllib

    old, new, *table = edit
    text = GOOD.replace(old, new, 1) if old else GOOD + new + "\n"
    text += "\n".join(table)
    data = {"cell": "c", "camera": {"kind": "sim"}, "controller": {"kind": "sim"}}
    data.update(lighting=[{"name": "a", "channels": [{"channel": 1, "level": 50}]}])
    data.update(bundle={"path": "b"}, **tomllib.loads(text))
    if expect is None:
        assert parse_config(data, "cell.toml").mqtt is not None
        return
    with pytest.raises(ConfigError) as e:
        parse_config(data, "cell.toml")
    assert expect in str(e.value), str(e.value)


def test_example_config_mqtt_section_parses():
    """systemd/cell.example.toml's commented [mqtt] section, uncommented, validates."""
    import tomllib

    from afrd.config.mqtt import MqttConfig
    from afrd.sim.launch import REPO

    text = (REPO / "systemd" / "cell.example.toml").read_text()
    block = text[text.index("# [mqtt]") : text.index("# PLC interfaces")].splitlines()
    data = tomllib.loads("\n".join(line[2:] for line in block if line.startswith("# ")))
    cfg = MqttConfig(**data["mqtt"])
    assert cfg.root("cell-07") == "afrd/plant1/line2/cell-07"
    assert cfg.tls.enabled and cfg.heatmaps == "not-pass"
