"""What the MQTT link publishes, and where: afrd's JSON topics (this module) or Sparkplug B
(``mqtt_sparkplug``). Both answer the same calls from the link's thread, each returning the
messages to publish as ``(topic, payload, qos, retain)``; the link owns the connection, the
order and the store. Topics under the root (default ``afrd/<site>/<line>/<cell>``):

- ``<root>/result``: every result, the ``afrd.result/1`` JSON exactly as ZeroMQ sends it, QoS 1,
  from the on-disk queue (store and forward; subscribers de-duplicate by ``(cell, seq)``);
- ``<root>/status``: the heartbeat (``afrd.status/1``, the control socket's ``status``), QoS 1,
  retained, every ``status_interval_s``; the broker's last will for the link, and the daemon's
  last word when it stops, is the same topic with ``state: "offline"``;
- ``<root>/counts``: parts by product and verdict since the daemon started (``afrd.counts/1``),
  retained, with the status when they changed;
- ``<root>/heatmap/<seq>``: the heatmap overlay PNG of part ``seq`` (opt-in, QoS 0, live only:
  not queued while the broker is away);
- ``<root>/shadow``: a shadow candidate's verdict on a part (``afrd.shadow/1``, as ZeroMQ's
  ``shadow.<cell>``) while a shadow run is on: QoS 0, live only, like heatmaps (a comparison,
  not a result the line needs; Sparkplug mode does not publish it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from afrd.daemon.interfaces.mqtt_store import Row
from afrd.daemon.verdict import STATUS_SCHEMA, utc_iso

COUNTS_SCHEMA = "afrd.counts/1"
VERDICTS = ("pass", "fail", "error")
Message = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


def dumps(msg: dict) -> bytes:
    """JSON as the ZeroMQ publisher writes it (compact, no NaN)."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()


class JsonTopics:
    """afrd's own JSON topics under ``root``."""

    def __init__(self, root: str, cell: str) -> None:
        self.root = root
        self.cell = cell
        self.subscriptions: list[str] = []
        self._since = time.time()
        self._counts: dict[str, dict[str, int]] = {}  # product -> verdict -> parts
        self._counts_changed = False

    def count(self, msg: dict) -> None:
        """One more result (as it is queued, so the counts include what waits for the broker)."""
        by = self._counts.setdefault(str(msg.get("product")), dict.fromkeys(VERDICTS, 0))
        by[msg.get("verdict")] = by.get(msg.get("verdict"), 0) + 1
        self._counts_changed = True

    def offline(self, reason: str) -> Message:
        body = {
            "schema": STATUS_SCHEMA,
            "cell": self.cell,
            "timestamp": utc_iso(time.time()),
            "state": "offline",
            "reason": reason,
        }
        return (f"{self.root}/status", dumps(body), 1, True)

    def will(self) -> Message:
        return self.offline("connection lost")

    def birth(self, status: dict, products: Iterable[str]) -> list[Message]:
        self._counts_changed = True  # with the first status of this connection
        return [self._status(status)]

    def result(self, row: Row, historical: bool) -> list[Message]:
        return [(f"{self.root}/result", row.payload, 1, False)]

    def status(self, status: dict) -> list[Message]:
        """The retained status, and the counts when they changed."""
        out = [self._status(status)]
        if self._counts_changed:
            self._counts_changed = False
            counts = counts_message(self.cell, self._since, self._counts)
            out.append((f"{self.root}/counts", dumps(counts), 1, True))
        return out

    def heatmap(self, msg: dict, png: bytes) -> Message:
        return (f"{self.root}/heatmap/{msg['seq']}", png, 0, False)

    def shadow(self, msg: dict) -> Message:
        return (f"{self.root}/shadow", dumps(msg), 0, False)

    def goodbye(self) -> list[Message]:
        return [self.offline("stopped")]

    def command(self, topic: str, payload: bytes, status: dict) -> list[Message]:
        return []

    def _status(self, status: dict) -> Message:
        body = dict(status)
        body.update(schema=STATUS_SCHEMA, cell=self.cell, timestamp=utc_iso(time.time()))
        return (f"{self.root}/status", dumps(body), 1, True)


def counts_message(cell: str, since: float, counts: dict[str, dict[str, int]]) -> dict:
    return {
        "schema": COUNTS_SCHEMA,
        "cell": cell,
        "timestamp": utc_iso(time.time()),
        "since": utc_iso(since),
        "products": {p: dict(v) for p, v in sorted(counts.items())},
    }


def products_of(status: dict) -> list[str]:
    """The products a cell announces at birth: its recipes, or its default product."""
    names = list(status.get("recipes") or {})
    return names or [status.get("default_product") or "default"]
