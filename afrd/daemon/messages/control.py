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


class _Request(BaseModel):
    model_config = closed_config()


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


# each command's request model; the commands the daemon serves (afrd.daemon.commands)
REQUESTS: dict[str, type[BaseModel]] = {
    "status": StatusRequest,
    "trigger": TriggerRequest,
    "set_threshold": SetThresholdRequest,
    "pause": PauseRequest,
    "resume": ResumeRequest,
    "reload": ReloadRequest,
}
# any request, told apart by "cmd" (the schema file's form)
ControlRequest = Annotated[reduce(or_, REQUESTS.values()), Field(discriminator="cmd")]


class ErrorReply(BaseModel):
    """Any refused request: a bad argument, an unknown command, a daemon that is stopping."""

    model_config = closed_config()
    ok: Literal[False]
    error: str


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


# what each command answers when it succeeds (any command: ErrorReply when it does not)
REPLIES: dict[str, type[BaseModel]] = {
    "status": StatusReply,
    "trigger": TriggerReply,
    "set_threshold": SetThresholdReply,
    "pause": PausedReply,
    "resume": PausedReply,
    "reload": ReloadReply,
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
