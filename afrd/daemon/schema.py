"""The messages the daemon publishes, and a validator for them (tests, `afrd watch`, MES code).

Topics (first frame): ``result.<cell>`` + JSON; ``heatmap.<cell>`` + JSON + PNG;
``status.<cell>`` + JSON (heartbeat, every second). JSON is UTF-8, one object per frame.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

RESULT_SCHEMA = "afrd.result/1"
HEATMAP_SCHEMA = "afrd.heatmap/1"
STATUS_SCHEMA = "afrd.status/1"
VERDICTS = ("pass", "fail", "error")
STATES = ("starting", "running", "paused", "reloading", "stopping")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# error codes a result may carry (error.code)
ERROR_CODES = (
    "acquire",  # camera or controller fault while imaging the part
    "infer",  # the engine raised
    "nan_score",  # the engine returned a non-finite score
    "overrun",  # the part could not be queued (the line triggers faster than we inspect)
    "shutdown",  # triggered, but the daemon stopped before imaging it
    "paused",  # triggered while inspection is paused
    "internal",  # a bug: anything else
)


class SchemaError(ValueError):
    """A message does not follow the afrd schema; the message says which field and why."""


def utc_iso(t: float) -> str:
    """UNIX time -> '2026-11-23T11:40:00.123456Z'."""
    return (
        _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _need(msg: dict, key: str, types: type | tuple, where: str) -> Any:
    if key not in msg:
        raise SchemaError(f"{where}: missing field {key!r}")
    v = msg[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _tuple(types)):
        raise SchemaError(f"{where}: field {key!r} has type {type(v).__name__}, expected {types}")
    return v


def _tuple(t: type | tuple) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _timestamp(msg: dict, where: str) -> None:
    ts = _need(msg, "timestamp", str, where)
    if not ts.endswith("Z"):
        raise SchemaError(f"{where}: timestamp {ts!r} is not UTC ('Z' suffix)")
    try:
        _dt.datetime.fromisoformat(ts[:-1] + "+00:00")
    except ValueError:
        raise SchemaError(f"{where}: timestamp {ts!r} is not ISO-8601") from None


def _number_or_null(v: Any, key: str, where: str) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SchemaError(f"{where}: {key} must be a finite number or null, got {v!r}")


def validate_result(msg: dict, cell: str | None = None) -> dict:
    where = "result"
    if not isinstance(msg, dict):
        raise SchemaError(f"{where}: expected a JSON object")
    if msg.get("schema") != RESULT_SCHEMA:
        raise SchemaError(f"{where}: schema is {msg.get('schema')!r}, expected {RESULT_SCHEMA!r}")
    c = _need(msg, "cell", str, where)
    if cell is not None and c != cell:
        raise SchemaError(f"{where}: cell {c!r} on a topic for cell {cell!r}")
    _need(msg, "part_id", str, where)
    _need(msg, "product", str, where)
    seq = _need(msg, "seq", int, where)
    if seq < 0:
        raise SchemaError(f"{where}: seq must be >= 0")
    _timestamp(msg, where)
    verdict = _need(msg, "verdict", str, where)
    if verdict not in VERDICTS:
        raise SchemaError(f"{where}: verdict {verdict!r} not one of {VERDICTS}")
    for key in ("score", "threshold"):
        if key not in msg:
            raise SchemaError(f"{where}: missing field {key!r}")
        _number_or_null(msg[key], key, where)
    if verdict != "error" and (msg["score"] is None or msg["threshold"] is None):
        raise SchemaError(f"{where}: a {verdict} verdict needs a score and a threshold")
    if verdict == "fail" and not msg["score"] > msg["threshold"]:
        raise SchemaError(f"{where}: fail but score {msg['score']} <= threshold {msg['threshold']}")
    if verdict == "pass" and msg["score"] > msg["threshold"]:
        raise SchemaError(f"{where}: pass but score {msg['score']} > threshold {msg['threshold']}")
    lat = _need(msg, "latency_ms", dict, where)
    for key in ("acquire", "infer", "total"):
        if key not in lat:
            raise SchemaError(f"{where}: latency_ms missing {key!r}")
        _number_or_null(lat[key], f"latency_ms.{key}", where)
    model = _need(msg, "model", dict, where)
    _need(model, "name", str, f"{where}.model")
    _need(model, "sha256", str, f"{where}.model")
    if verdict == "error":
        err = _need(msg, "error", dict, where)
        code = _need(err, "code", str, f"{where}.error")
        if code not in ERROR_CODES:
            raise SchemaError(f"{where}: error.code {code!r} not one of {ERROR_CODES}")
        _need(err, "message", str, f"{where}.error")
    elif "error" in msg:
        raise SchemaError(f"{where}: 'error' present on a {verdict} verdict")
    return msg


def validate_heatmap(msg: dict, png: bytes, cell: str | None = None) -> dict:
    where = "heatmap"
    if msg.get("schema") != HEATMAP_SCHEMA:
        raise SchemaError(f"{where}: schema is {msg.get('schema')!r}, expected {HEATMAP_SCHEMA!r}")
    c = _need(msg, "cell", str, where)
    if cell is not None and c != cell:
        raise SchemaError(f"{where}: cell {c!r} on a topic for cell {cell!r}")
    _need(msg, "part_id", str, where)
    _need(msg, "seq", int, where)
    _timestamp(msg, where)
    for key in ("width", "height"):
        if _need(msg, key, int, where) <= 0:
            raise SchemaError(f"{where}: {key} must be > 0")
    _number_or_null(_need(msg, "map_max", (int, float), where), "map_max", where)
    if not png.startswith(PNG_MAGIC):
        raise SchemaError(f"{where}: second frame is not a PNG")
    return msg


def validate_status(msg: dict, cell: str | None = None) -> dict:
    where = "status"
    if msg.get("schema") != STATUS_SCHEMA:
        raise SchemaError(f"{where}: schema is {msg.get('schema')!r}, expected {STATUS_SCHEMA!r}")
    c = _need(msg, "cell", str, where)
    if cell is not None and c != cell:
        raise SchemaError(f"{where}: cell {c!r} on a topic for cell {cell!r}")
    _timestamp(msg, where)
    state = _need(msg, "state", str, where)
    if state not in STATES:
        raise SchemaError(f"{where}: state {state!r} not one of {STATES}")
    parts = _need(msg, "parts", dict, where)
    for v in VERDICTS:
        _need(parts, v, int, f"{where}.parts")
    return msg


def parse_message(frames: list[bytes]) -> tuple[str, str, dict, bytes | None]:
    """Validate one multipart message -> (kind, cell, json, png or None). Raises SchemaError."""
    if len(frames) < 2:
        raise SchemaError(f"message has {len(frames)} frame(s), expected >= 2")
    topic = frames[0].decode("utf-8", "replace")
    kind, _, cell = topic.partition(".")
    if not cell:
        raise SchemaError(f"topic {topic!r} is not <kind>.<cell>")
    try:
        msg = json.loads(frames[1])
    except ValueError as exc:
        raise SchemaError(f"{topic}: JSON frame does not parse: {exc}") from None
    if kind == "result":
        if len(frames) != 2:
            raise SchemaError(f"{topic}: expected 2 frames, got {len(frames)}")
        return kind, cell, validate_result(msg, cell), None
    if kind == "heatmap":
        if len(frames) != 3:
            raise SchemaError(f"{topic}: expected 3 frames, got {len(frames)}")
        return kind, cell, validate_heatmap(msg, frames[2], cell), frames[2]
    if kind == "status":
        if len(frames) != 2:
            raise SchemaError(f"{topic}: expected 2 frames, got {len(frames)}")
        return kind, cell, validate_status(msg, cell), None
    raise SchemaError(f"unknown topic kind {kind!r} in {topic!r}")
