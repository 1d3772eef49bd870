"""Roles and the audit log (issue 25): the real daemon, the real page, `afrd ctl` with CURVE keys
of each role, a real asyncua client with users of each role, `afrd label` and `afrd audit`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from asyncua import ua  # noqa: E402
from asyncua.sync import Client  # noqa: E402

from afrd.audit import AuditLog, record  # noqa: E402
from afrd.config.plcusers import load_user_entries, user_line  # noqa: E402
from afrd.daemon.ctl import request  # noqa: E402
from afrd.daemon.roles import COMMAND_ROLES, METHOD_ROLES, needed  # noqa: E402
from afrd.errors import ConfigError  # noqa: E402
from afrd.web.launch import WebProcess, recorder_toml  # noqa: E402
from afrd.web.tokens import line as token_line  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import Daemon, afrd, make_brightness_bundle, wait_for  # noqa: E402
from _plc_helpers import free_port, plc_config  # noqa: E402

NS = "urn:afrd:inspection"
MV = "http://opcfoundation.org/UA/MachineVision"
TOKENS = {
    "alice": ("operator", "alice-operator-token-0123"),
    "bob": ("engineer", "bob-engineer-0123456"),
}
PASSWORD = "line-1-secret"


def _keys(d: Path) -> dict[str, Path]:
    """CURVE keys: the server's; clients op (operator/), eng (engineer/), web (top level: the
    default key role, engineer). Returns the secret key files by name and the server's public."""
    d.mkdir()
    zmq.auth.create_certificates(str(d), "server")
    clients = d / "authorized_clients"
    out = {"server": d / "server.key"}
    for name, sub in (("op", "operator"), ("eng", "engineer"), ("web", "")):
        folder = clients / sub if sub else clients
        folder.mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(str(d), name)
        (folder / f"{name}.key").write_bytes((d / f"{name}.key").read_bytes())
        out[name] = d / f"{name}.key_secret"
    return out


