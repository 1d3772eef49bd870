"""What the PLC servers inside the daemon run on: ``LoopThread``, a server on its own asyncio
event loop and thread (asyncua and pymodbus are asyncio libraries; the daemon's threads are
not), and ``ConnectionGuard``, which bounds the TCP connections a server holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from afrd.config.endpoints import listen_error
from afrd.daemon.interfaces.base import Hooks
from afrd.errors import AfrdError, ConfigError

log = logging.getLogger("afrd.daemon.interfaces")
LOG_EVERY_S = 10.0  # at most one line per this long about refused or dropped connections


class ConnectionGuard:
    """The TCP connections one server holds: at most ``max_connections`` at once (the rest are
    closed as soon as they are accepted, before the library sees them), and one that sends
    nothing for ``idle_timeout_s``, or nothing at all within ``hello_timeout_s`` of connecting,
    is closed by ``sweep()``. Refusals and drops are counted and logged at most once per
    LOG_EVERY_S, so a flood of idle connections costs neither descriptors nor log lines.

    It wraps the protocol factory the library passes to ``loop.create_server`` (``_GuardedLoop``):
    the library's own protocol exists only for an admitted connection."""

    def __init__(
        self,
        name: str,
        max_connections: int,
        idle_timeout_s: float | None = None,
        hello_timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s or None  # 0: never
        self.hello_timeout_s = hello_timeout_s or None
        self.open: set[_Slot] = set()
        self.servers = 0  # listening sockets wrapped: _serve checks that there is one
        self.refused = 0
        self.dropped = 0
        self._logged = (0, 0)
        self._last_log = -math.inf

    def wrap(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], _Slot]:
        self.servers += 1
        return lambda: _Slot(self, factory)

    def admit(self, slot: _Slot) -> bool:
        if len(self.open) >= self.max_connections:
            self.refused += 1
            return False
        self.open.add(slot)
        return True

    def sweep(self) -> None:
        """Close the connections past their timeout; report what was refused or dropped."""
        now = time.monotonic()
        for slot in list(self.open):
            limit = self.idle_timeout_s
            if not slot.heard and self.hello_timeout_s is not None:
                limit = self.hello_timeout_s
            if limit is not None and now - slot.last > limit and not slot.transport.is_closing():
                self.dropped += 1
                slot.transport.abort()  # connection_lost frees the slot
        done = (self.refused, self.dropped)
        if done != self._logged and now - self._last_log >= LOG_EVERY_S:
            refused, dropped = done[0] - self._logged[0], done[1] - self._logged[1]
            (log.warning if refused else log.info)(
                "%s: %d connection(s) refused over max_connections = %d, %d silent one(s) "
                "closed since the last report; %d refused, %d closed since start",
                self.name,
                refused,
                self.max_connections,
                dropped,
                *done,
            )
            self._logged, self._last_log = done, now


