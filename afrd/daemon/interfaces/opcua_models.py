"""The Cell object's methods for a model's life on the line: ``ShadowStart``, ``ShadowStop``,
``ShadowStatus``, ``Promote``, ``Rollback`` (afrd.daemon.model_commands' commands).

Each runs its control command through ``Hooks.command`` for the session's user, as
SetThreshold does, so the role check (engineer) and the audit record are the daemon's guard's;
``guarded`` refuses a user short of the role first (Bad_UserAccessDenied, recorded). Each
answers ``Result``: the command's reply as JSON text. ``shadow_start``, ``promote`` and
``rollback`` open an engine on the daemon's reload thread and answer with a Future: the method
awaits it on the server's loop (other sessions are served meanwhile), at most
:data:`WAIT_S`, then answers Bad_Timeout (the command goes on; ShadowStatus or Cell.Model
shows how it ended). A command the daemon refuses (no candidate, an unknown product, a bundle
that does not open) is answered with the method's refusal code, the reason in the journal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from typing import Any

from asyncua import ua

from afrd.daemon.interfaces.base import Hooks
from afrd.daemon.interfaces.opcua_roles import argument, denied, guarded
from afrd.daemon.roles import Forbidden
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.opcua")
VT = ua.VariantType
WAIT_S = 120.0  # a bundle that takes longer to open is answered Bad_Timeout, and still opens
_S, _B = VT.String, VT.Boolean
_BAD = ua.StatusCodes
# method -> (command, its inputs (name, text, type, request key), status when refused)
METHODS: dict[str, tuple[str, tuple[tuple[str, str, Any, str], ...], int]] = {
    "ShadowStart": (
        "shadow_start",
        (
            ("Bundle", "the candidate bundle's directory on the daemon's machine", _S, "bundle"),
            ("Product", "the [[product]] recipe it shadows; empty: the default", _S, "product"),
        ),
        _BAD.BadInvalidArgument,
    ),
    "ShadowStop": ("shadow_stop", (), _BAD.BadInvalidState),
    "ShadowStatus": ("shadow_status", (), _BAD.BadInvalidState),
    "Promote": (
        "promote",
        (("Persist", "also write the bundle into the cell config", _B, "persist"),),
        _BAD.BadInvalidState,
    ),
    "Rollback": (
        "rollback",
        (
            ("Product", "the [[product]] recipe; empty: the default", _S, "product"),
            ("Persist", "also write the bundle into the cell config", _B, "persist"),
        ),
        _BAD.BadInvalidState,
    ),
}


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)


def method(name: str, hooks: Hooks) -> Any:
    """The callback of ``METHODS[name]`` (before its role guard)."""
    cmd, inputs, refused = METHODS[name]

    async def call(_parent: Any, *args: Any) -> Any:
        if len(args) != len(inputs) or any(
            not isinstance(a, ua.Variant) or a.VariantType != spec[2]
            for a, spec in zip(args, inputs, strict=True)
        ):
            return _status(_BAD.BadInvalidArgument)
        if hooks.command is None:
            return _status(_BAD.BadNotSupported)
        req: dict = {}
        for a, (_n, _t, vt, key) in zip(args, inputs, strict=True):
            if vt == _B:
                req[key] = bool(a.Value)
            elif a.Value:  # an empty String: the default (no product, no bundle)
                req[key] = a.Value
        try:  # a thread of its own (it may write files); it keeps this caller
            out = await asyncio.to_thread(hooks.command, cmd, req)
            if isinstance(out, Future):  # shield: a timeout here must not cancel the work
                out = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(out)), WAIT_S)
        except Forbidden:  # the daemon's guard said so too (and recorded it)
            return denied()
        except AfrdError as exc:
            log.info("opcua: %s refused: %s", name, exc)
            return _status(refused)
        except asyncio.TimeoutError:  # builtins.TimeoutError only from 3.11
            log.warning("opcua: %s not done within %g s; it goes on", name, WAIT_S)
            return _status(_BAD.BadTimeout)
        return [ua.Variant(json.dumps(out, default=str), VT.String)]

    return call


async def add_model_methods(cell: Any, ns: int, hooks: Hooks) -> None:
    """``Cell.<name>`` for each of :data:`METHODS`, each ``-> (Result: String)``."""
    for name, (_cmd, inputs, _refused) in METHODS.items():
        await cell.add_method(
            ua.NodeId(f"Cell.{name}", ns),
            f"{ns}:{name}",
            guarded(name, method(name, hooks), hooks),
            [argument(n, text, vt) for n, text, vt, _key in inputs],
            [argument("Result", "the command's reply, JSON text")],
        )