def _records(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def _find(recs: list[dict], **want) -> dict:
    hits = [r for r in recs if all(r.get(k) == v for k, v in want.items())]
    assert len(hits) == 1, (want, recs)
    return hits[0]


@pytest.mark.timeout(240)
def test_roles_and_the_audit_trail_through_the_page_ctl_and_opcua(tmp_path: Path) -> None:
    if not zmq.has("curve"):
        pytest.skip("libzmq built without CURVE")
    keys = _keys(tmp_path / "curve")
    users = tmp_path / "opcua-users"
    users.write_text(  # one line in the format from before roles: it gets access.opcua_role
        f"{user_line('op', PASSWORD, 'operator', iterations=1000)}\n"
        f"{user_line('eng', PASSWORD, 'engineer', iterations=1000)}\n"
        f"{user_line('legacy', PASSWORD, iterations=1000)}\n"
    )
    tokens = tmp_path / "web-tokens"
    tokens.write_text("".join(f"{token_line(n, r, t)}\n" for n, (r, t) in TOKENS.items()))
    audit, caps = tmp_path / "state" / "audit.jsonl", tmp_path / "captures"
    audit.parent.mkdir()
    make_brightness_bundle(tmp_path / "b", size=64, threshold=0.5)
    port = free_port()
    cfg = plc_config(
        tmp_path,
        tmp_path / "b",
        opcua=f'port = {port}\nusers_file = "{users}"\nmachine_vision = true',
        more=recorder_toml(caps) + f'\n[access]\naudit_log = "{audit}"\n',
    )
    text = cfg.read_text()
    cfg.write_text(
        text.replace("[sockets]\n", f'[sockets]\ncurve_keys_dir = "{keys["server"].parent}"\n')
    )
    dm = Daemon(cfg).start()
    web = WebProcess(
        cfg, "--tokens-file", str(tokens), "--server-key", str(keys["server"]),
        "--client-key", str(keys["web"]),
    )  # fmt: skip
    try:
        web.start()

        def ctl(key: str, req: dict) -> dict:
            reply = request(dm.control, req, 10, keys["server"], keys[key])
            assert reply is not None, dm.output()
            return reply

        # the page: an operator's token may not change the threshold (403), an engineer's may
        web.token = TOKENS["alice"][1]
        status, reply = web.post("/api/threshold", {"threshold": 0.3, "reason": "too many rejects"})
        assert status == 403 and reply["needs_role"] == "engineer", reply
        assert ctl("eng", {"cmd": "status"})["result"]["threshold"] == 0.5
        web.token = TOKENS["bob"][1]
        status, reply = web.post("/api/threshold", {"threshold": 0.3, "reason": "lamp replaced"})
        assert status == 200 and reply["result"]["threshold"] == 0.3, reply

        # a part recorded, labelled by the operator on the page (the daemon records it first)
        assert ctl("op", {"cmd": "trigger", "part_id": "p1"})["ok"]  # an operator triggers
        web.token = TOKENS["alice"][1]
        cap = wait_for(lambda: web.get("/api/captures")["captures"], what="the recorded part")[0]
        status, reply = web.post("/api/label", {"id": cap["id"], "label": "good"})
        assert status == 200 and reply["capture"]["label"] == 0, reply

        # afrd ctl with CURVE keys: the operator's key is refused, the engineer's is not
        base = ["ctl", "--connect", dm.control, "--server-key", str(keys["server"])]
        p = afrd(*base, "--client-key", str(keys["op"]), "set-threshold", "0.35", timeout=60)
        assert p.returncode == 1 and "needs the engineer role" in p.stdout, (p.stdout, p.stderr)
        p = afrd(
            *base, "--client-key", str(keys["eng"]), "--reason", "ctl test", "set-threshold",
            "0.35", timeout=60,
        )  # fmt: skip
        assert p.returncode == 0 and json.loads(p.stdout)["result"]["threshold"] == 0.35, p.stdout

        # OPC UA: SetThreshold is an engineer's; Halt (pause) an operator's, the role an old
        # users file line gets
        url = f"opc.tcp://127.0.0.1:{port}/afrd/"

        def session(user: str) -> Client:
            c = Client(url, timeout=10)
            c.set_user(user)
            c.set_password(PASSWORD)
            return c

        def set_threshold(c: Client, value: float, reason: str):
            ns = c.get_namespace_index(NS)
            args = [
                ua.Variant(value, ua.VariantType.Double),
                ua.Variant("", ua.VariantType.String),
                ua.Variant(False, ua.VariantType.Boolean),
                ua.Variant(reason, ua.VariantType.String),
            ]
            cell = c.get_node(ua.NodeId("Cell", ns))
            return cell.call_method(ua.NodeId("Cell.SetThreshold", ns), *args)

        with session("op") as c, pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
            set_threshold(c, 0.4, "from the PLC")
        with session("eng") as c:
            assert set_threshold(c, 0.4, "from the PLC") == 0.4
        with session("legacy") as c:
            vs = c.nodes.objects.get_child(f"{c.get_namespace_index(NS)}:VisionSystem")
            vsm = vs.get_child(f"{c.get_namespace_index(MV)}:VisionStateMachine")
            halt = vsm.get_child(f"{c.get_namespace_index(MV)}:Halt")
            assert vsm.call_method(halt, ua.Variant(7, ua.VariantType.Int32), "shift change") == 0
        assert ctl("op", {"cmd": "status"})["result"]["state"] == "paused"
        assert ctl("eng", {"cmd": "status"})["result"]["threshold"] == 0.4

        # afrd label on the same capture: recorded as the user running it, via cli
        p = afrd("label", str(caps), "--defective", "--part", "p1", "--audit-log", str(audit),
                 "--reason", "dent under the lens", timeout=60)  # fmt: skip
        assert p.returncode == 0, p.stderr
    finally:
        web.stop()
        assert dm.stop() == 0, dm.output()

    recs = _records(audit)
    r = _find(recs, who="alice", what="set_threshold")  # refused, with the role it lacked
    assert (r["outcome"], r["needs"], r["via"], r["peer"]) == ("refused", "engineer", "web", "web")
    r = _find(recs, who="bob", what="set_threshold")
    assert (r["outcome"], r["old"], r["new"], r["reason"]) == ("done", 0.5, 0.3, "lamp replaced")
    assert (r["role"], r["via"], r["peer"]) == ("engineer", "web", "web")
    r = _find(recs, who="alice", what="label")
    assert (r["outcome"], r["old"], r["new"], r["target"]) == ("done", None, 0, cap["id"])
    r = _find(recs, who="op", what="set_threshold")
    assert (r["outcome"], r["needs"], r["via"], r["role"]) == (
        "refused",
        "engineer",
        "ctl",
        "operator",
    )
    r = _find(recs, who="eng", what="set_threshold", via="ctl")
    assert (r["old"], r["new"], r["reason"]) == (0.3, 0.35, "ctl test")
    r = _find(recs, who="op", what="SetThreshold")
    assert (r["outcome"], r["needs"], r["via"]) == ("refused", "engineer", "opcua")
    r = _find(recs, who="eng", what="set_threshold", via="opcua")
    assert (r["old"], r["new"], r["call"], r["reason"]) == (
        0.35,
        0.4,
        "SetThreshold",
        "from the PLC",
    )
    r = _find(recs, who="legacy", what="pause")
    assert (r["role"], r["via"], r["call"], r["old"], r["new"]) == (
        "operator", "opcua", "Halt", "running", "paused"
    )  # fmt: skip
    r = _find(recs, what="label", via="cli")
    assert (r["old"], r["new"], r["reason"], r["target"]) == (
        0,
        1,
        "dent under the lens",
        cap["id"],
    )
    assert not [r for r in recs if r["what"] == "trigger" or r["outcome"] == "failed"], recs
    # every change of the test, whichever way it came, says who, old and new
    done = [r for r in recs if r["outcome"] == "done"]
    assert {r["via"] for r in done} == {"web", "ctl", "opcua", "cli"}, done
    assert len(done) == 6 and all(r["who"] and "old" in r and "new" in r for r in done), done
    assert all(r["old"] != r["new"] for r in done), done

    # afrd audit filters what was just recorded (by the config's access.audit_log)
    p = afrd("audit", "--config", str(cfg), "--who", "alice", "--json", timeout=60)
    assert p.returncode == 0, p.stderr
    assert [(r["what"], r["outcome"]) for r in map(json.loads, p.stdout.splitlines())] == [
        ("set_threshold", "refused"),
        ("label", "done"),
    ]
    p = afrd("audit", "--log", str(audit), "--what", "set_threshold", "--since", "1h", timeout=60)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 5 and sum("REFUSED" in s for s in lines) == 2, lines
    assert "bob (engineer) via web (connection web): set_threshold  0.5 -> 0.3" in lines[1], lines
    p = afrd("audit", "--log", str(audit), "--who", "nobody", timeout=60)
    assert p.returncode == 1 and "no record matches" in p.stderr


def test_a_command_no_table_lists_needs_admin_over_curve(tmp_path: Path) -> None:
    """The control socket with the daemon's guard: a command added without a role is closed
    to an engineer's key and open to an admin's; each refusal is recorded."""
    import types

    from afrd.daemon.guard import Guard
    from afrd.daemon.interfaces.control import ControlServer

    if not zmq.has("curve"):
        pytest.skip("libzmq built without CURVE")
    keys = tmp_path / "curve"
    keys.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    for name, role in (("eng", "engineer"), ("boss", "admin")):
        (keys / "authorized_clients" / role).mkdir(parents=True)
        zmq.auth.create_certificates(str(tmp_path), name)
        (keys / "authorized_clients" / role / f"{name}.key").write_bytes(
            (tmp_path / f"{name}.key").read_bytes()
        )
    commands = {"status": lambda r: {"up": True}, "brand_new": lambda r: {"done": True}}
    log = AuditLog(tmp_path / "audit.jsonl")
    guard = Guard(types.SimpleNamespace(commands=commands), log)
    ctx = zmq.Context()
    srv = ControlServer("tcp://127.0.0.1:0", commands, keys, context=ctx, guard=guard)
    srv.start()
    try:
        ep = srv.bound.replace("0.0.0.0", "127.0.0.1")

        def ask(who: str, cmd: str) -> dict:
            return request(ep, {"cmd": cmd}, 5, keys / "server.key", tmp_path / f"{who}.key_secret")

        assert ask("eng", "status") == {"ok": True, "result": {"up": True}}
        refused = ask("eng", "brand_new")
        assert refused["needs_role"] == "admin" and "eng" in refused["error"], refused
        assert ask("boss", "brand_new") == {"ok": True, "result": {"done": True}}
    finally:
        srv.close()
        ctx.term()
    recs = list(log.read())
    assert [(r["who"], r["what"], r["outcome"]) for r in recs] == [
        ("eng", "brand_new", "refused"),
        ("boss", "brand_new", "done"),
    ]
    assert needed("brand_new") == "admin" and needed("NewMethod", METHOD_ROLES) == "admin"
    shadow = ("shadow_start", "shadow_stop", "shadow_status", "promote", "rollback")
    assert {COMMAND_ROLES[c] for c in shadow} == {"engineer"}


def test_audit_log_rotates_by_size_and_never_rewrites_a_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, keep=2)
    written = [log.append(record("u", "operator", "ctl", "pause", n=i)) for i in range(120)]
    files = log.files()
    assert [p.name for p in files] == ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    assert all(p.stat().st_size <= 4096 for p in files)
    kept = list(log.read())  # oldest first, each line whole; the oldest files are gone
    assert kept == written[-len(kept) :] and len(kept) < len(written)
    current = tmp_path / "audit.jsonl"
    with current.open("a") as f:
        f.write("not json\n")
    n = len(current.read_text().splitlines())
    assert list(log.read())[-1] == {"unreadable": f"{current}:{n}"}  # shown, not hidden


