"""PLC-native interfaces beside ZeroMQ: the OPC UA and Modbus TCP servers the cell config enables.

Each interface runs its own asyncio event loop on its own thread (asyncua and pymodbus are
asyncio libraries; the daemon's threads are not). The daemon talks to an interface through
three calls, and an interface to the daemon through :class:`Hooks`:

- ``start()``: bind and serve; raises ConfigError naming ``host:port`` when it cannot bind, so
  `afrd run` exits 2 before READY instead of running without the link the PLC expects;
- ``result(msg)``: every published result message (``afrd.result/1``), from the daemon's output
  thread. It only enqueues onto the interface's loop: a slow or dead OPC UA/Modbus client never
  delays the pipeline, and an interface's own failure never touches the result;
- ``close()``: stop serving (SIGTERM, or a failed start), after the last result was handed over.

The invariant: every trigger, whichever interface it came from (control socket, camera line,
OPC UA, Modbus), yields exactly one result, and every enabled interface is handed that result.
A trigger an interface refuses before it reaches the daemon (a wrong argument type, a product
index it does not know) is answered on that interface only, like a control request the control
socket refuses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from afrd.daemon.control import CommandError, check_name
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


class Interfaces(list):
    """The running interfaces, as the daemon drives them: ``result`` hands every published result
    to each (never raises), ``refuse_triggers`` closes the trigger gate before the pipeline
    stops (like closing the control socket: a trigger is either queued and published, or
    refused), ``close`` stops the servers once the last result went out."""

    def __init__(self, items: list[Interface] | None = None, gate: TriggerGate | None = None):
        super().__init__(items or [])
        self.gate = gate

    def result(self, msg: dict) -> None:
        for itf in self:
            try:
                itf.result(msg)
            except Exception:  # an interface's trouble never touches the result
                log.exception("%s: result seq %s not handed over", itf.name, msg.get("seq"))

    def refuse_triggers(self) -> None:
        if self.gate is not None:
            self.gate.close()

    def unhealthy(self) -> list[str]:
        return [itf.name for itf in self if not itf.healthy()]

    def close(self) -> None:
        self.refuse_triggers()
        for itf in self:
            itf.close()


class TriggerGate:
    """Triggers from the interfaces into the daemon's pipeline, checked like the control
    socket's, and refused once the daemon stops (under a lock, so none slips in between)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._closed = False

    def trigger(self, part_id: str | None, product: str) -> TriggerReply:
        if part_id is not None:
            check_name(part_id, "part_id")
        check_name(product, "product")
        with self._lock:
            if self._closed:
                raise CommandError("trigger: the daemon is stopping; part not taken")
            job = self.service.pipeline.trigger(part_id, product)
        return TriggerReply(job.seq, job.part_id, job.error)

    def close(self) -> None:
        with self._lock:
            self._closed = True


def build_interfaces(cfg: Any, service: Any) -> Interfaces:
    """Start the interfaces ``cfg`` enables, wired to ``service`` (its pipeline and
    ``status``). A failing start closes those already started and raises ConfigError."""
    # asyncua logs every node of its standard address space at INFO: the daemon's log is for
    # the cell. Their warnings and errors still show; `--log-level debug` shows everything.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("asyncua", "pymodbus"):
            logging.getLogger(name).setLevel(logging.WARNING)
    gate = TriggerGate(service)
    hooks = Hooks(trigger=gate.trigger, status=service.status, default_product=cfg.trigger.product)
    out = Interfaces(gate=gate)
    try:
        opc = getattr(cfg, "opcua", None)
        if opc is not None and opc.enabled:
            from afrd.daemon.opcua import OpcUaServer

            out.append(OpcUaServer(opc, hooks, cfg.cell))
            out[-1].start()
        mb = getattr(cfg, "modbus", None)
        if mb is not None and mb.enabled:
            from afrd.daemon.modbus import ModbusServer

            out.append(ModbusServer(mb, hooks))
            out[-1].start()
    except BaseException:
        out.close()
        raise
    return out