class _Slot(asyncio.Protocol):
    """One accepted connection, in front of the library's protocol (made once admitted)."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], Any]) -> None:
        self.guard, self.factory = guard, factory
        self.inner: Any = None
        self.transport: Any = None
        self.heard = False
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.last = time.monotonic()
        if not self.guard.admit(self):
            transport.abort()
            return
        try:
            self.inner = self.factory()
            self.inner.connection_made(transport)
        except BaseException:
            self.guard.open.discard(self)
            transport.abort()
            raise

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.heard, self.last = True, time.monotonic()
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class _GuardedLoop(asyncio.SelectorEventLoop):
    """A server's event loop: every listening socket made on it (asyncua and pymodbus both use
    ``loop.create_server``) admits its connections through ``guard``, and listens with a backlog
    of ``max_connections`` (at most asyncio's default 100): asyncio accepts up to the backlog per
    wakeup and a refused socket is closed a few loop iterations later, so the backlog bounds the
    descriptors a burst holds meanwhile."""

    def __init__(self, guard: ConnectionGuard | None) -> None:
        super().__init__()
        self.guard = guard

    async def create_server(self, protocol_factory: Callable, *args: Any, **kwargs: Any) -> Any:
        if self.guard is not None:
            protocol_factory = self.guard.wrap(protocol_factory)
            kwargs.setdefault("backlog", min(100, self.guard.max_connections))
        return await super().create_server(protocol_factory, *args, **kwargs)


class LoopThread:
    """A server on its own asyncio loop and thread. Subclasses implement ``_serve()`` (bind and
    start serving; raise to fail the start), ``_on_result(msg)`` (runs on the loop, in the order
    results were published; it must not await: queue work for a task of its own instead),
    ``_tick()`` (every ``tick_s``, e.g. state and heartbeat) and ``_stop()``. ``guard`` bounds
    the connections of the server ``_serve`` starts; asyncio's own errors on the loop are logged
    at most once per LOG_EVERY_S each (an accept() short of descriptors retries in a loop)."""

    name = "interface"
    tick_s = 0.5

    def __init__(
        self, hooks: Hooks, host: str, port: int, guard: ConnectionGuard | None = None
    ) -> None:
        self.hooks = hooks
        self.host, self.port = host, port
        self.guard = guard
        self.loop = _GuardedLoop(guard)
        self.loop.set_exception_handler(self._loop_error)
        self._loop_errors: dict[str, list] = {}  # message -> [last logged, suppressed since]
        self._thread = threading.Thread(target=self._run, name=f"afrd-{self.name}", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._ticker: asyncio.Task | None = None
        self._closed = False

    # ---------------------------------------------------------------- daemon side
    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise ConfigError(f"{self.name}: server on {self.where} did not start in {timeout_s}s")
        if self._start_error is not None:
            self._thread.join(timeout=5)
            exc = self._start_error
            if isinstance(exc, AfrdError):
                raise exc
            if isinstance(exc, OSError):
                raise listen_error(f"{self.name}.port", self.where, exc) from None
            raise ConfigError(f"{self.name}: server on {self.where} failed to start: {exc!r}")
        log.info("%s server listening on %s", self.name, self.where)

    @property
    def endpoint(self) -> str:
        return self.where

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def result(self, msg: dict) -> None:
        if self._closed:
            return
        try:
            self.loop.call_soon_threadsafe(self._guarded, self._on_result, msg)
        except RuntimeError:  # loop already closed (shutdown race): nothing left to serve
            pass

    def healthy(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def close(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive() and self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
            try:
                fut.result(timeout_s)
            except Exception:
                log.exception("%s: error while stopping", self.name)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout_s)

    # ---------------------------------------------------------------- loop side
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
            if self.guard is not None and not self.guard.servers:
                raise RuntimeError("the server did not listen through loop.create_server")
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            self.loop.close()
            return
        self._ticker = self.loop.create_task(self._tick_loop())
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            try:
                self.loop.run_until_complete(asyncio.sleep(0))
            finally:
                self.loop.close()

    async def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self._stop()

    async def _tick_loop(self) -> None:
        while True:
            try:
                if self.guard is not None:
                    self.guard.sweep()
                await self._tick()
            except Exception:
                log.exception("%s: periodic update failed", self.name)
            await asyncio.sleep(self.tick_s)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        msg = str(context.get("message"))
        now = time.monotonic()
        seen = self._loop_errors.get(msg)
        if seen is not None and now - seen[0] < LOG_EVERY_S:
            seen[1] += 1
            return
        if len(self._loop_errors) > 100:  # messages that name a callback: keep it bounded
            self._loop_errors.clear()
        if seen is not None and seen[1]:
            context = {**context, "message": f"{msg} ({seen[1]} more like it not logged)"}
        self._loop_errors[msg] = [now, 0]
        loop.default_exception_handler(context)

    def _guarded(self, fn: Callable[[dict], None], msg: dict) -> None:
        """Run ``fn(msg)`` on the loop; errors are logged only."""
        try:
            fn(msg)
        except Exception:
            log.exception("%s: result seq %s not applied", self.name, msg.get("seq"))

    # ---------------------------------------------------------------- subclass API
    async def _serve(self) -> None:
        raise NotImplementedError

    def _on_result(self, msg: dict) -> None:
        raise NotImplementedError

    async def _tick(self) -> None:
        return None

    async def _stop(self) -> None:
        return None
