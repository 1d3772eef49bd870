"""Every message the tests read is checked against the schema files in docs/schemas/ with
``jsonschema``, besides the pydantic models it is parsed with: what a non-Python MES validates
against is what the daemon sends, not only what the models say.

``install()`` (called by tests/conftest.py before any test module is imported) wraps the
readers the tests use: the validators of ``afrd.daemon.messages`` (so ``parse_message``, which
``afrd watch``, the page, ``tests/faults/conftest.results_for`` and ``tests/_plc_helpers`` read
with, and ``parse_mqtt`` check too), ``afrd.sim.launch.collect`` (whose frames it now parses)
and ``Daemon.ctl`` (every control reply, and every request the daemon accepted). Each schema is
compiled once. A message that fails raises ``SchemaError`` naming the file and the field.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
CHECKED: Counter = Counter()  # schema file -> messages checked (the session's summary line)


@functools.cache
def validator(name: str, ref: str | None = None) -> jsonschema.Draft202012Validator:
    """The compiled schema file ``name`` (``ref``: one of its ``$defs``)."""
    doc = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    if ref is not None:
        doc = {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{ref}"}
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


# a valid afrd.result/1 message: the tests change one field of it at a time
GOOD_RESULT = {
    "schema": "afrd.result/1",
    "cell": "c",
    "part_id": "p",
    "product": "x",
    "seq": 0,
    "timestamp": "2026-01-01T00:00:00.000000Z",
    "verdict": "pass",
    "score": 0.1,
    "threshold": 0.5,
    "latency_ms": {"acquire": 1.0, "infer": 1.0, "total": 3.0},
    "model": {"name": "m", "sha256": "0" * 64},
}


def check(name: str, msg: Any, ref: str | None = None) -> None:
    """``msg`` against docs/schemas/``name``; SchemaError naming the file and the field."""
    from afrd.daemon.messages import SchemaError

    err = jsonschema.exceptions.best_match(validator(name, ref).iter_errors(msg))
    if err is not None:
        where = name if ref is None else f"{name}#/$defs/{ref}"
        raise SchemaError(f"docs/schemas/{where}: {err.json_path}: {err.message}")
    CHECKED[name] += 1


def _checked(fn, name: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        msg = fn(*args, **kwargs)  # the pydantic model first: its errors are the clearer
        check(name, msg)
        return msg

    wrapper.schema_file = name
    return wrapper


def check_control(req: Any, reply: Any) -> None:
    """A control reply (and the request, when the daemon took it) against the models and the
    schema files."""
    from afrd.daemon.messages.control import check_reply, check_request

    if isinstance(req, bytes):
        try:
            req = json.loads(req)
        except ValueError:
            req = None
    cmd = req.get("cmd") if isinstance(req, dict) else None
    cmd = cmd if isinstance(cmd, str) else None
    model = check_reply(cmd, reply)
    check("afrd.control.reply.json", reply, type(model).__name__)
    if reply.get("ok") is True:
        check_request(req)
        check("afrd.control.request.json", req)


def install() -> None:
    from afrd.daemon import messages, verdict
    from afrd.daemon.messages.schemas import TOPIC_SCHEMAS
    from afrd.sim import launch

    validators = {f"validate_{kind}": name for kind, name in TOPIC_SCHEMAS.items()}
    validators.update(validate_offline="afrd.status.1.json", validate_counts="afrd.counts.1.json")
    for attr, name in validators.items():
        wrapped = _checked(getattr(messages, attr), name)
        setattr(messages, attr, wrapped)  # parse_message and parse_mqtt look them up when called
        if hasattr(verdict, attr):
            setattr(verdict, attr, wrapped)

    collect = launch.collect

    @functools.wraps(collect)
    def checked_collect(*args, **kwargs) -> list:
        out = collect(*args, **kwargs)
        for frames in out:
            messages.parse_message(frames)
        return out

    launch.collect = checked_collect
    ctl = launch.Daemon.ctl

    @functools.wraps(ctl)
    def checked_ctl(self, req, *args, **kwargs) -> dict:
        reply = ctl(self, req, *args, **kwargs)
        check_control(req, reply)
        return reply

    launch.Daemon.ctl = checked_ctl


def summary() -> str | None:
    if not CHECKED:
        return None
    parts = ", ".join(f"{n} {name}" for name, n in sorted(CHECKED.items()))
    return f"message contracts: {sum(CHECKED.values())} messages checked against docs/schemas/ ({parts})"
