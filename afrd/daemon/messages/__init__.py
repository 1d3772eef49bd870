"""The contracts of the messages the daemon sends and answers, as pydantic models, and the
checks that read messages with them (tests, `afrd watch`, the operator's page, the demo, MES
code in Python). Torch- and numpy-free: clients import this package alone.

- ``part``: ``Result`` (``result.<cell>``, ``afrd.result/1``), ``Heatmap`` (JSON + PNG),
  ``Lights`` (JSON + JPEG);
- ``shadow``: ``Shadow`` (``shadow.<cell>``, ``afrd.shadow/1``: a shadow candidate's verdict),
  the drift watch's and the shadow run's status sections, ``shadow_status``'s report;
- ``cell``: ``Status`` (the heartbeat, ``afrd.status/1``; its body is the control socket's
  ``status`` result), ``Offline`` (the MQTT link's last will on the same topic), ``Counts``
  (MQTT, ``afrd.counts/1``);
- ``control``: the control socket's requests and replies;
- ``fields``: what they are made of (schema ids, enumerations, timestamps, ``SchemaError``);
- ``schemas``: the JSON Schema files in ``docs/schemas/`` (``python -m afrd.daemon.messages
  --write docs/schemas``; ``--check`` says when they drifted from the models).

The daemon builds its messages as dicts (``afrd.daemon.verdict``, ``lights``, the heartbeat, the
MQTT link): the models check them and generate the schemas; the bytes on the wire are the
dicts'. A model's fields are in the order the daemon writes them, so ``wire(model)`` gives those
bytes back (``tests/test_contracts.py`` compares them with a running daemon's). The per-part
messages are closed (an unknown field is an error: a new field is a change of the model and of
the schema files); the status is open, since interfaces may add their own sections to it.
"""

from __future__ import annotations

import json

from afrd.daemon.messages.cell import Counts, Offline, Status, StatusBody
from afrd.daemon.messages.fields import (
    COUNTS_SCHEMA,
    ERROR_CODES,
    HEATMAP_SCHEMA,
    JPEG_MAGIC,
    LIGHTS_SCHEMA,
    PNG_MAGIC,
    RESULT_SCHEMA,
    STATES,
    STATUS_SCHEMA,
    VERDICTS,
    SchemaError,
    check,
    describe_error,
    wire,
)
from afrd.daemon.messages.part import Heatmap, Lights, Result
from afrd.daemon.messages.shadow import SHADOW_SCHEMA, Shadow

__all__ = [
    "COUNTS_SCHEMA",
    "ERROR_CODES",
    "HEATMAP_SCHEMA",
    "JPEG_MAGIC",
    "LIGHTS_SCHEMA",
    "PNG_MAGIC",
    "RESULT_SCHEMA",
    "SHADOW_SCHEMA",
    "STATES",
    "STATUS_SCHEMA",
    "VERDICTS",
    "Counts",
    "Heatmap",
    "Lights",
    "Offline",
    "Result",
    "SchemaError",
    "Shadow",
    "Status",
    "StatusBody",
    "check",
    "describe_error",
    "parse_message",
    "parse_mqtt",
    "validate_counts",
    "validate_heatmap",
    "validate_lights",
    "validate_offline",
    "validate_result",
    "validate_shadow",
    "validate_status",
    "wire",
]


def _same_cell(msg: dict, where: str, cell: str | None) -> dict:
    if cell is not None and msg["cell"] != cell:
        raise SchemaError(f"{where}: cell {msg['cell']!r} on a topic for cell {cell!r}")
    return msg


def validate_result(msg: dict, cell: str | None = None) -> dict:
    """``msg`` if it is an ``afrd.result/1`` of ``cell`` (any cell when None); SchemaError."""
    check(Result, msg, "result")
    return _same_cell(msg, "result", cell)


def validate_heatmap(msg: dict, png: bytes, cell: str | None = None) -> dict:
    check(Heatmap, msg, "heatmap")
    if not png.startswith(PNG_MAGIC):
        raise SchemaError("heatmap: second frame is not a PNG")
    return _same_cell(msg, "heatmap", cell)


