"""The page's view of the daemon: a ZeroMQ subscriber like any MES client, fanned out to browsers.

One SUB socket per page process reads results, heatmaps, heartbeats and (when the daemon's
``[lights_preview]`` is on) each part's light mosaic as fast as they come and keeps the recent
ones in memory. Each browser gets its own bounded queue of events: a browser
that reads slowly or not at all fills only its own queue, which is then emptied and told to
``resync`` (fetch a fresh snapshot). Nothing a browser does reaches the daemon's PUB socket, and
the daemon drops for this subscriber alone if the whole page process stalls (its SNDHWM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import datetime

import zmq
import zmq.asyncio

from afrd.daemon.messages import SchemaError, parse_message
from afrd.web.captures import Captures

log = logging.getLogger("afrd.web.live")

CLIENT_QUEUE = 64  # events buffered per browser before it is told to resync


def shift_start(now: datetime, starts: Sequence[tuple[int, int]]) -> datetime:
    """The latest shift boundary (local ``(hour, minute)``) at or before ``now``."""
    if not starts:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [now.replace(hour=h, minute=m, second=0, microsecond=0) for h, m in starts]
    past = [t for t in today if t <= now]
    if past:
        return max(past)
    from datetime import timedelta

    return max(today) - timedelta(days=1)


class LiveFeed:
    """Recent results, heatmaps and the last heartbeat; events for browsers."""

    def __init__(
        self,
        pub_endpoint: str,
        cell: str = "",
        *,
        history: int = 500,
        heatmaps_kept: int = 64,
        stale_after_s: float = 3.0,
        shifts: Sequence[tuple[int, int]] = ((6, 0), (14, 0), (22, 0)),
        captures: Captures | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.endpoint = pub_endpoint
        self.cell = cell
        self.results: deque[dict] = deque(maxlen=history)
        self.heatmaps: OrderedDict[int, tuple[dict, bytes]] = OrderedDict()
        self.heatmaps_kept = heatmaps_kept
        self.lights: OrderedDict[int, tuple[dict, bytes]] = OrderedDict()  # seq -> (json, JPEG)
        self.status: dict | None = None
        self.last_heartbeat: float | None = None  # time.monotonic()
        self.stale_after_s = stale_after_s
        self.shifts = tuple(shifts)
        self.clock = clock
        self.started = clock()
        self.shift_from = max(shift_start(self.started, self.shifts), self.started)
        self.counts = {"pass": 0, "fail": 0, "error": 0}
        self.missed = 0  # results the page never saw (seq gaps)
        self.invalid = 0
        self.captures = captures
        self.restarts = 0  # daemon restarts seen (seq went back)
        self._last_seq: int | None = None
        self._clients: set[asyncio.Queue] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- browsers ------------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self._clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._clients.discard(q)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _emit(self, event: str, data: dict) -> None:
        for q in list(self._clients):
            try:
                q.put_nowait((event, data))
            except asyncio.QueueFull:  # this browser is behind: drop its backlog, resync
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(("resync", {}))

    # -- state ---------------------------------------------------------------------------------
    def heartbeat_age(self) -> float | None:
        return None if self.last_heartbeat is None else time.monotonic() - self.last_heartbeat

    def daemon_up(self) -> bool:
        age = self.heartbeat_age()
        return age is not None and age <= self.stale_after_s

    def _roll_shift(self) -> None:
        start = shift_start(self.clock(), self.shifts)
        if start > self.shift_from:
            self.shift_from = start
            self.counts = {"pass": 0, "fail": 0, "error": 0}
            self.missed = 0

    def shift(self) -> dict:
        self._roll_shift()
        judged = self.counts["pass"] + self.counts["fail"]
        return {
            "since": self.shift_from.isoformat(timespec="minutes"),
            "since_page_start": self.shift_from == self.started,
            **self.counts,
            "total": judged + self.counts["error"],
            "yield": (self.counts["pass"] / judged) if judged else None,
            "missed": self.missed,
        }

    def liveness(self) -> dict:
        age = self.heartbeat_age()
        return {"up": self.daemon_up(), "heartbeat_age_s": None if age is None else round(age, 2)}

    def snapshot(self, n: int | None = None) -> dict:
        results = list(self.results)[-n:] if n else list(self.results)
        return {
            "results": results,  # each gains "capture" once the recorder's copy is found
            "status": self.status,
            "shift": self.shift(),
            "liveness": self.liveness(),
            "heatmap_seqs": list(self.heatmaps),
            "lights": {str(s): _tiles(m) for s, (m, _) in self.lights.items()},
            "browsers": self.clients,
        }

    def heatmap(self, seq: int) -> tuple[dict, bytes] | None:
        return self.heatmaps.get(seq)

    def lights_mosaic(self, seq: int) -> tuple[dict, bytes] | None:
        """The daemon's ``lights.<cell>`` message of part ``seq``: (json, JPEG mosaic)."""
        return self.lights.get(seq)

    # -- the subscriber ------------------------------------------------------------------------
    def handle(self, frames: list[bytes]) -> None:
        try:
            kind, _cell, msg, png = parse_message(frames)
        except SchemaError as exc:
            self.invalid += 1
            log.warning("invalid message from %s: %s", self.endpoint, exc)
            return
        if kind == "status":
            self.status = msg
            self.last_heartbeat = time.monotonic()
            self._emit("status", {"status": msg, "liveness": self.liveness()})
        elif kind == "result":
            self._result(msg)
        elif kind == "heatmap" and png is not None:
            self.heatmaps[msg["seq"]] = (msg, png)
            while len(self.heatmaps) > self.heatmaps_kept:
                self.heatmaps.popitem(last=False)
            self._emit("heatmap", {"seq": msg["seq"], "part_id": msg["part_id"]})
        elif kind == "lights" and png is not None:
            self.lights[msg["seq"]] = (msg, png)
            while len(self.lights) > self.heatmaps_kept:
                self.lights.popitem(last=False)
            self._emit("lights", {"seq": msg["seq"], "part_id": msg["part_id"], **_tiles(msg)})

    def _result(self, msg: dict) -> None:
        self._roll_shift()
        seq = msg["seq"]
        if self._last_seq is not None and seq <= self._last_seq:
            # the daemon restarted and counts from 0 again: heatmaps kept by seq are the old
            # daemon's (results keep theirs, linked by object, not by seq)
            self.restarts += 1
            self.heatmaps.clear()
            self.lights.clear()
        elif self._last_seq is not None and seq > self._last_seq + 1:
            self.missed += seq - self._last_seq - 1
        self._last_seq = seq
        self.counts[msg["verdict"]] += 1
        self.results.append(msg)
        self._emit("result", {"result": msg, "shift": self.shift()})
        if self.captures is not None and msg["verdict"] != "error":
            task = asyncio.get_running_loop().create_task(self._link_capture(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _link_capture(self, msg: dict) -> None:
        """Find the recorder's capture of this part (written after the result, on the daemon's
        recorder thread, if the part was sampled) and store the heatmap beside it. Most passes
        are never recorded, so the look is cheap (two stats) and backs off: 5 looks in 6 s."""
        seq, cid = msg["seq"], None
        for delay in (0.2, 0.4, 0.8, 1.6, 3.2):
            await asyncio.sleep(delay)
            cid = await asyncio.to_thread(self.captures.find_for_result, msg)
            if cid is not None:
                break
        if cid is None:
            return
        msg["capture"] = cid  # on the kept result itself: seqs start again after a restart
        for _ in range(25):  # the heatmap follows the result; it may still be on its way
            hm = self.heatmaps.get(seq)
            if hm is not None:
                with contextlib.suppress(Exception):  # retention may have removed the capture
                    await asyncio.to_thread(self.captures.save_heatmap, cid, hm[1])
                break
            await asyncio.sleep(0.2)
        self._emit("capture", {"seq": seq, "capture": cid})

    async def run(self, stop: asyncio.Event) -> None:
        ctx = zmq.asyncio.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 10000)
        suffix = f".{self.cell}" if self.cell else ""
        for kind in ("result", "heatmap", "status", "lights"):
            sub.setsockopt(zmq.SUBSCRIBE, f"{kind}{suffix}".encode())
        sub.connect(self.endpoint)
        was_up = None
        try:
            while not stop.is_set():
                if await sub.poll(500):
                    self.handle(await sub.recv_multipart())
                up = self.daemon_up()
                if up != was_up:  # heartbeat appeared or stopped: tell the pages now
                    was_up = up
                    self._emit("liveness", self.liveness())
        finally:
            sub.close()
            for t in list(self._tasks):
                t.cancel()


def _tiles(msg: dict) -> dict:
    """How a page cuts a lights mosaic into its tiles."""
    keys = ("lights", "columns", "tile_width", "tile_height", "width", "height")
    return {k: msg[k] for k in keys}


def sse(event: str, data: dict) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
