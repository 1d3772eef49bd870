"""The message contracts (issue 24): pydantic models in afrd.daemon.messages and
control_messages, the JSON Schema files generated from them in docs/schemas/, and the AsyncAPI
document that names the channels. The real daemon's messages are the models' bytes and pass the
schema files; the files cannot drift from the models; the AsyncAPI document lists every message
kind and points at schema files that exist."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time

import pytest
import yaml
from _contracts import CHECKED, GOOD_RESULT, SCHEMAS, check
from _daemon_helpers import Daemon, make_brightness_bundle, wait_for, wait_subscribed, write_config

from afrd.daemon import messages as m
from afrd.daemon.messages.control import REPLIES, REQUESTS, check_reply
from afrd.daemon.messages.schemas import SOURCES, TOPIC_SCHEMAS, drift
from afrd.sim.launch import REPO

ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
MODELS = {
    "result": m.Result,
    "heatmap": m.Heatmap,
    "lights": m.Lights,
    "status": m.Status,
    "shadow": m.Shadow,
}
CELL = (
    '[lights_preview]\nenabled = true\nmax_px = 16\n[recorder]\nenabled = true\ndir = "{rec}"\n'
    "pass_sample_rate = 1.0\nmin_free_bytes = 0\n"
    '[models]\ndir = "{rec}.models"\n'
    '[[product]]\nname = "a"\nthreshold = -1.0\n[[product]]\nname = "b"\nthreshold = 1e5\n'
)


@pytest.mark.timeout(120)
def test_the_daemons_messages_are_the_models_bytes_and_pass_the_schema_files(tmp_path):
    """Every kind of message and every control command of a real `afrd run`: each JSON frame
    is byte for byte what its model dumps (field order, encoding), each reply is its command's
    model, and all of them pass docs/schemas/ (tests/_contracts.py checks what ctl and collect
    read)."""
    make_brightness_bundle(tmp_path / "b", 32, threshold=0.5)
    cand = tmp_path / "c"  # a shadow candidate whose every verdict is an error (NaN scores)
    make_brightness_bundle(cand, 32, threshold=0.5, nan_score=True)
    cfg = write_config(tmp_path, tmp_path / "b", size=32, extra=CELL.format(rec=tmp_path / "rec"))
    before = sum(CHECKED.values())
    dm = Daemon(cfg).start()
    frames: list[list[bytes]] = []
    replies: dict[str, dict] = {}
    try:
        sub = dm.subscriber()
        wait_subscribed(sub)

        def ctl(req: dict) -> dict:
            replies[req["cmd"]] = reply = dm.ctl(req)
            return reply

        assert ctl({"cmd": "set_threshold", "threshold": 1e5, "product": "b"})["ok"]
        for pid, product in (("c-fail", "a"), ("c-pass", "b"), ("c-unknown", "zz")):
            assert ctl({"cmd": "trigger", "part_id": pid, "product": product})["ok"]
        assert ctl({"cmd": "pause"})["ok"]
        assert not dm.ctl({"cmd": "trigger", "part_id": "c-paused"})["ok"]  # published all the same
        assert ctl({"cmd": "resume"})["ok"]
        assert not dm.ctl({"cmd": "trigger", "part_id": ""})["ok"]  # refused: no result
        assert ctl({"cmd": "reload", "reason": "contract test"})["ok"]
        assert ctl({"cmd": "audit_label", "id": "b/2026-01-01/p1", "old": None, "new": 1})["ok"]
        assert ctl({"cmd": "shadow_start", "bundle": str(cand), "product": "a"})["ok"]
        assert dm.ctl({"cmd": "trigger", "part_id": "c-shadow", "product": "a"})["ok"]
        refused = dm.ctl({"cmd": "?"})["error"]  # names the commands the daemon serves
        served = ast.literal_eval(refused[refused.index("[") :])

        def seen() -> bool:
            while sub.poll(50):
                frames.append(sub.recv_multipart())
            kinds = [f[0].split(b".")[0].decode() for f in frames]
            others = {"heatmap", "lights", "status", "shadow"}
            return kinds.count("result") == 5 and others <= set(kinds)

        wait_for(seen, timeout=30, what="5 results, a heatmap, a light preview, heartbeat, shadow")
        assert ctl({"cmd": "shadow_status"})["ok"]
        assert ctl({"cmd": "promote"})["ok"]
        assert ctl({"cmd": "rollback", "product": "a"})["ok"]
        assert ctl({"cmd": "shadow_start", "bundle": str(cand)})["ok"]
        assert ctl({"cmd": "shadow_stop"})["ok"]
        assert ctl({"cmd": "status"})["ok"]
    finally:
        assert dm.stop() == 0
    verdicts = {}
    for f in frames:
        kind, _cell, msg, _img = m.parse_message(f)  # the model, and the schema file
        assert f[1] == m.wire(MODELS[kind].model_validate(msg)), (kind, f[1])
        if kind == "result":
            verdicts[msg["part_id"]] = (msg["verdict"], msg.get("error", {}).get("code"))
    assert verdicts == {
        "c-fail": ("fail", None),
        "c-pass": ("pass", None),
        "c-unknown": ("error", "unknown_product"),
        "c-paused": ("error", "paused"),
        "c-shadow": ("fail", None),
    }
    shadow = [json.loads(f[1]) for f in frames if f[0].startswith(b"shadow.")]
    assert [(s["part_id"], s["verdict"], s["agree"]) for s in shadow] == [
        ("c-shadow", "error", False)
    ]
    assert sorted(served) == sorted(REQUESTS) == sorted(REPLIES) == sorted(replies)
    for cmd, reply in replies.items():
        assert type(check_reply(cmd, reply)) is REPLIES[cmd]
    status = replies["status"]["result"]
    assert status["recorder"] is not None and set(status["recipes"]) == {"a", "b"}
    assert sum(CHECKED.values()) - before >= len(frames) + len(replies)
    _mqtt_json_topics(status, frames)


def _mqtt_json_topics(status: dict, frames: list[list[bytes]]) -> None:
    """The MQTT link's JSON topics, built by its own code from this daemon's status and
    heatmap: each parses (parse_mqtt: the models and the schema files) and is its model's
    bytes."""
    from afrd.daemon.interfaces.mqtt_topics import JsonTopics

    topics = JsonTopics("afrd/s1/l1/t1", "t1")
    for verdict in ("fail", "error"):  # counted as queued: the next status carries the counts
        topics.count({"product": "a", "verdict": verdict})
    heatmap = next(f for f in frames if f[0].startswith(b"heatmap."))
    sent = [*topics.status(status), topics.will(), *topics.goodbye()]
    sent.append(topics.heatmap(json.loads(heatmap[1]), heatmap[2]))
    shadow = next(f for f in frames if f[0].startswith(b"shadow."))
    sent.append(topics.shadow(json.loads(shadow[1])))
    models = {"status": m.Status, "offline": m.Offline, "counts": m.Counts, "shadow": m.Shadow}
    kinds = []
    for topic, payload, _qos, _retain in sent:
        kind, msg = m.parse_mqtt(topic, payload)
        kinds.append(kind)
        if kind in models:
            assert payload == m.wire(models[kind].model_validate(msg)), (kind, payload)
    assert kinds == ["status", "counts", "offline", "offline", "heatmap", "shadow"]


def test_schema_files_are_what_the_models_generate(tmp_path):
    assert drift(SCHEMAS) == []
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(SOURCES)
    # the command a maintainer runs: a changed or missing file is named, exit 1
    for name in SOURCES:
        (tmp_path / name).write_text((SCHEMAS / name).read_text())
    edited = json.loads((SCHEMAS / "afrd.result.1.json").read_text())
    edited["required"].remove("seq")
    (tmp_path / "afrd.result.1.json").write_text(json.dumps(edited))
    (tmp_path / "afrd.status.1.json").unlink()
    cmd = [sys.executable, "-m", "afrd.daemon.messages", "--check", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "afrd.result.1.json: differs from the models" in p.stderr
    assert "afrd.status.1.json: missing" in p.stderr and "Traceback" not in p.stderr


ERROR = {"verdict": "error", "score": None, "error": {"code": "infer", "message": "boom"}}


@pytest.mark.parametrize(
    "change, says, in_schema_file",
    [
        ({"verdict": "fail"}, "fail but score 0.1 <= threshold 0.5", False),
        ({"verdict": "error"}, "an error verdict needs an 'error' object", True),
        ({"error": {"code": "infer", "message": "x"}}, "'error' present on a pass verdict", True),
        ({**ERROR, "error": {"code": "oops", "message": "x"}}, "field 'error.code'", True),
        ({**ERROR, "error": None}, "field 'error': may be left out, but not null", True),
        ({"timestamp": "2026-01-01T00:00:00"}, "is not UTC ('Z' suffix)", True),
        ({"score": None}, "a pass verdict needs a score and a threshold", True),
        ({"seq": True}, "field 'seq': Input should be a valid integer, got True", True),
        ({"seq": -1}, "field 'seq'", True),
        ({"part_id": ""}, "field 'part_id'", True),
        ({"latency_ms": {"acquire": 1.0}}, "missing field 'latency_ms.infer'", True),
        ({"colour": "red"}, "unknown field 'colour'", True),
        ({"schema": "afrd.result/2"}, "field 'schema'", True),
    ],
)
def test_a_bad_result_is_named_by_the_model_and_refused_by_the_schema_file(
    change, says, in_schema_file
):
    """One line naming the field; the schema file refuses it too, except what JSON Schema
    cannot say (a fail needs score > threshold)."""
    bad = {**GOOD_RESULT, **change}
    with pytest.raises(m.SchemaError) as exc:
        m.validate_result(bad)
    assert str(exc.value).startswith("result: ") and says in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)
    refused = True
    try:
        check("afrd.result.1.json", bad)
    except m.SchemaError:
        refused = False
    assert refused is not in_schema_file


def test_the_tests_read_messages_through_the_schema_files():
    """tests/_contracts.py is installed: parse_message (as the tests import it from verdict
    too) checks the schema file, and a message the file refuses is a SchemaError naming it."""
    from afrd.daemon.verdict import parse_message

    n = CHECKED["afrd.result.1.json"]
    parse_message([b"result.c", json.dumps({**GOOD_RESULT, **ERROR}).encode()])
    assert CHECKED["afrd.result.1.json"] == n + 1
    with pytest.raises(m.SchemaError, match=r"docs/schemas/afrd.result.1.json: \$.seq"):
        check("afrd.result.1.json", {**GOOD_RESULT, "seq": "7"})


def _refs(node, out: list[str]) -> list[str]:
    if isinstance(node, dict):
        out += [v for k, v in node.items() if k == "$ref" and isinstance(v, str)]
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def test_asyncapi_names_every_channel_and_points_at_the_schema_files():
    t0 = time.perf_counter()
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert doc["asyncapi"].startswith("3.")
    refs = _refs(doc, [])
    files = {r.split("#")[0] for r in refs if not r.startswith("#")}
    assert {f"./schemas/{n}" for n in SOURCES} <= files, files
    assert all((ASYNCAPI.parent / f).is_file() for f in files), files
    for r in (r for r in refs if r.startswith("#/")):  # every local reference resolves
        node = doc
        for part in r[2:].split("/"):
            node = node[part]
    messages = doc["components"]["messages"]
    kinds = [*TOPIC_SCHEMAS, "offline", "counts", "controlRequest", "controlReply"]
    assert all(k in messages for k in kinds), sorted(messages)
    channels = doc["channels"].values()
    for kind in TOPIC_SCHEMAS:  # each ZeroMQ topic, with its frames
        zmq = [c for c in channels if c["address"] == f"{kind}.{{cell}}"]
        assert len(zmq) == 1 and zmq[0]["bindings"]["x-zeromq"]["socket"] == "PUB", kind
    root = "afrd/{site}/{line}/{cell}"  # [mqtt] topic_root's default
    mqtt = {
        c["address"].removeprefix(root) for c in channels if c["address"] and "/" in c["address"]
    }
    assert {"/result", "/status", "/counts", "/heatmap/{seq}", "/shadow"} <= mqtt, mqtt
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].startswith("#/channels/"), op
    assert time.perf_counter() - t0 < 5
