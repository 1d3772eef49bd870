"""OPC UA at process level: a real asyncua client against `afrd run` on the simulated cell, its
verdicts checked against the daemon's ZeroMQ results (README: namespace and node ids)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from asyncua import ua  # noqa: E402
from asyncua.sync import Client  # noqa: E402

from afrd.config.cell import parse_config  # noqa: E402
from afrd.config.plcusers import hash_password  # noqa: E402
from afrd.errors import ConfigError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import REPO, Daemon, make_brightness_bundle, wait_subscribed  # noqa: E402
from _plc_helpers import free_port, plc_config, self_signed, wait_for, zmq_results  # noqa: E402

NS = "urn:afrd:inspection"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("opcua-bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


@pytest.fixture(scope="module")
def cell(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("opcua-cell")
    port = free_port()
    dm = Daemon(plc_config(d, bundle, opcua=f"port = {port}")).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    yield dm, sub, f"opc.tcp://127.0.0.1:{port}/afrd/"
    sub.close()
    assert dm.stop() == 0, dm.output()


class Cell:
    """The cell's nodes through one client session."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.ns = c.get_namespace_index(NS)
        self.obj = c.get_node(ua.NodeId("Cell", self.ns))

    def node(self, name: str):
        return self.c.get_node(ua.NodeId(f"Cell.{name}", self.ns))

    def read(self, name: str):
        return self.node(name).read_value()

    def trigger(self, *args):
        return self.obj.call_method(ua.NodeId("Cell.Trigger", self.ns), *args)


def start_single_job(c: Client, part_id: str) -> str:
    """StartSingleJob on the VisionSystem (machine_vision = true); its JobId."""
    mv = c.get_namespace_index("http://opcfoundation.org/UA/MachineVision")
    ua.register_basetype("TrimmedString", ua.NodeId(3017, mv), ua.String)  # README: asyncua
    ua.register_basetype("Handle", ua.NodeId(3018, mv), ua.UInt32)
    c.load_data_type_definitions()
    vs = c.nodes.objects.get_child(f"{c.get_namespace_index(NS)}:VisionSystem")
    am = vs.get_child([f"{mv}:VisionStateMachine", f"{mv}:AutomaticModeStateMachine"])
    current = am.get_child("0:CurrentState")

    def ready() -> bool:  # BadStateNotActive until the server has published Operational
        dv = current.read_data_value(raise_on_bad_status=False)
        return dv.StatusCode.is_good() and dv.Value.Value.Text == "Ready"

    wait_for(ready, what="Ready")
    job, err = am.call_method(
        am.get_child(f"{mv}:StartSingleJob"),
        ua.MeasIdDataType(Id=""),
        ua.PartIdDataType(Id=part_id),
        ua.RecipeIdExternalDataType(Id=""),
        ua.ProductIdDataType(Id=""),
        ua.Variant([], ua.VariantType.Variant),
    )
    assert err == 0
    return job.Id


def status_of(exc: BaseException) -> str:
    return type(exc).__name__


def test_trigger_and_read_each_verdict_back(cell):
    dm, sub, url = cell
    with Client(url, timeout=10) as c:
        cl = Cell(c)
        wait_for(lambda: cl.read("State") == "running", what="State running")
        assert cl.read("CellId") == "t1" and cl.read("Model") == "test-brightness"
        assert cl.read("Threshold") == pytest.approx(0.45)
        sent = [cl.trigger(f"UA-{i}", "widget") for i in range(3)] + [cl.trigger("", "")]
        zmq = zmq_results(sub, 4)
        assert [s for s, _ in sent] == sorted(zmq)
        auto = zmq[sent[-1][0]]
        assert auto["part_id"] == sent[-1][1] and auto["product"] == "default"
        for seq, pid in sent:
            assert zmq[seq]["part_id"] == pid
        last = zmq[sent[-1][0]]
        wait_for(lambda: cl.read("LastResult.Seq") == last["seq"], what="LastResult.Seq")
        assert cl.read("LastResult.PartId") == last["part_id"]
        assert cl.read("LastResult.Verdict") == last["verdict"]
        assert cl.read("LastResult.Score") == pytest.approx(last["score"])
        assert cl.read("LastResult.Threshold") == pytest.approx(last["threshold"])
        ts = cl.read("LastResult.Timestamp")
        assert ts.isoformat(timespec="milliseconds")[:23] == last["timestamp"][:23]
        assert cl.read("LastResult.ErrorCode") == ""
        parts = dm.ctl({"cmd": "status"})["result"]["parts"]
        assert cl.read("Counters.Parts") == sum(parts.values()) == 4
        assert cl.read("Counters.Pass") == parts.get("pass", 0)
        assert cl.read("Counters.Fail") == parts.get("fail", 0)


