"""JSON Schema files of every message, generated from the models (``docs/schemas/``).

    python -m afrd.daemon.messages --write docs/schemas   # after changing a model
    python -m afrd.daemon.messages --check docs/schemas   # exit 1 when the files drifted

One file per message: what a non-Python MES, PLC gateway or historian validates against
(JSON Schema 2020-12; ``docs/asyncapi.yaml`` names the channel each travels on).
``tests/test_contracts.py`` fails when the files differ from the models, and the tests check
every message they receive against these files with ``jsonschema`` (``tests/_contracts.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from afrd.daemon.messages import cell, control, part, shadow

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# file name -> (its title: the model or union's name in afrd.daemon.messages, the source)
SOURCES: dict[str, tuple[str, Any]] = {
    "afrd.result.1.json": ("Result", part.Result),
    "afrd.heatmap.1.json": ("Heatmap", part.Heatmap),
    "afrd.lights.1.json": ("Lights", part.Lights),
    "afrd.shadow.1.json": ("Shadow", shadow.Shadow),
    # the heartbeat, or the MQTT link's offline notice on the same topic
    "afrd.status.1.json": ("StatusMessage", cell.StatusMessage),
    "afrd.counts.1.json": ("Counts", cell.Counts),
    "afrd.control.request.json": ("ControlRequest", control.ControlRequest),
    "afrd.control.reply.json": ("ControlReply", control.ControlReply),
}
# topic kind (the first frame's "<kind>.<cell>") -> its JSON frame's schema file
TOPIC_SCHEMAS = {
    "result": "afrd.result.1.json",
    "heatmap": "afrd.heatmap.1.json",
    "lights": "afrd.lights.1.json",
    "status": "afrd.status.1.json",
    "shadow": "afrd.shadow.1.json",
}


def json_schema(name: str) -> dict:
    """The schema file ``name`` as the models say it should be."""
    title, source = SOURCES[name]
    if isinstance(source, type) and issubclass(source, BaseModel):
        body = source.model_json_schema(by_alias=True)
    else:  # a union of models
        body = TypeAdapter(source).json_schema(by_alias=True)
    body["title"] = title
    _tidy(body)
    head = {
        "$schema": DIALECT,
        "$comment": f"generated from afrd.daemon.messages ({title}) by `python -m "
        "afrd.daemon.messages --write docs/schemas`; edit the model, not this file",
    }
    return {**head, **body}


def _tidy(node: Any) -> None:
    """Descriptions from docstrings as plain one-line text (no reST quotes)."""
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = " ".join(node["description"].replace("``", "`").split())
        for v in node.values():
            _tidy(v)
    elif isinstance(node, list):
        for v in node:
            _tidy(v)


def render(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"


def drift(directory: Path) -> list[str]:
    """What differs between ``directory`` and the models: missing, stale or extra files."""
    out = []
    for name in SOURCES:
        path = directory / name
        if not path.is_file():
            out.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != render(name):
            out.append(f"{path}: differs from the models")
    out += [
        f"{p}: no model generates it"
        for p in sorted(directory.glob("*.json"))
        if p.name not in SOURCES
    ]
    return out


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SOURCES:
        path = directory / name
        path.write_text(render(name), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m afrd.daemon.messages", description=__doc__.split("\n\n")[0]
    )
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR", help="write the schema files into DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="exit 1 if DIR's files drifted")
    args = ap.parse_args(argv)
    if args.write is not None:
        for path in write(args.write):
            print(path)
        return 0
    problems = drift(args.check)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"regenerate: python -m afrd.daemon.messages --write {args.check}", file=sys.stderr)
    return 1 if problems else 0
