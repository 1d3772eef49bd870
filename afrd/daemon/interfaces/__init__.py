"""The daemon's interfaces, peers in one folder: how MES, PLCs and monitoring reach the cell.

- ``publisher``: ZeroMQ PUB (results, heatmaps, light previews, the heartbeat);
- ``control``: the ZeroMQ control socket (status, trigger, reload, thresholds, pause);
- ``opcua``, ``modbus``: the PLC servers, on ``loop.LoopThread`` (an asyncio loop and thread
  each, connections bounded by ``loop.ConnectionGuard``);
- ``metrics``: Prometheus over HTTP;
- ``mqtt``: the plant's MQTT broker (results with store and forward in ``mqtt_store``, status,
  heatmaps, counts; Sparkplug B in ``mqtt_sparkplug``), on a thread of its own;
- ``base``: the ``Interface`` protocol and the ``Hooks`` an interface calls the daemon through;
- this module: ``Interfaces``, the set the daemon drives, and ``TriggerGate``, the one way
  triggers come in from the PLC servers.

The per-part path (``afrd.daemon.pipeline``, ``verdict``, ``recorder``) never imports an
interface: the service hands each published result to them (``tests/test_layout.py`` keeps
it so). The PLC servers run their own asyncio event loops on their own threads (asyncua and
pymodbus are asyncio libraries; the daemon's threads are not). The daemon talks to such an
interface through three calls, and an interface to the daemon through :class:`Hooks`:

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

import logging
import threading
from typing import Any

from afrd.daemon.interfaces.base import Hooks, Interface, TriggerReply
from afrd.daemon.interfaces.control import CommandError, check_name

log = logging.getLogger("afrd.daemon.interfaces")


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

    def endpoints(self) -> dict[str, str]:
        """Where each server listens (the control socket's status shows them)."""
        return {itf.name: itf.endpoint for itf in self}

    def details(self) -> dict[str, dict]:
        """Each interface's own status section (``status_section()``, where it has one: MQTT)."""
        return {itf.name: itf.status_section() for itf in self if hasattr(itf, "status_section")}

    def wants_heatmap(self, verdict: str) -> bool:
        """Whether an interface publishes this part's heatmap (MQTT: ``[mqtt] heatmaps``)."""
        return any(itf.wants_heatmap(verdict) for itf in self if hasattr(itf, "wants_heatmap"))

    def heatmap(self, msg: dict, png: bytes) -> None:
        for itf in self:
            if hasattr(itf, "wants_heatmap") and itf.wants_heatmap(msg.get("verdict", "")):
                try:
                    itf.heatmap(msg, png)
                except Exception:  # as for results: never the daemon's trouble
                    log.exception("%s: heatmap seq %s not handed over", itf.name, msg.get("seq"))

    def shadow(self, msg: dict) -> None:
        """A shadow candidate's verdict (afrd.daemon.shadow) to those that publish it: MQTT."""
        for itf in self:
            if hasattr(itf, "shadow"):
                try:
                    itf.shadow(msg)
                except Exception:  # as for results: never the daemon's trouble
                    log.exception("%s: shadow seq %s not handed over", itf.name, msg.get("seq"))

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
    hooks = Hooks(
        trigger=gate.trigger,
        status=service.status,
        default_product=cfg.trigger.product,
        # run for the caller the interface set: role checked, change recorded (afrd.daemon.guard)
        pause=lambda: service.guard.call("pause", {}),  # OPC UA Machine Vision's Halt/Reset
        resume=lambda: service.guard.call("resume", {}),
        command=lambda cmd, req: service.guard.call(cmd, req),  # OPC UA's SetThreshold
        record=lambda *a, **kw: service.guard.record(*a, **kw),
    )
    out = Interfaces(gate=gate)
    try:
        opc = getattr(cfg, "opcua", None)
        if opc is not None and opc.enabled:
            from afrd.daemon.interfaces.opcua import OpcUaServer

            role = getattr(getattr(cfg, "access", None), "opcua_role", "operator")
            out.append(OpcUaServer(opc, hooks, cfg.cell, default_role=role))
            out[-1].start()
        mb = getattr(cfg, "modbus", None)
        if mb is not None and mb.enabled:
            from afrd.daemon.interfaces.modbus import ModbusServer

            names = [p.name for p in getattr(cfg, "product", [])]
            out.append(ModbusServer(mb, hooks, names))
            out[-1].start()
        mq = getattr(cfg, "mqtt", None)
        if mq is not None and mq.enabled:
            from afrd.daemon.interfaces.mqtt import MqttLink

            out.append(MqttLink(mq, hooks, cfg.cell, metrics=service.metrics))
            out[-1].start()  # a broker away is no error: results queue until it connects
    except BaseException:
        out.close()
        raise
    return out
