"""What a PLC server inside the daemon is made of: the hooks it calls the daemon through
(``Hooks``, ``TriggerReply``), the ``Interface`` protocol the daemon drives, and ``LoopThread``,
a server on its own asyncio event loop and thread (asyncua and pymodbus are asyncio libraries;
the daemon's threads are not). ``afrd.daemon.interfaces`` composes them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from afrd.errors import AfrdError, ConfigError

log = logging.getLogger("afrd.daemon.interfaces")


@dataclass
class TriggerReply:
    """A trigger the daemon took: its sequence number and part id, and ``error`` (code, message)
    when the pipeline refused to image it (paused, overrun, stopping); that part's ``error``
    result is published all the same."""

    seq: int
    part_id: str
    error: tuple[str, str] | None = None


@dataclass
class Hooks:
    """What an interface may ask of the daemon. ``trigger`` raises AfrdError for a request it
    refuses outright (nothing is published then); ``status`` is the control socket's status."""

    trigger: Callable[[str | None, str], TriggerReply]
    status: Callable[[], dict]
    default_product: str = "default"


class Interface(Protocol):
    name: str
    endpoint: str

    def start(self) -> None: ...

    def result(self, msg: dict) -> None: ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...


class LoopThread:
    """A server on its own asyncio loop and thread. Subclasses implement ``_serve()`` (bind and
    start serving; raise to fail the start), ``_on_result(msg)`` (runs on the loop),
    ``_tick()`` (every ``tick_s``, e.g. state and heartbeat) and ``_stop()``."""

    name = "interface"
    tick_s = 0.5

    def __init__(self, hooks: Hooks, host: str, port: int) -> None:
        self.hooks = hooks
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
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
                raise ConfigError(
                    f"{self.name}: cannot listen on {self.where}: {exc.strerror or exc} (port in "
                    f"use by another process, or an address this host does not have?); change "
                    f"{self.name}.host/port in the cell config"
                ) from None
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
                await self._tick()
            except Exception:
                log.exception("%s: periodic update failed", self.name)
            await asyncio.sleep(self.tick_s)

    def _guarded(self, fn: Callable[[dict], Awaitable[None] | None], msg: dict) -> None:
        """Run ``fn(msg)`` on the loop; a coroutine becomes a task. Errors are logged only."""
        try:
            out = fn(msg)
            if asyncio.iscoroutine(out):
                task = self.loop.create_task(out)
                task.add_done_callback(self._log_task_error)
        except Exception:
            log.exception("%s: result seq %s not applied", self.name, msg.get("seq"))

    def _log_task_error(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: update failed: %r", self.name, task.exception())

    # ---------------------------------------------------------------- subclass API
    async def _serve(self) -> None:
        raise NotImplementedError

    def _on_result(self, msg: dict) -> Awaitable[None] | None:
        raise NotImplementedError

    async def _tick(self) -> None:
        return None

    async def _stop(self) -> None:
        return None