def test_users_and_tokens_files_old_and_new(tmp_path: Path) -> None:
    from afrd.web.auth import Access
    from afrd.web.tokens import Identity, load_tokens

    users = tmp_path / "users"
    users.write_text(f"{user_line('old', PASSWORD, iterations=1000)}\n"
                     f"{user_line('new', PASSWORD, 'engineer', iterations=1000)}\n")  # fmt: skip
    assert {n: r for n, (_h, r) in load_user_entries(users).items()} == {
        "old": None,
        "new": "engineer",
    }
    users.write_text(f"x:chief:{user_line('x', PASSWORD, iterations=1000).split(':', 1)[1]}\n")
    with pytest.raises(ConfigError, match=r"line 1: role 'chief' is not one of"):
        load_user_entries(users)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# page tokens\n{token_line('alice', 'operator', 'a' * 20)}\n")
    shared = "s" * 20  # the one --token-file from before roles: the engineer shared-token
    access = Access(shared, "127.0.0.1", tokens=load_tokens(tokens))
    assert access.identify(f"Bearer {'a' * 20}").role == "operator"
    assert access.identify(f"Bearer {shared}") == Identity("shared-token", "engineer")
    assert access.identify("Bearer wrong-token-wrong") is None
    tokens.write_text("alice:operator:secret\n")
    with pytest.raises(ConfigError, match=r"line 1: expected 'name:role:sha256\$<64 hex>'"):
        load_tokens(tokens)
