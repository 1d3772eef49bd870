"""The control socket's contract: one JSON request ``{"cmd": ...}``, one JSON reply
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``, as pydantic models.

The server (``afrd.daemon.interfaces.control``, the handlers in ``afrd.daemon.commands``) checks
requests itself, with the error messages the control socket has always answered; these models
say what those checks accept and what each command answers, for ``docs/schemas/`` (a client
validates against them) and for the tests, which check every reply they get
(``tests/_contracts.py``). A command's reply model: :data:`REPLIES`.
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from afrd.daemon.interfaces.control import MAX_ID_CHARS
from afrd.daemon.messages.cell import StatusBody
from afrd.daemon.messages.fields import (
    Absent,
    Count,
    SchemaError,
    closed_config,
    describe_error,
)
from afrd.daemon.messages.shadow import (
    ModelChange,
    NoShadow,
    ShadowReport,
    ShadowSummary,
)
from afrd.runtime.bundle import THRESHOLD_RANGE

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description=f"printable, 1 to {MAX_ID_CHARS} characters",
    ),
]
Threshold = Annotated[float, Field(ge=THRESHOLD_RANGE[0], le=THRESHOLD_RANGE[1])]
Role = Literal["operator", "engineer", "admin"]  # afrd.config.roles


class OnBehalfOf(BaseModel):
    """Whom a client (the operator's page) sends the request for: the audit log names them,
    and the request is judged with the lower of their role and the client's own."""

    model_config = closed_config()
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s:]+$")
    role: Absent[Role] = Field(default=None, description="absent: the client's own")
    via: Absent[str] = Field(default=None, pattern=r"^[a-z]{1,16}$", description="e.g. web")


class _Request(BaseModel):
    """What every request may carry besides its command's fields."""

    model_config = closed_config()
    reason: Absent[str] = Field(
        default=None, max_length=500, description="why, for the audit log (changes record it)"
    )
    on_behalf_of: Absent[OnBehalfOf] = None


class StatusRequest(_Request):
    """The daemon's state, counts, queues, recipes and endpoints (the heartbeat's body)."""

    cmd: Literal["status"]


class TriggerRequest(_Request):
    """Inspect one part; its result comes on ``result.<cell>`` (and every other interface)."""

    cmd: Literal["trigger"]
    part_id: Name | None = Field(default=None, description="absent or null: <cell>-<seq>")
    product: Absent[Name] = Field(
        default=None, description="the [[product]] recipe; absent: the cell's trigger.product"
    )


class SetThresholdRequest(_Request):
    """Set a recipe's threshold (the default recipe without ``product``)."""

    cmd: Literal["set_threshold"]
    threshold: Threshold
    product: Name | None = None
    persist: bool = Field(default=False, description="also write it into the cell config")


class PauseRequest(_Request):
    """Stop inspecting: triggers meanwhile are published as error/paused."""

    cmd: Literal["pause"]


class ResumeRequest(_Request):
    cmd: Literal["resume"]


class ReloadRequest(_Request):
    """Re-read the config and swap every recipe in at once (as SIGHUP); answered when done."""

    cmd: Literal["reload"]


class AuditLabelRequest(_Request):
    """A label a client wrote into a capture itself (the page), for the audit log."""

    cmd: Literal["audit_label"]
    id: str = Field(min_length=1, max_length=1024, description="the capture id")
    old: Literal[0, 1] | None = Field(description="the label before (null: unreviewed)")
    new: Literal[0, 1] | None = Field(description="the label written")


class ShadowStartRequest(_Request):
    """Open a candidate bundle beside the live model of a product; answered once it is open."""

    cmd: Literal["shadow_start"]
    bundle: str = Field(min_length=1, max_length=4096, description="the candidate's directory")
    product: Name | None = Field(default=None, description="null or absent: the default recipe")


class ShadowStopRequest(_Request):
    """End the shadow run; answers its final report."""

    cmd: Literal["shadow_stop"]


class ShadowStatusRequest(_Request):
    """The shadow run's report (the last run's once it ended)."""

    cmd: Literal["shadow_status"]


class PromoteRequest(_Request):
    """Make the shadow candidate the product's live model (between two parts)."""

    cmd: Literal["promote"]
    persist: bool = Field(
        default=False, description="also write bundle and threshold to the config"
    )


class RollbackRequest(_Request):
    """Return the product to the model the last promotion replaced."""

    cmd: Literal["rollback"]
    product: Name | None = Field(default=None, description="null or absent: the default recipe")
    persist: bool = Field(
        default=False, description="also write bundle and threshold to the config"
    )