def test_error_verdict_and_paused_state(cell):
    dm, sub, url = cell
    with Client(url, timeout=10) as c:
        cl = Cell(c)
        assert dm.ctl({"cmd": "pause"})["ok"]
        try:
            wait_for(lambda: cl.read("State") == "paused", what="State paused")
            with pytest.raises(ua.UaStatusCodeError) as e:
                cl.trigger("UA-paused", "")
            assert status_of(e.value) == "BadInvalidState"
        finally:
            assert dm.ctl({"cmd": "resume"})["ok"]
        (msg,) = zmq_results(sub, 1).values()
        assert msg["part_id"] == "UA-paused" and msg["error"]["code"] == "paused"
        wait_for(lambda: cl.read("LastResult.Seq") == msg["seq"], what="error result")
        assert cl.read("LastResult.Verdict") == "error"
        assert cl.read("LastResult.ErrorCode") == "paused"
        assert "paused" in cl.read("LastResult.ErrorMessage")
        assert cl.read("LastResult.Score") != cl.read("LastResult.Score")  # NaN
        assert cl.read("Counters.Error") >= 1


def test_bad_client_input_is_refused_and_harmless(cell):
    dm, sub, url = cell
    with Client(url, timeout=10) as c:
        cl = Cell(c)
        first, _ = cl.trigger("UA-before", "")
        zmq_results(sub, 1)
        refusals = {
            "wrong type": (5, "widget"),
            "wrong type 2": ("UA-x", ua.Variant(3.5, ua.VariantType.Double)),
            "missing": ("UA-x",),
            "too many": ("a", "b", "c"),
            "control char": ("UA-\x07", ""),
            "too long": ("x" * 300, ""),
        }
        for what, args in refusals.items():
            with pytest.raises(ua.UaStatusCodeError) as e:
                cl.trigger(*args)
            assert status_of(e.value).startswith("Bad"), (what, e.value)
        with pytest.raises(ua.UaStatusCodeError) as e:
            cl.node("LastResult.Nope").read_value()
        assert status_of(e.value) == "BadNodeIdUnknown"
        for name, value in (("LastResult.Verdict", "pass"), ("Counters.Parts", 0)):
            with pytest.raises(ua.UaStatusCodeError):
                cl.node(name).write_value(value)
        with pytest.raises(ua.UaStatusCodeError):  # a method id that does not exist
            cl.obj.call_method(ua.NodeId("Cell.Reset", cl.ns))
        # nothing was triggered by any of that: the next part's seq follows the first's
        seq, _ = cl.trigger("UA-after", "")
        assert seq == first + 1
        (msg,) = zmq_results(sub, 1).values()
        assert msg["seq"] == seq and msg["verdict"] in ("pass", "fail")
        assert cl.read("LastResult.Verdict") in ("pass", "fail", "")  # still served
    assert dm.proc.poll() is None


