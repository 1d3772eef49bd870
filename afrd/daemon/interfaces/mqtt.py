"""The MQTT link: the cell on the plant's broker (``[mqtt]``, ``afrd.config.mqtt``).

``result`` (the output thread) only appends to a deque and pokes a socketpair: the verdict
path never waits for the broker, the network or the disk. The link's thread (``afrd-mqtt``)
moves results into the on-disk queue (``mqtt_store``; full: the oldest go, counted), connects
to the brokers in turn with backoff (``mqtt_session``; a broker away at start is no error, each
failure one log line when the reason changes), publishes the queue in order at QoS 1 with at
most ``inflight`` unacknowledged and deletes a row only on its PUBACK (after a reconnect it
starts again from the oldest: subscribers de-duplicate by ``(cell, seq)``), and publishes the
retained status and counts (``mqtt_topics``) or the Sparkplug B node (``mqtt_sparkplug``).
The broker holds the last will (``offline``); a clean stop says it itself.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from afrd.config.mqtt import MqttConfig, read_password, tls_context
from afrd.daemon.interfaces.base import Hooks
from afrd.daemon.interfaces.mqtt_session import LinkDown, Session
from afrd.daemon.interfaces.mqtt_store import Store
from afrd.daemon.interfaces.mqtt_topics import (
    JsonTopics,
    Message,
    dumps,
    products_of,
)

log = logging.getLogger("afrd.daemon.mqtt")

FLUSH_S = 2.0  # at a stop, how long the queue may still drain to a connected broker
# the link's Prometheus series (Metrics.add_section): status_section() key, counter?, help
SERIES = (
    ("connected", False, "1 while connected to an MQTT broker"),
    ("queued", False, "Results in the on-disk queue, not yet acknowledged by the broker"),
    ("queued_bytes", False, "Bytes of results in the on-disk queue"),
    ("sent", True, "Results the broker acknowledged"),
    ("dropped", True, "Results dropped from the full queue (the oldest first)"),
    ("heatmaps_skipped", True, "Heatmaps not published (broker away or busy)"),
)


class MqttLink:
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, hooks: Hooks, cell: str, metrics: Any = None) -> None:
        self.cfg = cfg
        self.hooks = hooks
        self.cell = cell
        self.metrics = metrics  # afrd.daemon.interfaces.metrics.Metrics
        scheme = "mqtts" if cfg.tls.enabled else "mqtt"
        self._addrs = cfg.addresses()
        self.endpoint = ", ".join(f"{scheme}://{h}:{p}" for h, p in self._addrs)
        self.store: Store | None = None
        self.topics: Any = None
        self._inbox: deque = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: ssl.SSLContext | None = None
        self._password: str | None = None
        # the connection (the link's thread only)
        self._session: Session | None = None
        self._state = "down"  # down | connecting | up
        self._addr: str | None = None
        self._broker_i = 0
        self._fails = 0
        self._retry_at = 0.0
        self._connack_by = 0.0
        self._up_since = 0.0
        self._inflight: dict[int, int] = {}  # paho mid -> store row id
        self._sent_upto = 0
        self._acked: list[int] = []
        self._next_status = 0.0
        self._logged: str | None = None
        self._drop_log_at = 0.0
        # what the status and the metrics show (read from other threads: plain values)
        self.error: str | None = None
        self.sent = 0
        self.dropped = 0
        self.heatmaps_skipped = 0

    # ------------------------------------------------------------ the daemon's calls
    def start(self) -> None:
        """Read the TLS files and the password and open the store (ConfigError naming the key:
        exit 2), then connect in the background: an absent broker is not a start-up error."""
        cfg = self.cfg
        self._ctx = tls_context(cfg)
        self._password = read_password(cfg)
        self.store = Store(cfg.store, cfg.max_queued, cfg.max_queued_bytes)
        if cfg.sparkplug.enabled:
            from afrd.daemon.interfaces.mqtt_sparkplug import SparkplugTopics

            sp = cfg.sparkplug
            self.topics = SparkplugTopics(
                sp.group_id, sp.edge_node_id or self.cell, self.cell, self.store
            )
        else:
            self.topics = JsonTopics(cfg.root(self.cell), self.cell)
        if self.metrics is not None:
            self.metrics.add_section("afrd_mqtt", self.status_section, SERIES)
        if self.store.count:
            log.info("%d results queued from before the start", self.store.count)
        self._thread = threading.Thread(target=self._run, name="afrd-mqtt", daemon=True)
        self._thread.start()

    def result(self, msg: dict) -> None:
        """Hand one published result over (the output thread): a deque append and a poke."""
        self._inbox.append(("result", msg))
        self._poke()

    def wants_heatmap(self, verdict: str) -> bool:
        mode = self.cfg.heatmaps
        return mode == "all" or (mode == "not-pass" and verdict != "pass")

    def heatmap(self, msg: dict, png: bytes) -> None:
        """A heatmap goes out only while connected (live view; never queued on disk)."""
        if self._state != "up":
            self.heatmaps_skipped += 1
            return
        self._inbox.append(("heatmap", msg, png))
        self._poke()

    def shadow(self, msg: dict) -> None:
        """A shadow candidate's verdict (``<root>/shadow``): live only, QoS 0, as heatmaps."""
        if self._state == "up":
            self._inbox.append(("shadow", msg, None))
            self._poke()

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status_section(self) -> dict:
        """The ``mqtt`` section of the daemon's status."""
        s = self.store
        return {
            "connected": self._state == "up",
            "broker": self._addr if self._state == "up" else None,
            "queued": s.count if s else 0,
            "queued_bytes": s.bytes if s else 0,
            "sent": self.sent,
            "dropped": self.dropped,
            "heatmaps_skipped": self.heatmaps_skipped,
            "error": self.error,
        }

    def close(self) -> None:
        """Queue what was handed over, drain to a connected broker for up to FLUSH_S, say
        ``offline`` and disconnect; what is left stays on disk for the next start."""
        self._stop.set()
        self._poke()
        if self._thread is not None:
            # a connection attempt in progress may hold the thread up to connect_timeout_s
            self._thread.join(timeout=self.cfg.connect_timeout_s + FLUSH_S + 3.0)
            if self._thread.is_alive():  # it still holds the store and the sockets
                log.error("the link's thread did not stop; its queue stays on disk")
                return
        elif self.store is not None:
            self.store.close()
        for s in (self._wake_r, self._wake_w):
            s.close()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # full: the thread is awake anyway; closed: stopping
            pass

    # ------------------------------------------------------------ the link's thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception as exc:  # a bug must not end the link: say it once, go on
                    why = f"internal error: {exc!r}"
                    if why != self._logged:
                        log.exception("link error; reconnecting")
                    self._fail(why, quiet=True)
                    self._stop.wait(1.0)
            self._finish()
        finally:
            if self.store is not None:
                self.store.close()

    def _step(self, wait: float | None = None) -> None:
        self._take_inbox()
        now = time.monotonic()
        if self._state == "down" and now >= self._retry_at:
            self._connect()
        elif self._state == "connecting" and now > self._connack_by:
            self._fail(f"broker {self._addr}: no CONNACK within {self.cfg.connect_timeout_s} s")
        self._send()
        self._tick(now)
        if wait is None:  # until the next attempt or status, a second at most
            due = {"down": self._retry_at, "up": self._next_status}.get(self._state, now + 1)
            wait = min(1.0, max(0.0, due - now))
        self._io(wait)
        if self._acked:
            self.store.ack(self._acked)
            self.sent += len(self._acked)
            self._acked = []

    def _take_inbox(self) -> None:
        rows = []
        while self._inbox:
            item = self._inbox.popleft()
            if item[0] != "result":
                self._live(*item)
                continue
            msg = item[1]
            try:
                rows.append((int(msg["seq"]), dumps(msg)))
            except (KeyError, TypeError, ValueError) as exc:  # never happens to a published one
                log.error("result %r not queued: %s", msg.get("seq"), exc)
                continue
            self.topics.count(msg)
        if not rows:
            return
        try:
            gone = self.store.put(rows)
        except Exception as exc:  # a full disk: these results cannot be kept
            self.dropped += len(rows)
            log.error("%d results not queued: %s: %s", len(rows), self.cfg.store, exc)
            return
        if gone is not None:
            self.dropped += gone.n
            now = time.monotonic()
            if now >= self._drop_log_at:  # the first drop, then at most one line a minute
                self._drop_log_at = now + 60.0
                log.warning(
                    "queue full (mqtt.max_queued = %d, mqtt.max_queued_bytes = %d): dropping the "
                    "oldest results (now seq %d-%d); %d dropped since the start",
                    *(self.cfg.max_queued, self.cfg.max_queued_bytes, gone.first_seq),
                    *(gone.last_seq, self.dropped),
                )

    def _live(self, kind: str, msg: dict, png: bytes | None) -> None:
        """A heatmap or a shadow verdict: published now or never (never queued)."""
        m = self.topics.heatmap(msg, png) if kind == "heatmap" else self.topics.shadow(msg)
        s = self._session
        # bytes still waiting for the socket mean a slow broker or network: skip, never queue
        if m is None or self._state != "up" or s is None or s.busy():
            self.heatmaps_skipped += kind == "heatmap"
            return
        s.publish(m)

    # ------------------------------------------------------------ connection
    def _connect(self) -> None:
        cfg = self.cfg
        host, port = self._addrs[self._broker_i]
        self._addr = f"{host}:{port}"
        self._state = "connecting"
        try:
            self._session = Session(
                host,
                port,
                client_id=cfg.client_id or f"afrd-{self.cell}",
                tls=self._ctx,
                username=cfg.username,
                password=self._password,
                will=self.topics.will(),
                max_inflight=cfg.inflight + 16,  # room for status and births beside results
                keepalive_s=cfg.keepalive_s,
                connect_timeout_s=cfg.connect_timeout_s,
                on_up=self._on_up,
                on_down=self._fail,
                on_ack=self._on_ack,
                on_message=self._on_message,
            )
        except LinkDown as exc:
            self._fail(str(exc))
            return
        self._connack_by = time.monotonic() + cfg.connect_timeout_s

    def _on_up(self) -> None:
        was = self.error
        self._state = "up"
        self._fails = 0
        self.error = None
        self._up_since = time.time()
        self._inflight.clear()
        self._sent_upto = 0
        log.info(
            "connected to %s%s; %d results queued",
            self._addr,
            f" (after: {was})" if was else "",
            self.store.count,
        )
        self._logged = None
        for topic in self.topics.subscriptions:
            self._session.subscribe(topic)
        status = self._status()
        self._publish(self.topics.birth(status, products_of(status)))
        self._next_status = time.monotonic()  # counts now, then every interval

    def _on_ack(self, mid: int) -> None:
        row = self._inflight.pop(mid, None)
        if row is not None:
            self._acked.append(row)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._state == "up":
            self._publish(self.topics.command(topic, payload, self._status()))

    def _fail(self, reason: str, quiet: bool = False) -> None:
        """Drop the connection, say why (once per reason), and schedule the next attempt."""
        if self._state == "up":
            self._fails = 0  # a connection that worked: try again at once
        self.error = reason
        if reason != self._logged and not quiet:
            log.warning("%s; %d results queued", reason, self.store.count)
        self._logged = reason
        session, self._session = self._session, None
        self._state = "down"
        self._inflight.clear()
        if session is not None:
            session.close()
        n = len(self._addrs)
        self._broker_i = (self._broker_i + 1) % n
        self._fails += 1
        delay = min(self.cfg.reconnect_max_s, 0.25 * 2 ** ((self._fails - 1) // n))
        self._retry_at = time.monotonic() + delay

    # ------------------------------------------------------------ publishing
    def _publish(self, msgs: list[Message]) -> None:
        for m in msgs:
            if self._session is not None:
                self._session.publish(m)

    def _send(self) -> None:
        """Fill the window with the queue's next rows, oldest first."""
        while self._state == "up" and len(self._inflight) < self.cfg.inflight:
            rows = self.store.head(self._sent_upto, self.cfg.inflight - len(self._inflight))
            if not rows:
                return
            for row in rows:
                *births, last = self.topics.result(row, row.t < self._up_since)
                self._publish(births)
                mid = self._session.publish(last) if self._session is not None else None
                if mid is None:  # the connection went (on_down said so)
                    return
                self._inflight[mid] = row.id
                self._sent_upto = row.id

    def _tick(self, now: float) -> None:
        if self._state != "up" or now < self._next_status:
            return
        self._next_status = now + self.cfg.status_interval_s
        self._publish(self.topics.status(self._status()))

    def _status(self) -> dict:
        try:
            return self.hooks.status()
        except Exception:  # the status is the daemon's; a bug there must not stop the link
            log.exception("status failed")
            return {"state": "unknown"}

    def _io(self, wait: float) -> None:
        if self._session is not None:
            poked = self._session.io(wait, self._wake_r)
        else:
            poked = self._wake_r in select.select([self._wake_r], [], [], wait)[0]
        if poked:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def _finish(self) -> None:
        """The stop: queue the last results, let a connected broker have them (FLUSH_S at
        most), say offline, disconnect."""
        deadline = time.monotonic() + FLUSH_S
        self._take_inbox()
        while self._state == "up" and self.store.count and time.monotonic() < deadline:
            self._step(wait=0.05)
        s = self._session
        if self._state == "up" and s is not None:
            self._publish(self.topics.goodbye())
            s.goodbye()
            while s.busy() and time.monotonic() < deadline + 1.0:
                self._io(0.05)
            s.close()
        if self.store.count:
            log.info(
                "%d results stay queued in %s for the next start",
                self.store.count,
                self.cfg.store,
            )