# each command's request model; the commands the daemon serves (afrd.daemon.commands)
REQUESTS: dict[str, type[BaseModel]] = {
    "status": StatusRequest,
    "trigger": TriggerRequest,
    "set_threshold": SetThresholdRequest,
    "pause": PauseRequest,
    "resume": ResumeRequest,
    "reload": ReloadRequest,
    "audit_label": AuditLabelRequest,
    "shadow_start": ShadowStartRequest,
    "shadow_stop": ShadowStopRequest,
    "shadow_status": ShadowStatusRequest,
    "promote": PromoteRequest,
    "rollback": RollbackRequest,
}
# any request, told apart by "cmd" (the schema file's form)
ControlRequest = Annotated[reduce(or_, REQUESTS.values()), Field(discriminator="cmd")]


class ErrorReply(BaseModel):
    """Any refused request: a bad argument, an unknown command, a daemon that is stopping."""

    model_config = closed_config()
    ok: Literal[False]
    error: str
    needs_role: Absent[Role] = Field(
        default=None, description="refused for want of this role (afrd.daemon.roles)"
    )


class _Ok(BaseModel):
    model_config = closed_config()
    ok: Literal[True]


class TriggerResult(BaseModel):
    model_config = closed_config()
    seq: Count
    part_id: str


class ThresholdResult(BaseModel):
    """``config``: where it was saved (persisted); ``persist_error``: why it was not."""

    model_config = closed_config()
    threshold: float
    product: str | None = Field(description="the recipe set (null: the cell's one recipe)")
    persisted: bool
    config: Absent[str] = None
    persist_error: Absent[str] = None


class PausedResult(BaseModel):
    model_config = closed_config()
    paused: bool


class ReloadResult(BaseModel):
    model_config = closed_config()
    model: str = Field(description="the default recipe's model name")
    threshold: float
    recipes: dict[str, float] = Field(description="threshold by [[product]] recipe")


class RecordedResult(BaseModel):
    model_config = closed_config()
    recorded: Literal[True]


class StatusReply(_Ok):
    result: StatusBody


class TriggerReply(_Ok):
    result: TriggerResult


class SetThresholdReply(_Ok):
    result: ThresholdResult


class PausedReply(_Ok):
    result: PausedResult


class ReloadReply(_Ok):
    result: ReloadResult


class RecordedReply(_Ok):
    result: RecordedResult


class ShadowStartReply(_Ok):
    result: ShadowSummary


class ShadowReportReply(_Ok):
    result: ShadowReport | NoShadow


class ModelChangeReply(_Ok):
    result: ModelChange


# what each command answers when it succeeds (any command: ErrorReply when it does not)
REPLIES: dict[str, type[BaseModel]] = {
    "status": StatusReply,
    "trigger": TriggerReply,
    "set_threshold": SetThresholdReply,
    "pause": PausedReply,
    "resume": PausedReply,
    "reload": ReloadReply,
    "audit_label": RecordedReply,
    "shadow_start": ShadowStartReply,
    "shadow_stop": ShadowReportReply,
    "shadow_status": ShadowReportReply,
    "promote": ModelChangeReply,
    "rollback": ModelChangeReply,
}
ControlReply = reduce(or_, dict.fromkeys([*REPLIES.values(), ErrorReply]))


def check_request(req: Any) -> BaseModel:
    """``req`` as the model of its command, or SchemaError naming the field."""
    if not isinstance(req, dict):
        raise SchemaError(f"control request: expected a JSON object, got {type(req).__name__}")
    cmd = req.get("cmd")
    model = REQUESTS.get(cmd) if isinstance(cmd, str) else None
    if model is None:
        raise SchemaError(f"control request: 'cmd' {cmd!r} is not one of {list(REQUESTS)}")
    try:
        return model.model_validate(req)
    except ValidationError as exc:
        raise SchemaError(describe_error(exc, f"control request {cmd!r}")) from None


def check_reply(cmd: str | None, reply: Any) -> BaseModel:
    """``reply`` as the answer to ``cmd``: its command's reply, or an error reply."""
    where = f"control reply to {cmd!r}"
    if not isinstance(reply, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(reply).__name__}")
    model = ErrorReply if reply.get("ok") is False else REPLIES.get(cmd or "")
    if model is None:
        raise SchemaError(f"{where}: ok reply to a command that has none")
    try:
        return model.model_validate(reply)
    except ValidationError as exc:
        raise SchemaError(describe_error(exc, where)) from None
