"""What every afrd message is made of: the schema ids and enumerations, the field types
(UTC timestamps, counts, fields left out rather than null), ``SchemaError`` and how a pydantic
error becomes its one line, and ``wire``: the bytes the daemon sends for a model."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

RESULT_SCHEMA = "afrd.result/1"
HEATMAP_SCHEMA = "afrd.heatmap/1"
STATUS_SCHEMA = "afrd.status/1"
LIGHTS_SCHEMA = "afrd.lights/1"
COUNTS_SCHEMA = "afrd.counts/1"  # the MQTT link's counts per product
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

Verdict = Literal["pass", "fail", "error"]
State = Literal["starting", "running", "paused", "reloading", "stopping"]
# error codes a result may carry (error.code)
ErrorCode = Literal[
    "acquire",  # camera or controller fault while imaging the part
    "register",  # the image set could not be registered to the product's reference pose
    "infer",  # the engine raised
    "nan_score",  # the engine returned a non-finite score
    "overrun",  # the part could not be queued (the line triggers faster than we inspect)
    "shutdown",  # triggered, but the daemon stopped before imaging it
    "paused",  # triggered while inspection is paused
    "internal",  # a bug: anything else
    "unknown_product",  # the trigger's product names no [[product]] recipe of the cell
]
VERDICTS: tuple[str, ...] = get_args(Verdict)
STATES: tuple[str, ...] = get_args(State)
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)
# the JSON Schema form of a UTC timestamp (the validator below also parses the date)
UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"


class SchemaError(ValueError):
    """A message does not follow the afrd schema; the message says which field and why."""


def _utc(ts: str) -> str:
    if not ts.endswith("Z"):
        raise ValueError(f"timestamp {ts!r} is not UTC ('Z' suffix)")
    try:
        _dt.datetime.fromisoformat(ts[:-1] + "+00:00")
    except ValueError:
        raise ValueError(f"timestamp {ts!r} is not ISO-8601") from None
    return ts


Timestamp = Annotated[
    str,
    AfterValidator(_utc),
    Field(
        description="UTC, ISO-8601 with microseconds and a 'Z' suffix",
        json_schema_extra={"format": "date-time", "pattern": UTC_PATTERN},
        examples=["2026-11-23T11:40:00.123456Z"],
    ),
]
Score = Annotated[float | None, Field(description="null when the part was not judged")]
T = TypeVar("T")


def _never_null(v: Any) -> Any:
    if v is None:
        raise ValueError("may be left out, but not null")
    return v


def _absent_not_null(schema: dict) -> None:
    """The JSON Schema of an ``Absent`` field: its type without the null branch, no default."""
    schema.pop("default", None)
    alts = [a for a in schema.pop("anyOf", []) if a != {"type": "null"}]
    if len(alts) == 1:
        for k, v in alts[0].items():
            schema.setdefault(k, v)
    elif alts:
        schema["anyOf"] = alts


# a field the daemon leaves out when it has no value (rather than sending null)
Absent = Annotated[T | None, AfterValidator(_never_null), Field(json_schema_extra=_absent_not_null)]
Count = Annotated[int, Field(ge=0)]
Size = Annotated[int, Field(gt=0)]


def closed_config(**kw: Any) -> ConfigDict:
    # strict: no coercion ("1" is not a seq, true is not a count); NaN/inf are not numbers
    return ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, **kw)


class ModelRef(BaseModel):
    """The model that judged the part."""

    model_config = closed_config()
    name: str
    sha256: str


def wire(model: BaseModel) -> bytes:
    """The bytes the daemon sends for the message ``model`` holds (its publisher's encoding)."""
    data = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def check(model: type[BaseModel], msg: Any, where: str) -> BaseModel:
    """``msg`` validated by ``model``, or SchemaError naming the field and why (one line)."""
    if not isinstance(msg, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(msg).__name__}")
    try:
        return model.model_validate(msg)
    except ValidationError as exc:
        raise SchemaError(describe_error(exc, where)) from None


def describe_error(exc: ValidationError, where: str) -> str:
    """pydantic's first error as one line: ``result: missing field 'seq'``."""
    errors = exc.errors(include_url=False)
    e = errors[0]
    loc = ".".join(str(p) for p in e["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if e["type"] == "missing":
        return f"{where}: missing field {loc!r}{more}"
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown field {loc!r}{more}"
    text = e["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across fields (model_validator)
        return f"{where}: {text}{more}"
    if e["type"] == "value_error":  # our own check: its message names the value
        return f"{where}: field {loc!r}: {text}{more}"
    got = repr(e.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    return f"{where}: field {loc!r}: {text}, got {got}{more}"
