"""OPC UA users with roles; every method call checked against the session user's role.

asyncua hands a method callback its arguments, not the session. Its permission hook
(``PermissionRuleset.check_validity(user, request type, body)``) is called with the session's
user for every request, on that connection's task, just before the request is processed:
:class:`Permissions` keeps asyncua's own rules (a client never adds or deletes nodes) and sets
the caller (``afrd.daemon.roles.CALLER``) there, and the method callbacks the request runs,
coroutines awaited on that task, see it. :func:`guarded` wraps a method: a user without the
role ``METHOD_ROLES`` says is answered Bad_UserAccessDenied and the refusal recorded;
PrepareRecipe and UnprepareRecipe are recorded with the prepared recipe before and after; a
method whose work is a daemon command (SetThreshold, the model methods of ``opcua_models``;
Halt, Reset and SelectModeAutomatic through ``Hooks.pause``/``resume``) is recorded by the
daemon's guard, with the method's name as ``call``. The users file's role column:
``afrd.config.plcusers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

from afrd.config.plcusers import check_password
from afrd.daemon.interfaces.base import Hooks
from afrd.daemon.roles import (
    AUDITED_METHODS,
    CALLER,
    METHOD_ROLES,
    Caller,
    Forbidden,
    acting,
    allowed,
    needed,
)
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.opcua")
VT = ua.VariantType


@dataclasses.dataclass
class RoleUser(User):
    """asyncua's user (``role`` its own: never admin) with afrd's role."""

    afrd_role: str = "operator"


class Users(UserManager):
    """The users file's users (name -> (hash, role or None)), each with its role or
    ``default_role``; without a file (``entries`` None) anonymous clients, with
    ``default_role``."""

    def __init__(self, entries: dict[str, tuple[str, str | None]] | None, default_role: str):
        self.entries, self.default_role = entries, default_role

    def get_user(self, iserver: Any, username=None, password=None, certificate=None) -> Any:
        if self.entries is None:
            return RoleUser(role=UserRole.User, afrd_role=self.default_role)
        entry = self.entries.get(username or "")
        if entry is None or not check_password(password or "", entry[0]):
            log.warning("opcua: login refused for user %r", username)
            return None
        return RoleUser(role=UserRole.User, name=username, afrd_role=entry[1] or self.default_role)


def caller_of(user: Any) -> Caller:
    role = getattr(user, "afrd_role", "operator")  # a user of asyncua's own: the least role
    return Caller(getattr(user, "name", None) or "anonymous", role, "opcua")


class Permissions(SimpleRoleRuleset):
    """asyncua's rules, and the session's user as the caller of what the request runs."""

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        ok = super().check_validity(user, action_type_id, body)
        if ok:
            CALLER.set(caller_of(user))  # this connection's task: the request's methods see it
        return ok


def denied() -> ua.CallMethodResult:
    return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied))


def _record(hooks: Hooks, caller: Caller, what: str, outcome: str, **fields: Any) -> None:
    if hooks.record is not None:
        hooks.record(caller, what, outcome, **fields)


def guarded(name: str, fn: Callable, hooks: Hooks, view: Callable[[], Any] | None = None):
    """The method callback ``fn`` (a coroutine function) behind the role ``name`` needs;
    ``view``: the value it changes, recorded before and after."""
    need = needed(name, METHOD_ROLES)

    async def call(parent: Any, *args: Any) -> Any:
        caller = CALLER.get()
        if not allowed(caller, need):
            log.warning(
                "opcua: %s refused: %s has %s, needs %s", name, caller.who, caller.role, need
            )
            _record(hooks, caller, name, "refused", needs=need)
            return denied()
        old = view() if view is not None else None
        with acting(dataclasses.replace(caller, call=name)):
            out = await fn(parent, *args)
        if view is not None:
            _record(hooks, caller, name, "done", old=old, new=view())
        return out

    return call


def method_guard(hooks: Hooks, prepared: Callable[[], Any]) -> Callable[[str, Callable], Callable]:
    """What Machine Vision wraps each method with (``prepared``: its prepared recipe)."""
    return lambda name, fn: guarded(name, fn, hooks, prepared if name in AUDITED_METHODS else None)


def argument(name: str, text: str, vt: ua.VariantType = VT.String) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(vt.value)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(text)
    return arg


SET_THRESHOLD_IN = (
    ("Threshold", "verdict = fail when score > Threshold, from the next part", VT.Double),
    ("Product", "the [[product]] recipe; empty: the cell's default recipe", VT.String),
    ("Persist", "also write it into the cell config (as set_threshold's persist)", VT.Boolean),
    ("Reason", "why, for the audit log (may be empty)", VT.String),
)


async def add_set_threshold(cell: Any, ns: int, hooks: Hooks) -> None:
    """``Cell.SetThreshold(Threshold, Product, Persist, Reason) -> (Threshold)``: the control
    socket's ``set_threshold``, for engineers (Bad_UserAccessDenied otherwise)."""

    async def set_threshold(_parent: Any, *args: Any) -> Any:
        types = [spec[2] for spec in SET_THRESHOLD_IN]
        if len(args) != len(types) or any(
            not isinstance(a, ua.Variant) or a.VariantType != t
            for a, t in zip(args, types, strict=True)
        ):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        value, product, persist, reason = (a.Value for a in args)
        if hooks.command is None or value is None or not math.isfinite(value):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        req: dict = {"threshold": float(value), "persist": bool(persist)}
        req.update({k: v for k, v in (("product", product), ("reason", reason)) if v})
        try:  # a thread of its own (persisting writes a file); it keeps this caller
            out = await asyncio.to_thread(hooks.command, "set_threshold", req)
        except Forbidden:  # the daemon's guard said so too (and recorded it)
            return denied()
        except AfrdError as exc:
            log.info("opcua: SetThreshold refused: %s", exc)
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return [ua.Variant(float(out["threshold"]), VT.Double)]

    inputs = [argument(n, text, vt) for n, text, vt in SET_THRESHOLD_IN]
    outputs = [argument("Threshold", "the threshold now in force", VT.Double)]
    await cell.add_method(
        ua.NodeId("Cell.SetThreshold", ns),
        f"{ns}:SetThreshold",
        guarded("SetThreshold", set_threshold, hooks),
        inputs,
        outputs,
    )
