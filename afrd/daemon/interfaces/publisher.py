"""ZeroMQ PUB side of the daemon: results, heatmaps, a heartbeat (and opt-in light previews, a
shadow candidate's results).

A slow or dead subscriber must never slow inspection: SNDHWM bounds what ZeroMQ queues per
subscriber and every send is NOBLOCK, so past the mark ZeroMQ drops messages for that subscriber
only. Those drops are silent (a PUB socket never reports them), so there is no drop counter: a
subscriber sees a gap in ``seq``. Sends from several threads go through one lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import zmq

from afrd.config.endpoints import HANDSHAKE_S, bind, check_ipc_free, is_ipv6
from afrd.daemon.verdict import STATUS_SCHEMA, utc_iso

log = logging.getLogger("afrd.daemon.publisher")  # the name the journal has always shown


class Publisher:
    def __init__(
        self,
        endpoint: str,
        cell: str,
        sndhwm: int = 100,
        context: zmq.Context | None = None,
    ) -> None:
        self.cell = cell
        self.endpoint = endpoint
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 500)
        # a peer that connects and never completes the ZMTP handshake holds a descriptor:
        # drop it after HANDSHAKE_S (libzmq's default: 30 s), as the control socket does
        self._sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        if is_ipv6(endpoint):
            self._sock.setsockopt(zmq.IPV6, 1)
        check_ipc_free(endpoint, "sockets.pub")
        bind(self._sock, endpoint, "sockets.pub")
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()
        self._hb_stop = threading.Event()
        self._hb: threading.Thread | None = None

    def _send(self, frames: list[bytes]) -> bool:
        with self._lock:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:  # PUB drops rather than blocks; kept for other socket types
                return False
            return True

    def result(self, msg: dict) -> bool:
        return self._send([f"result.{self.cell}".encode(), _dumps(msg)])

    def heatmap(self, msg: dict, png: bytes) -> bool:
        return self._send([f"heatmap.{self.cell}".encode(), _dumps(msg), png])

    def lights(self, msg: dict, jpeg: bytes) -> bool:
        """``lights.<cell>``: the opt-in JPEG mosaic of a part's lights (afrd.daemon.lights)."""
        return self._send([f"lights.{self.cell}".encode(), _dumps(msg), jpeg])

    def shadow(self, msg: dict) -> bool:
        """``shadow.<cell>``: a shadow candidate's verdict on a part (afrd.daemon.shadow)."""
        return self._send([f"shadow.{self.cell}".encode(), _dumps(msg)])

    def status(self, msg: dict) -> bool:
        return self._send([f"status.{self.cell}".encode(), _dumps(msg)])

    def start_heartbeat(self, status_fn: Callable[[], dict], period_s: float = 1.0) -> None:
        """Publish ``status.<cell>`` every ``period_s`` with what ``status_fn`` returns."""

        def loop() -> None:
            while not self._hb_stop.is_set():
                try:
                    body = dict(status_fn())
                    body.update(
                        schema=STATUS_SCHEMA, cell=self.cell, timestamp=utc_iso(time.time())
                    )
                    self.status(body)
                except Exception:  # a heartbeat bug must not kill the daemon
                    log.exception("heartbeat failed")
                self._hb_stop.wait(period_s)

        self._hb = threading.Thread(target=loop, name="afrd-heartbeat", daemon=True)
        self._hb.start()

    def heartbeat_alive(self) -> bool:
        return self._hb is not None and self._hb.is_alive()

    def close(self) -> None:
        self._hb_stop.set()
        if self._hb is not None:
            self._hb.join(timeout=2)
        with self._lock:
            self._sock.close()


def _dumps(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