def validate_lights(msg: dict, jpeg: bytes, cell: str | None = None) -> dict:
    check(Lights, msg, "lights")
    if not jpeg.startswith(JPEG_MAGIC):
        raise SchemaError("lights: second frame is not a JPEG")
    return _same_cell(msg, "lights", cell)


def validate_shadow(msg: dict, cell: str | None = None) -> dict:
    """``msg`` if it is an ``afrd.shadow/1`` of ``cell`` (a shadow candidate's verdict)."""
    check(Shadow, msg, "shadow")
    return _same_cell(msg, "shadow", cell)


def validate_status(msg: dict, cell: str | None = None) -> dict:
    """The heartbeat (ZeroMQ's ``status.<cell>``, MQTT's ``<root>/status`` while online)."""
    check(Status, msg, "status")
    return _same_cell(msg, "status", cell)


def validate_offline(msg: dict, cell: str | None = None) -> dict:
    """MQTT's ``<root>/status`` once the cell is gone (``state: "offline"``)."""
    check(Offline, msg, "offline")
    return _same_cell(msg, "offline", cell)


def validate_counts(msg: dict, cell: str | None = None) -> dict:
    check(Counts, msg, "counts")
    return _same_cell(msg, "counts", cell)


# frames per topic kind: [topic, JSON] or [topic, JSON, image]
FRAMES = {"result": 2, "heatmap": 3, "status": 2, "lights": 3, "shadow": 2}


def parse_message(frames: list[bytes]) -> tuple[str, str, dict, bytes | None]:
    """Validate one multipart message -> (kind, cell, json, image or None): the heatmap's PNG,
    the lights' JPEG. Raises SchemaError."""
    if len(frames) < 2:
        raise SchemaError(f"message has {len(frames)} frame(s), expected >= 2")
    topic = frames[0].decode("utf-8", "replace")
    kind, _, cell = topic.partition(".")
    if not cell:
        raise SchemaError(f"topic {topic!r} is not <kind>.<cell>")
    n_frames = FRAMES.get(kind)
    if n_frames is None:
        raise SchemaError(f"unknown topic kind {kind!r} in {topic!r}")
    try:
        msg = json.loads(frames[1])
    except ValueError as exc:
        raise SchemaError(f"{topic}: JSON frame does not parse: {exc}") from None
    if len(frames) != n_frames:
        raise SchemaError(f"{topic}: expected {n_frames} frames, got {len(frames)}")
    # the validators are looked up here at call time: the tests wrap them (tests/_contracts.py)
    # to check every message against the schema files as well
    if kind == "heatmap":
        return kind, cell, validate_heatmap(msg, frames[2], cell), frames[2]
    if kind == "lights":
        return kind, cell, validate_lights(msg, frames[2], cell), frames[2]
    validate = {"result": validate_result, "shadow": validate_shadow}.get(kind, validate_status)
    return kind, cell, validate(msg, cell), None


def parse_mqtt(topic: str, payload: bytes) -> tuple[str, dict | bytes]:
    """Validate one message of the MQTT link (JSON topics under its root) -> (kind, JSON or
    the heatmap's PNG); kind is result, status, offline, counts, shadow or heatmap. Raises
    SchemaError."""
    levels = topic.split("/")
    kind = levels[-2] if len(levels) > 1 and levels[-2] == "heatmap" else levels[-1]
    if kind == "heatmap":
        if not payload.startswith(PNG_MAGIC):
            raise SchemaError(f"{topic}: payload is not a PNG")
        return kind, payload
    if kind not in ("result", "status", "counts", "shadow"):
        raise SchemaError(
            f"{topic}: not an afrd topic (<root>/result|status|counts|shadow|heatmap/<seq>)"
        )
    try:
        msg = json.loads(payload)
    except ValueError as exc:
        raise SchemaError(f"{topic}: payload does not parse as JSON: {exc}") from None
    if kind == "status" and isinstance(msg, dict) and msg.get("state") == "offline":
        kind = "offline"
    validate = {
        "result": validate_result,
        "status": validate_status,
        "offline": validate_offline,
        "counts": validate_counts,
        "shadow": validate_shadow,
    }[kind]
    return kind, validate(msg)
