"""Sparkplug B mode of the MQTT link (``[mqtt.sparkplug] enabled``): the cell is an edge node,
each product a device. Payloads are pysparkplug's (the Eclipse Tahu protobuf); the link's
connection, order and store are the same as in JSON mode.

- ``spBv1.0/<group>/NBIRTH/<edge>`` on every connection: ``bdSeq`` (UInt64, one more per
  connection, kept in the store), ``Node Control/Rebirth``, ``Node Info/cell``; the broker holds
  the matching ``NDEATH`` as the link's last will, and the link sends it itself when it stops;
- ``DBIRTH/<edge>/<product>``: a product's metrics, for every recipe after NBIRTH and for any
  other product before its first part;
- ``DDATA/<edge>/<product>``: one per part, at QoS 1 from the on-disk queue: ``part_id``,
  ``seq`` (the daemon's; subscribers de-duplicate by edge node and ``seq``), ``verdict``,
  ``score``, ``threshold``, ``latency_ms/{acquire,infer,total}``, ``error/{code,message}``,
  ``model/{name,sha256}``, each stamped with the part's trigger time; parts queued while the
  broker was away are sent with ``is_historical``;
- ``NCMD/<edge>`` with ``Node Control/Rebirth`` = true: NBIRTH and every DBIRTH again.

Sparkplug's own ``seq`` (0-255) counts the node's messages in the order they are published,
so payloads are encoded at send time, not when queued.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import json
import logging
import time
from collections.abc import Iterable

import pysparkplug as sp

from afrd.daemon.interfaces.mqtt_store import Row, Store
from afrd.daemon.interfaces.mqtt_topics import Message, products_of

log = logging.getLogger("afrd.daemon.mqtt")

REBIRTH = "Node Control/Rebirth"
_T = sp.DataType
# (metric name, datatype, how to read it from an afrd.result/1 message)
PART_METRICS = (
    ("part_id", _T.STRING, lambda m: m["part_id"]),
    ("seq", _T.UINT64, lambda m: m["seq"]),
    ("verdict", _T.STRING, lambda m: m["verdict"]),
    ("score", _T.DOUBLE, lambda m: m["score"]),
    ("threshold", _T.DOUBLE, lambda m: m["threshold"]),
    ("latency_ms/acquire", _T.DOUBLE, lambda m: m["latency_ms"]["acquire"]),
    ("latency_ms/infer", _T.DOUBLE, lambda m: m["latency_ms"]["infer"]),
    ("latency_ms/total", _T.DOUBLE, lambda m: m["latency_ms"]["total"]),
    ("error/code", _T.STRING, lambda m: m.get("error", {}).get("code")),
    ("error/message", _T.STRING, lambda m: m.get("error", {}).get("message")),
    ("model/name", _T.STRING, lambda m: m["model"]["name"]),
    ("model/sha256", _T.STRING, lambda m: m["model"]["sha256"]),
)


def device_id(product: str) -> str:
    """A product as a Sparkplug device id ('/', '+', '#' are not allowed there)."""
    return "".join("_" if c in "/+#" else c for c in product) or "_"


def _ms(t: float) -> int:
    return int(t * 1000)


def _trigger_ms(msg: dict) -> int:
    ts = msg["timestamp"].removesuffix("Z")
    dt = _dt.datetime.fromisoformat(ts).replace(tzinfo=_dt.timezone.utc)
    return calendar.timegm(dt.utctimetuple()) * 1000 + dt.microsecond // 1000


class SparkplugTopics:
    def __init__(self, group_id: str, edge_node_id: str, cell: str, store: Store) -> None:
        self.group = group_id
        self.edge = edge_node_id
        self.cell = cell
        self.store = store
        self._seq = 0
        self._born: set[str] = set()
        self._state: str | None = None
        self._nbirth: sp.NBirth | None = None
        self.subscriptions = [self._topic(sp.MessageType.NCMD)]

    def _topic(self, kind: sp.MessageType, device: str | None = None) -> str:
        return str(
            sp.Topic(
                group_id=self.group, message_type=kind, edge_node_id=self.edge, device_id=device
            )
        )

    def _next(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _ndeath(self) -> Message:
        bd = sp.Metric(
            timestamp=_ms(time.time()),
            name="bdSeq",
            datatype=_T.UINT64,
            value=self.store.get("bd_seq"),
        )
        payload = sp.NDeath(timestamp=_ms(time.time()), bd_seq_metric=bd).encode()
        return (self._topic(sp.MessageType.NDEATH), payload, 1, False)

    # ------------------------------------------------------------ the link's calls
    def will(self) -> Message:
        """The NDEATH the broker publishes if this connection dies: a new bdSeq per connection
        (kept in the store, so it goes on across restarts)."""
        self.store.set("bd_seq", (self.store.get("bd_seq", -1) + 1) % 2**63)
        return self._ndeath()

    def birth(self, status: dict, products: Iterable[str]) -> list[Message]:
        now = _ms(time.time())
        self._seq = 0
        self._born = set()
        self._state = status.get("state")
        metrics = (
            sp.Metric(
                timestamp=now, name="bdSeq", datatype=_T.UINT64, value=self.store.get("bd_seq")
            ),
            sp.Metric(timestamp=now, name=REBIRTH, datatype=_T.BOOLEAN, value=False),
            sp.Metric(timestamp=now, name="Node Info/cell", datatype=_T.STRING, value=self.cell),
            sp.Metric(timestamp=now, name="Node Info/state", datatype=_T.STRING, value=self._state),
        )
        self._nbirth = sp.NBirth(now, 0, metrics)  # what a command's metrics are read against
        out = [(self._topic(sp.MessageType.NBIRTH), self._nbirth.encode(), 0, False)]
        for p in products:
            out += self._dbirth(p)
        return out

    def _dbirth(self, product: str) -> list[Message]:
        dev = device_id(product)
        if dev in self._born:
            return []
        self._born.add(dev)
        now = _ms(time.time())
        metrics = tuple(
            sp.Metric(timestamp=now, name=name, datatype=dt, value=None)
            for name, dt, _ in PART_METRICS
        )
        payload = sp.DBirth(now, self._next(), metrics).encode()
        return [(self._topic(sp.MessageType.DBIRTH, dev), payload, 0, False)]

    def result(self, row: Row, historical: bool) -> list[Message]:
        msg = json.loads(row.payload)
        out = self._dbirth(msg["product"])
        t = _trigger_ms(msg)
        metrics = tuple(
            sp.Metric(timestamp=t, name=name, datatype=dt, value=get(msg), is_historical=historical)
            for name, dt, get in PART_METRICS
        )
        payload = sp.DData(_ms(time.time()), self._next(), metrics).encode()
        out.append(
            (self._topic(sp.MessageType.DDATA, device_id(msg["product"])), payload, 1, False)
        )
        return out

    def count(self, msg: dict) -> None:
        pass  # a Sparkplug host counts the DDATA itself

    def status(self, status: dict) -> list[Message]:
        """The node's state as NDATA when it changed (report by exception)."""
        state = status.get("state")
        if state == self._state:
            return []
        self._state = state
        now = _ms(time.time())
        m = sp.Metric(timestamp=now, name="Node Info/state", datatype=_T.STRING, value=state)
        payload = sp.NData(now, self._next(), (m,)).encode()
        return [(self._topic(sp.MessageType.NDATA), payload, 0, False)]

    def heatmap(self, msg: dict, png: bytes) -> Message | None:
        return None  # not in Sparkplug mode (the config refuses heatmaps there)

    def shadow(self, msg: dict) -> Message | None:
        return None  # a shadow run's comparisons are afrd's JSON topics' only

    def goodbye(self) -> list[Message]:
        return [self._ndeath()]

    def command(self, topic: str, payload: bytes, status: dict) -> list[Message]:
        """NCMD: a rebirth request republishes NBIRTH and every device born so far."""
        try:
            cmd = sp.NCmd.decode(payload, birth=self._nbirth)  # a command may omit datatypes
        except Exception as exc:  # a host's malformed command is its problem, not the cell's
            log.warning("Sparkplug NCMD on %s does not decode: %s", topic, exc)
            return []
        if any(m.name == REBIRTH and m.value for m in cmd.metrics):
            log.info("Sparkplug rebirth requested")
            return self.birth(status, sorted(self._born_products(status)))
        return []

    def _born_products(self, status: dict) -> set[str]:
        return set(self._born) | set(products_of(status))
