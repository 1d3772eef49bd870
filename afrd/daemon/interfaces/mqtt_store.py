"""The MQTT link's store and forward: results the broker has not acknowledged, on disk.

One SQLite file in WAL mode (``[mqtt] store``, default /var/lib/afrd/mqtt.sqlite3, the unit's
StateDirectory). A result is a row from when the link's thread takes it from its in-memory
hand-off (milliseconds after it was published on ZeroMQ) until the broker's PUBACK for it, so a
broker outage, a network cut or a daemon restart loses none: the link sends the rows in ``id``
order (the order the daemon published them) whenever it is connected. Bounded: past
``max_queued`` rows or ``max_queued_bytes`` the oldest are deleted and counted, never the
process. Commits are ``synchronous=NORMAL``: in WAL mode a committed row survives the process
being killed or crashing (the cases above); only a power cut can roll back the last commits
before a checkpoint. ``FULL`` would close that gap with an fsync per commit: on the 2-core
box that is 0.2-0.4 ms of CPU and 2-4 ms of wall time per part instead of ~20 us
(BENCHMARKS.md), on the link's thread. A PUBACK whose delete is lost only means that result
is sent again, which subscribers de-duplicate by ``(cell, seq)``.

``meta`` keeps what must survive a restart: ``next_seq`` (the daemon's sequence numbers go on
from there, so ``(cell, seq)`` names one part across restarts while its result may still be
queued) and the Sparkplug ``bdSeq``.

Only the link's thread uses a Store once it runs (``check_same_thread=False`` because it is
opened on the main thread, where a file that does not open is a start-up error, exit 2).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from afrd.config.mqtt import MqttConfig
from afrd.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the send order
    seq INTEGER NOT NULL,
    t REAL NOT NULL,                       -- UNIX time it was queued
    payload BLOB NOT NULL                  -- the afrd.result/1 JSON, as ZeroMQ sends it
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    id: int
    seq: int
    t: float
    payload: bytes


@dataclass(frozen=True)
class Dropped:
    """Rows deleted to keep the bounds: how many and the range of their seq numbers."""

    n: int
    first_seq: int
    last_seq: int


class Store:
    def __init__(self, path: Path, max_messages: int, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=5.0, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL refused")
            self._db.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring
            self._db.executescript(_SCHEMA)
            self.count, self.bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM queue"
            ).fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"mqtt.store: {self.path}: cannot open the queue: {exc} (a damaged file can be "
                f"moved away: its unsent results are lost, the daemon starts a new one)"
            ) from None

    # ---------------------------------------------------------------- queue
    def put(self, rows: list[tuple[int, bytes]]) -> Dropped | None:
        """Queue ``(seq, payload)`` rows in order, in one transaction; the oldest rows go when
        the bounds are passed (what went is returned)."""
        if not rows:
            return None
        now = time.time()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO queue (seq, t, payload) VALUES (?, ?, ?)",
                [(seq, now, payload) for seq, payload in rows],
            )
            self.count += len(rows)
            self.bytes += sum(len(p) for _, p in rows)
            top = max(seq for seq, _ in rows) + 1
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('next_seq', ?) ON CONFLICT(key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (top,),
            )
            dropped = self._trim()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise
        return dropped

    def _trim(self) -> Dropped | None:
        n, first, last = 0, None, None
        while self.count > self.max_messages or self.bytes > self.max_bytes:
            over = max(self.count - self.max_messages, 64)
            old = self._db.execute(
                "SELECT id, seq, length(payload) FROM queue ORDER BY id LIMIT ?", (over,)
            ).fetchall()
            if not old:  # the counts drifted from the table: take the table's
                self._recount()
                break
            for i, (_, seq, size) in enumerate(old):  # stop as soon as both bounds hold
                if self.count <= self.max_messages and self.bytes <= self.max_bytes:
                    old = old[:i]
                    break
                self.count -= 1
                self.bytes -= size
                first = seq if first is None else first
                last = seq
            self._db.execute("DELETE FROM queue WHERE id <= ?", (old[-1][0],))
            n += len(old)
        return Dropped(n, first, last) if n else None

    def head(self, after_id: int, limit: int) -> list[Row]:
        """The next ``limit`` rows after ``after_id`` (0: from the oldest), in order."""
        cur = self._db.execute(
            "SELECT id, seq, t, payload FROM queue WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [Row(*r) for r in cur.fetchall()]

    def ack(self, ids: list[int]) -> None:
        """Delete the rows the broker acknowledged (rows dropped meanwhile are simply gone)."""
        if not ids:
            return
        db = self._db
        marks = ",".join("?" * len(ids))
        db.execute("BEGIN IMMEDIATE")
        try:
            n, size = db.execute(
                f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM queue "
                f"WHERE id IN ({marks})",
                ids,
            ).fetchone()
            db.execute(f"DELETE FROM queue WHERE id IN ({marks})", ids)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.count -= n
        self.bytes -= size

    def _recount(self) -> None:
        self.count, self.bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM queue"
        ).fetchone()

    # ---------------------------------------------------------------- meta
    def get(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def set(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
            "DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        self._db.close()


def first_seq(cfg: MqttConfig | None) -> int:
    """The sequence number the daemon starts from: with ``[mqtt]``, one past the highest it
    ever queued (its results may still wait in the store, and subscribers de-duplicate by
    ``(cell, seq)``); 0 without. ConfigError naming mqtt.store when the file does not open."""
    if cfg is None or not cfg.enabled:
        return 0
    s = Store(cfg.store, 1, 1024)  # bounds unused: nothing is put
    try:
        return s.get("next_seq")
    finally:
        s.close()
