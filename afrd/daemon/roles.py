"""Which role each control command and OPC UA method needs, and who is asking.

The tables are the one place a command's role is said. A command or method no table lists
needs ``admin`` (:func:`needed`): one added later is closed until someone decides who may run
it. ``READ_ONLY`` commands are not audited when they succeed (``trigger`` runs once per part:
the audit log is for changes); a refusal is audited whatever the command.

Who is asking travels as a :class:`Caller` in a context variable (:data:`CALLER`): the control
socket sets it for each request, the OPC UA server for each message of a session (on that
connection's task), so the daemon's commands know their caller whichever interface called
them. Where nobody set one the caller is :data:`UNATTRIBUTED`, an operator: a path that
forgets to say who is asking can do no more than the least role.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar

from afrd.config.roles import ROLES, at_least
from afrd.errors import AfrdError

OPERATOR, ENGINEER, ADMIN = ROLES

# control command -> the role it needs (afrd.daemon.commands, and the shadow commands)
COMMAND_ROLES: dict[str, str] = {
    "status": OPERATOR,
    "trigger": OPERATOR,
    "pause": OPERATOR,
    "resume": OPERATOR,
    "audit_label": OPERATOR,  # the page's labels (it writes them, the daemon records them)
    "set_threshold": ENGINEER,  # with "persist": true too: writing the config is engineer's
    "reload": ENGINEER,
    "shadow_start": ENGINEER,
    "shadow_stop": ENGINEER,
    "shadow_status": ENGINEER,
    "promote": ENGINEER,
    "rollback": ENGINEER,
}
READ_ONLY = frozenset({"status", "trigger", "shadow_status"})

# OPC UA method (browse name) -> the role it needs (Cell.* and OPC 40100-1's VisionSystem)
METHOD_ROLES: dict[str, str] = {
    "Trigger": OPERATOR,
    "SetThreshold": ENGINEER,
    # the shadow run, promote, rollback (interfaces/opcua_models), as their commands
    **dict.fromkeys("ShadowStart ShadowStop ShadowStatus Promote Rollback".split(), ENGINEER),
    # Machine Vision: running the line (Halt/Reset pause it) and choosing the recipe are the
    # operator's, as pause, resume and a trigger's product are on the control socket
    **dict.fromkeys(
        "Halt Reset SelectModeAutomatic StartSingleJob StartContinuous Stop Abort".split(),
        OPERATOR,
    ),
    **dict.fromkeys(["PrepareRecipe", "UnprepareRecipe", "ActivateConfiguration"], OPERATOR),
    **dict.fromkeys(
        "GetRecipeListFiltered GetResultById GetResultComponentsById GetResultListFiltered "
        "GetConfigurationById GetConfigurationList".split(),
        OPERATOR,
    ),
}
# OPC UA methods that change something outside the daemon's commands: audited by the server
AUDITED_METHODS = frozenset({"PrepareRecipe", "UnprepareRecipe"})
REASON_CHARS = 500


def needed(name: str, table: dict[str, str] = COMMAND_ROLES) -> str:
    """The role ``name`` needs: its table's, ``admin`` for one the table does not list."""
    return table.get(name, ADMIN)


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is asking: ``who`` (a token name, OPC UA user, CURVE key id, local user), the
    ``role`` the request is judged with, ``via`` which interface, ``peer`` the connection that
    spoke for ``who`` (the page's own key or local user), ``call`` the interface's own name for
    the action (an OPC UA method whose work is a daemon command: Halt -> pause)."""

    who: str
    role: str
    via: str
    peer: str | None = None
    call: str | None = None

    def fields(self) -> dict:
        return {"peer": self.peer, "call": self.call}


UNATTRIBUTED = Caller("unattributed", OPERATOR, "internal")
SIGHUP = Caller("SIGHUP", ADMIN, "signal")  # `systemctl reload afrd`: root or the unit's user
CALLER: ContextVar[Caller] = ContextVar("afrd_caller", default=UNATTRIBUTED)


@contextlib.contextmanager
def acting(caller: Caller) -> Iterator[Caller]:
    """``caller`` is the current caller inside the block."""
    token = CALLER.set(caller)
    try:
        yield caller
    finally:
        CALLER.reset(token)


class Forbidden(AfrdError):
    """The caller's role does not include the one ``what`` needs (``needs_role``)."""

    def __init__(self, what: str, caller: Caller, need: str) -> None:
        super().__init__(
            f"{what} needs the {need} role; {caller.who} (via {caller.via}) has {caller.role}"
        )
        self.needs_role = need


class BadRequest(AfrdError):
    """A request's common fields (``reason``, ``on_behalf_of``) are malformed."""


def allowed(caller: Caller, need: str) -> bool:
    return at_least(caller.role, need)


def reason_of(req: dict) -> str | None:
    """The request's optional ``reason`` (printable, at most 500 characters)."""
    reason = req.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > REASON_CHARS or not reason.isprintable():
        raise BadRequest(
            f"reason: expected printable text of at most {REASON_CHARS} characters, "
            f"got {str(type(reason).__name__)} of length {len(str(reason))}"
        )
    return reason or None
