"""The MQTT link's on-disk queue (afrd.daemon.interfaces.mqtt_store) on a real SQLite file:
order, PUBACK-only deletion, the bounds (oldest dropped and reported), what survives a reopen."""

from __future__ import annotations

import sqlite3

import pytest

from afrd.config.mqtt import MqttConfig
from afrd.daemon.interfaces.mqtt_store import Store, first_seq
from afrd.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


def test_rows_come_back_in_order_and_go_only_when_acknowledged(tmp_path):
    s = Store(tmp_path / "q.sqlite3", 100, 1 << 20)
    s.put([(i, f"r{i}".encode()) for i in range(5)])
    first = s.head(0, 3)
    assert [r.seq for r in first] == [0, 1, 2]
    assert [r.seq for r in s.head(first[-1].id, 10)] == [3, 4]
    s.ack([first[1].id])  # a PUBACK for seq 1 only
    s.close()
    again = Store(tmp_path / "q.sqlite3", 100, 1 << 20)  # a restart: the rest is still there
    assert [(r.seq, r.payload) for r in again.head(0, 10)] == [
        (i, f"r{i}".encode()) for i in (0, 2, 3, 4)
    ]
    assert (again.count, again.bytes) == (4, 8)
    with sqlite3.connect(tmp_path / "q.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_full_queue_drops_the_oldest_and_says_which(tmp_path):
    s = Store(tmp_path / "q.sqlite3", 3, 1 << 20)
    assert s.put([(0, b"a"), (1, b"b")]) is None
    gone = s.put([(2, b"c"), (3, b"d"), (4, b"e")])
    assert (gone.n, gone.first_seq, gone.last_seq) == (2, 0, 1)
    assert [r.seq for r in s.head(0, 10)] == [2, 3, 4]
    by_bytes = Store(tmp_path / "b.sqlite3", 100, 1024)
    gone = by_bytes.put([(i, b"x" * 300) for i in range(5)])  # 1500 bytes > 1024
    assert (gone.n, gone.first_seq, gone.last_seq) == (2, 0, 1)
    assert (by_bytes.count, by_bytes.bytes) == (3, 900)


def test_sequence_numbers_go_on_after_a_restart(tmp_path):
    cfg = MqttConfig(brokers=["127.0.0.1"], site="s", line="l", store=tmp_path / "q.sqlite3")
    assert first_seq(cfg) == 0
    s = Store(cfg.store, 2, 1 << 20)
    s.put([(7, b"a"), (8, b"b"), (9, b"c")])  # 7 dropped, still counted as used
    s.close()
    assert first_seq(cfg) == 10
    assert first_seq(None) == 0


def test_a_damaged_file_is_a_config_error_naming_the_key(tmp_path):
    p = tmp_path / "q.sqlite3"
    p.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ConfigError, match=r"^mqtt.store: .*q.sqlite3: cannot open the queue"):
        Store(p, 10, 1 << 20)