def test_status_names_the_server_and_reload_refuses_changing_it(cell):
    dm, _, url = cell
    assert dm.ctl({"cmd": "status"})["result"]["endpoints"]["opcua"] == url
    text = dm.config.read_text()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        dm.config.write_text(text.replace(f"port = {port}", f"port = {port + 1}"))
        r = dm.ctl({"cmd": "reload"})
        assert r["ok"] is False and "opcua" in r["error"] and "restart" in r["error"], r
    finally:
        dm.config.write_text(text)
    with Client(url, timeout=10) as c:  # still serving where it was
        assert Cell(c).read("CellId") == "t1"


def test_restart_client_reconnects(cell):
    dm, sub, url = cell
    assert dm.stop() == 0, dm.output()
    dm = Daemon(dm.config).start()  # a new process on the same config and port
    sub2 = dm.subscriber()
    wait_subscribed(sub2)
    try:
        with Client(url, timeout=10) as c:
            cl = Cell(c)
            wait_for(lambda: cl.read("State") == "running", what="State running")
            assert cl.read("Counters.Parts") == 0  # a fresh daemon
            seq, pid = cl.trigger("UA-restarted", "")
            assert seq == 0
            (msg,) = zmq_results(sub2, 1).values()
            assert msg["part_id"] == pid == "UA-restarted"
            wait_for(lambda: cl.read("LastResult.Seq") == 0 and cl.read("Counters.Parts") == 1)
    finally:
        sub2.close()
        assert dm.stop() == 0, dm.output()


def test_security_sign_and_encrypt_with_users(bundle, tmp_path):
    """Basic256Sha256 SignAndEncrypt, a trusted client certificate and a user with a password;
    no unsecured endpoint; wrong password, unknown certificate and None are each refused."""
    pki = tmp_path / "pki"
    srv_cert, srv_key = self_signed(pki, "server", "urn:afrd:t1")
    cli_cert, cli_key = self_signed(pki / "client", "client", "urn:test:plc")
    bad_cert, bad_key = self_signed(pki / "other", "other", "urn:test:other")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "client.der").write_bytes(cli_cert.read_bytes())
    users = tmp_path / "users"
    users.write_text(f"# opc ua users\nplc:{hash_password('line-1-secret', iterations=1000)}\n")
    port = free_port()
    cfg = plc_config(
        tmp_path,
        bundle,
        opcua=f'port = {port}\nsecurity = ["sign_and_encrypt", "sign"]\n'
        f'certificate = "{srv_cert}"\nprivate_key = "{srv_key}"\n'
        f'trusted_clients_dir = "{trusted}"\nusers_file = "{users}"\nmachine_vision = true',
    )
    dm = Daemon(cfg).start()
    url = f"opc.tcp://127.0.0.1:{port}/afrd/"

    def client(cert: Path, key: Path, password: str, mode: str = "SignAndEncrypt") -> Client:
        c = Client(url, timeout=10)
        c.application_uri = f"urn:test:{cert.stem if cert.stem != 'client' else 'plc'}"
        if mode != "None":
            c.set_security_string(f"Basic256Sha256,{mode},{cert},{key}")
        c.set_user("plc")
        c.set_password(password)
        return c

    try:
        sub = dm.subscriber()
        wait_subscribed(sub)
        for mode in ("SignAndEncrypt", "Sign"):
            with client(cli_cert, cli_key, "line-1-secret", mode) as c:
                cl = Cell(c)
                seq, _ = cl.trigger(f"secure-{mode}", "")
                (msg,) = zmq_results(sub, 1).values()
                assert msg["seq"] == seq
                wait_for(lambda cl=cl, seq=seq: cl.read("LastResult.Seq") == seq)
                if mode == "SignAndEncrypt":  # the Machine Vision methods: the same endpoints
                    job = start_single_job(c, f"secure-mv-{mode}")
                    (msg,) = zmq_results(sub, 1).values()
                    assert (
                        job.startswith(f"{msg['seq']}@")
                        and msg["part_id"] == "secure-mv-SignAndEncrypt"
                    )
        anonymous = Client(url, timeout=10)
        anonymous.application_uri = "urn:test:plc"
        anonymous.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cli_cert},{cli_key}")
        refused = {
            "BadUserAccessDenied": client(cli_cert, cli_key, "wrong password"),
            "BadCertificateUntrusted": client(bad_cert, bad_key, "line-1-secret"),
            "No matching endpoints": client(cli_cert, cli_key, "line-1-secret", mode="None"),
            "BadIdentityTokenRejected": anonymous,
        }
        for why, c in refused.items():
            try:
                with pytest.raises(Exception) as e:  # noqa: PT011 - the reason is asserted below
                    c.connect()
            finally:  # a refused client keeps its (non-daemon) loop thread: pytest would hang
                c.tloop.stop()
            assert why in f"{type(e.value).__name__} {e.value}", (why, e.value)
        assert dm.proc.poll() is None
        sub.close()
    finally:
        assert dm.stop() == 0, dm.output()


