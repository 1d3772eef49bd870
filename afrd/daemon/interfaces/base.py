"""What every interface of the daemon shares: the ``Interface`` protocol the daemon drives, the
``Hooks`` an interface calls the daemon through and the ``TriggerReply`` a trigger gets.

An interface (ZeroMQ, OPC UA, Modbus, metrics, MQTT) is fed every published
result without blocking the pipeline and may hand triggers back through ``Hooks.trigger``;
the per-part path (``afrd.daemon.pipeline``, ``verdict``, ``recorder``) never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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
    refuses outright (nothing is published then); ``status`` is the control socket's status;
    ``pause``/``resume`` are its commands (OPC UA Machine Vision's Halt, Reset and
    SelectModeAutomatic), ``command(cmd, req)`` any of them (OPC UA's SetThreshold): each run
    for the caller the interface set (``afrd.daemon.roles.acting``), checked and recorded like a
    control request; ``record(caller, what, outcome, **fields)`` appends an audit record of a
    change the interface made itself (Machine Vision's PrepareRecipe) or refused."""

    trigger: Callable[[str | None, str], TriggerReply]
    status: Callable[[], dict]
    default_product: str = "default"
    pause: Callable[[], object] | None = None
    resume: Callable[[], object] | None = None
    command: Callable[[str, dict], object] | None = None
    record: Callable[..., object] | None = None


class Interface(Protocol):
    name: str
    endpoint: str

    def start(self) -> None: ...

    def result(self, msg: dict) -> None: ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...