def test_config_refuses_exposed_or_unusable_setups(bundle, tmp_path):
    base = plc_config(tmp_path, bundle).read_text()
    import tomllib

    data = tomllib.loads(base)
    bad = {
        "host 0.0.0.0 without security": ({"host": "0.0.0.0"}, "allow_insecure_remote"),
        "sign without a certificate": ({"security": ["sign"]}, "needs certificate"),
        "unknown key": ({"prot": 4840}, "opcua.prot: unknown key"),
        "port out of range": ({"port": 70000}, "opcua.port"),
        "bad host": ({"host": "tcp://x"}, "not an IP address"),
    }
    for what, (section, expect) in bad.items():
        with pytest.raises(ConfigError) as e:
            parse_config({**data, "opcua": section}, "cell.toml")
        assert expect in str(e.value), (what, str(e.value))
    ok = parse_config({**data, "opcua": {"host": "0.0.0.0", "allow_insecure_remote": True}})
    assert ok.opcua is not None and ok.opcua.port == 4840
    for section, expect in (
        ({"products": ["a", ""]}, "products[1]"),
        ({"part_id_format": "{x}"}, "only the field {n}"),
        ({"port": -1}, "modbus.port"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_config({**data, "modbus": section}, "cell.toml")
        assert expect in str(e.value), (section, str(e.value))
    # a users file that is not one: `afrd config check` names the file and line, exit 2
    users = tmp_path / "users"
    users.write_text("plc:plaintext-password\n")
    cfg = tmp_path / "cell.toml"
    cfg.write_text(base + f'\n[opcua]\nusers_file = "{users}"\n')
    p = subprocess.run(
        [sys.executable, "-m", "afrd", "config", "check", "--no-bundle", str(cfg)],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and f"{users} line 1" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_readme_lists_every_node():
    from afrd.daemon.interfaces.opcua import CELL_VARS, COUNTER_VARS, RESULT_VARS

    text = (REPO / "README.md").read_text()
    assert "`urn:afrd:inspection`" in text and "`Cell.Trigger(PartId: String" in text
    for prefix, table in (("Cell.", CELL_VARS), ("Cell.LastResult.", RESULT_VARS)):
        for name in table:
            assert f"`{prefix}{name}`" in text or f"/ `.{name}`" in text, name
    row = next(line for line in text.splitlines() if "`Cell.Counters." in line)
    for name in COUNTER_VARS:
        assert f"`Cell.Counters.{name}`" in row or f"`.{name}`" in row, name


def test_example_config_plc_sections_parse():
    """systemd/cell.example.toml's commented [opcua]/[modbus] sections, uncommented, validate."""
    import tomllib

    from afrd.config.plc import ModbusConfig, OpcUaConfig

    text = (REPO / "systemd" / "cell.example.toml").read_text()
    block = text[text.index("# [opcua]") :].splitlines()
    data = tomllib.loads("\n".join(line[2:] for line in block if line.startswith("# ")))
    assert OpcUaConfig(**data["opcua"]).security == ["sign_and_encrypt"]
    assert ModbusConfig(**data["modbus"]).part_id_format.format(n=7) == "SN-00000007"
