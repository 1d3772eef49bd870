"""OPC UA for Machine Vision (OPC 40100-1) at process level: a real asyncua client against
`afrd run` on the simulated cell finds the VisionSystem by its type and everything below by the
specification's browse names (no afrd node ids), and checks what it says against the daemon's
ZeroMQ results, its status and the other interfaces' counters (README: the facet and mapping)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")
pytest.importorskip("pymodbus", reason="the plc extra (pymodbus) is not installed")

from asyncua import ua  # noqa: E402
from asyncua.sync import Client  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import make_brightness_bundle, wait_subscribed, write_config  # noqa: E402
from _plc_helpers import free_port, wait_for, zmq_results  # noqa: E402

MV = "http://opcfoundation.org/UA/MachineVision"
# "default" judges every lit part a fail, "widget" every part a pass (brightness scores ~0.1-0.6)
RECIPES = (
    '[[product]]\nname = "default"\nthreshold = 0.01\n\n'
    '[[product]]\nname = "widget"\nthreshold = 0.99\n'
)
I32, U32 = ua.VariantType.Int32, ua.VariantType.UInt32
NO_PARAMS = ua.Variant([], ua.VariantType.Variant)


def mv_config(d: Path, bundle: Path, controller: str = 'kind = "sim"', more: str = "") -> tuple:
    ua_port, mb_port = free_port(), free_port()
    extra = (
        f"{RECIPES}\n[opcua]\nport = {ua_port}\nmachine_vision = true\n"
        f"machine_vision_results = 4\n\n[modbus]\nport = {mb_port}\n{more}"
    )
    cfg = write_config(d, bundle, heatmaps=False, controller=controller, extra=extra)
    return cfg, f"opc.tcp://127.0.0.1:{ua_port}/afrd/", mb_port


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mv-bundle") / "brightness"
    make_brightness_bundle(d, size=64, threshold=0.45)
    return d


@pytest.fixture(scope="module")
def cell(bundle, tmp_path_factory):
    from _daemon_helpers import Daemon

    cfg, url, mb_port = mv_config(tmp_path_factory.mktemp("mv-cell"), bundle)
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    with VisionClient(url) as vc:
        yield dm, sub, vc, mb_port
    sub.close()
    assert dm.stop() == 0, dm.output()


class VisionClient:
    """One asyncua session: the VisionSystem found by type, nodes by MV browse names."""

    def __init__(self, url: str) -> None:
        self.c = Client(url, timeout=10)
        self.events: list = []

    def __enter__(self) -> VisionClient:
        c = self.c
        c.connect()
        self.ns = c.get_namespace_index(MV)
        # the asyncua limit every MV client meets (README): without these two lines no MV
        # structure loads and StartSingleJob's arguments cannot be encoded
        ua.register_basetype("TrimmedString", ua.NodeId(3017, self.ns), ua.String)
        ua.register_basetype("Handle", ua.NodeId(3018, self.ns), ua.UInt32)
        c.load_data_type_definitions()
        systems = [
            n
            for n in c.nodes.objects.get_children()
            if n.read_type_definition() == ua.NodeId(1003, self.ns)  # VisionSystemType
        ]
        assert len(systems) == 1, systems
        self.vs = systems[0]
        self.vsm = self.node("VisionStateMachine")
        self.auto = self.node("VisionStateMachine", "AutomaticModeStateMachine")
        sub = c.create_subscription(20, self)
        sub.subscribe_events(self.vs, c.get_node(ua.NodeId(1024, self.ns)))  # ResultReadyEventType
        return self

    def __exit__(self, *exc: object) -> None:
        self.c.disconnect()

    def event_notification(self, event) -> None:  # asyncua handler, client thread
        self.events.append(event)

    def node(self, *path: str):
        return self.vs.get_child([p if ":" in p else f"{self.ns}:{p}" for p in path])

    def call(self, obj: str, method: str, *args):
        parent = self.node(*obj.split("/")) if obj else self.vs
        return parent.call_method(parent.get_child(f"{self.ns}:{method}"), *args)

    def state(self, machine: str = "main") -> str:
        node = self.vsm if machine == "main" else self.auto
        return node.get_child("0:CurrentState").read_value().Text

    def polled(self, machine: str = "auto") -> str | None:
        """The state for a wait: None while the machine is inactive (BadStateNotActive)."""
        node = self.vsm if machine == "main" else self.auto
        dv = node.get_child("0:CurrentState").read_data_value(raise_on_bad_status=False)
        return dv.Value.Value.Text if dv.StatusCode.is_good() else None

    def last(self, machine: str = "main") -> str:
        node = self.vsm if machine == "main" else self.auto
        return node.get_child("0:LastTransition").read_value().Text

    def start_job(self, part: str = "", recipe: str = "", product: str = "", meas: str = ""):
        am = "VisionStateMachine/AutomaticModeStateMachine"
        return self.call(
            am,
            "StartSingleJob",
            ua.MeasIdDataType(Id=meas),
            ua.PartIdDataType(Id=part),
            ua.RecipeIdExternalDataType(Id=recipe),
            ua.ProductIdDataType(Id=product),
            NO_PARAMS,
        )

    def event_for(self, job_id: str):
        return wait_for(
            lambda: next((e for e in self.events if e.JobId.Id == job_id), None),
            what=f"ResultReadyEvent of job {job_id}",
        )


def content(kv_list) -> dict:
    return {
        v.Key.Name: v.Value.Value
        for v in (x.Value if isinstance(x, ua.Variant) else x for x in kv_list)
    }


def seq_of(job_id: str) -> int:
    return int(job_id.split("@")[0])


def mark(dm, sub) -> int:
    """The seq of a marker part triggered over ZeroMQ (its result read): two marks one apart
    prove that nothing was triggered between them."""
    r = dm.ctl({"cmd": "trigger", "part_id": "marker"})
    assert r["ok"], r
    assert list(zmq_results(sub, 1)) == [r["result"]["seq"]]
    return r["result"]["seq"]


def test_everything_by_the_specification_names(cell):
    _, _, vc, _ = cell
    ns = vc.ns
    wait_for(lambda: vc.polled("main") == "Operational" and vc.polled() == "Ready", what="Ready")
    for path in (
        ("VisionStateMachine", "Halt"),
        ("VisionStateMachine", "Reset"),
        ("VisionStateMachine", "SelectModeAutomatic"),
        *(
            ("VisionStateMachine", "AutomaticModeStateMachine", m)
            for m in ("StartSingleJob", "StartContinuous", "Stop", "Abort")
        ),
        *(
            ("RecipeManagement", m)
            for m in ("GetRecipeListFiltered", "PrepareRecipe", "UnprepareRecipe")
        ),
        *(
            ("ResultManagement", m)
            for m in ("GetResultById", "GetResultComponentsById", "GetResultListFiltered")
        ),
        *(
            ("ConfigurationManagement", m)
            for m in ("ActiveConfiguration", "ActivateConfiguration", "GetConfigurationList")
        ),
        ("SystemState",),
        ("DiagnosticLevel",),
    ):
        assert vc.node(*path).read_browse_name() == ua.QualifiedName(path[-1], ns)
    # the type definitions and the state ids are the specification's
    c = vc.c
    for nid, name in (
        (1017, "VisionStateMachineType"),
        (1021, "VisionAutomaticModeStateMachineType"),
    ):
        assert c.get_node(ua.NodeId(nid, ns)).read_browse_name().Name == name
    assert vc.vsm.read_type_definition() == ua.NodeId(1017, ns)
    assert vc.vsm.get_child(["0:CurrentState", "0:Id"]).read_value() == ua.NodeId(5031, ns)
    assert vc.auto.get_child(["0:CurrentState", "0:Number"]).read_value() == 6  # Ready
    args = vc.node("VisionStateMachine", "AutomaticModeStateMachine", "StartSingleJob")
    names = [a.Name for a in args.get_child("0:InputArguments").read_value()]
    assert names == ["MeasId", "PartId", "RecipeId", "ProductId", "Parameters"]
    assert args.get_child("0:InputArguments").read_value()[0].DataType == ua.NodeId(3015, ns)
    # the MeasIdDataType's Default Binary encoding id is the specification's (5006)
    enc = c.get_node(ua.NodeId(3015, ns)).get_referenced_nodes(refs=ua.ObjectIds.HasEncoding)
    assert [e.nodeid for e in enc] == [ua.NodeId(5006, ns)]
    system = vc.node("SystemState").read_value()
    assert system.State in (ua.SystemStateDataType.SBY_2, ua.SystemStateDataType.PRD_1)
    active = vc.node("ConfigurationManagement", "ActiveConfiguration").read_value()
    assert active.InternalId.Id == "t1"
    err = vc.call("ConfigurationManagement", "ActivateConfiguration", active.InternalId)
    assert err == 0


def utc(t: datetime) -> float:
    """Seconds since the epoch of an OPC UA DateTime (asyncua gives naive UTC or aware)."""
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def test_single_job_result_event_and_store_equal_the_zeromq_result(cell):
    dm, sub, vc, _ = cell
    wait_for(lambda: vc.polled("auto") == "Ready", what="Ready")
    job, err = vc.start_job(part="MV-1", meas="run-7")
    assert err == 0
    (msg,) = zmq_results(sub, 1).values()
    assert msg["seq"] == seq_of(job.Id) and msg["part_id"] == "MV-1"
    ev = vc.event_for(job.Id)
    got = content(ev.ResultContent)
    assert got["Verdict"] == msg["verdict"] and got["Score"] == pytest.approx(msg["score"])
    assert got["Threshold"] == pytest.approx(msg["threshold"]) and got["Seq"] == msg["seq"]
    assert ev.PartId.Id == "MV-1" and ev.MeasId.Id == "run-7" and ev.ResultState == 1
    assert ev.InternalRecipeId.Id == msg["product"] == "default" and ev.IsPartial is False
    # the times: the part's trigger timestamp, its total latency, acquisition and inference
    pt, lat = ev.ProcessingTimes, msg["latency_ms"]
    started = datetime.fromisoformat(msg["timestamp"].replace("Z", "+00:00"))
    assert abs(utc(pt.StartTime) - started.timestamp()) < 1e-3
    assert (utc(pt.EndTime) - utc(pt.StartTime)) * 1000 == pytest.approx(lat["total"], abs=1e-3)
    assert utc(ev.CreationTime) == utc(pt.EndTime)
    assert pt.AcquisitionDuration == pytest.approx(lat["acquire"])
    assert pt.ProcessingDuration == pytest.approx(lat["infer"])
    wait_for(lambda: vc.polled("auto") == "Ready", what="back to Ready")
    assert vc.last("auto") == "SingleExecutionToReadyAuto"
    handle, result, err = vc.call(
        "ResultManagement", "GetResultById", ev.ResultId, ua.Variant(0, I32)
    )
    assert err == 0 and handle == 0
    assert content(result.ResultContent) == got and result.JobId.Id == job.Id
    filters = [None] * 8
    filters[1] = ua.PartIdDataType(Id="MV-1")  # PartId
    done, count, _, listed, err = vc.call(
        "ResultManagement",
        "GetResultListFiltered",
        ua.Variant(0, I32),
        *filters,
        ua.Variant(0, U32),
        ua.Variant(0, U32),
        ua.Variant(0, I32),
    )
    assert (done, count, err) == (True, 1, 0) and listed[0] == result
    parts = vc.call("ResultManagement", "GetResultComponentsById", ev.ResultId, ua.Variant(0, I32))
    assert parts[-1] == 0 and parts[6].Id == "MV-1" and content(parts[15]) == got


def test_prepared_recipe_judges_the_next_part(cell):
    dm, sub, vc, _ = cell
    wait_for(lambda: vc.polled("auto") == "Ready", what="Ready")
    rm, widget = "RecipeManagement", ua.RecipeIdExternalDataType(Id="widget")
    internal, done, err = vc.call(rm, "PrepareRecipe", widget, None)
    assert (internal.Id, done, err) == ("widget", True, 0)
    try:
        tri = ua.Variant(1, I32)  # TriStateBoolean TRUE: the prepared ones
        listed = vc.call(
            rm,
            "GetRecipeListFiltered",
            None,
            None,
            tri,
            *[ua.Variant(0, U32)] * 2,
            ua.Variant(0, I32),
        )
        assert [r.Id for r in listed[3]] == ["widget"]
        job, err = vc.start_job(part="MV-widget")
        assert err == 0
        (msg,) = zmq_results(sub, 1).values()
        assert msg["product"] == "widget" and msg["threshold"] == pytest.approx(0.99)
        assert msg["verdict"] == "pass" and vc.event_for(job.Id).InternalRecipeId.Id == "widget"
        last = msg["seq"]
        wait_for(lambda: vc.polled("auto") == "Ready", what="Ready")
        # a job naming a recipe that is not the prepared one is refused: nothing triggered
        assert vc.start_job(recipe="default")[1] == -2
        # unprepared: Initialized, where StartSingleJob is not executable
        assert vc.call(rm, "UnprepareRecipe", widget, None)[1] == 0
        wait_for(lambda: vc.polled("auto") == "Initialized", what="Initialized")
        assert vc.last("auto") == "ReadyToInitializedRecipe"
        with pytest.raises(ua.UaStatusCodeError, match="BadNotExecutable"):
            vc.start_job()
    finally:
        vc.call(rm, "PrepareRecipe", ua.RecipeIdExternalDataType(Id="default"), None)
    wait_for(lambda: vc.polled("auto") == "Ready", what="Ready again")
    job, err = vc.start_job(part="MV-default")
    assert err == 0 and seq_of(job.Id) == last + 1  # the refused calls triggered nothing
    (msg,) = zmq_results(sub, 1).values()
    assert msg["product"] == "default" and msg["verdict"] == "fail"


def test_state_machine_follows_pause_resume_halt_reset(cell):
    dm, sub, vc, _ = cell
    wait_for(lambda: vc.polled("auto") == "Ready", what="Ready")
    before = mark(dm, sub)
    assert dm.ctl({"cmd": "pause"})["ok"]
    wait_for(lambda: vc.state() == "Halted", what="Halted after a pause over ZeroMQ")
    assert vc.last() == "OperationalToHaltedAuto"
    assert vc.node("SystemState").read_value().State == ua.SystemStateDataType.SDT_4
    with pytest.raises(ua.UaStatusCodeError, match="BadStateNotActive"):
        vc.state("auto")  # the automatic-mode machine is inactive outside Operational
    ssj = vc.node("VisionStateMachine", "AutomaticModeStateMachine", "StartSingleJob")
    assert ssj.read_attribute(ua.AttributeIds.Executable).Value.Value is False
    with pytest.raises(ua.UaStatusCodeError, match="BadNotExecutable"):
        vc.start_job(part="MV-halted")
    assert dm.ctl({"cmd": "resume"})["ok"]
    wait_for(lambda: vc.state() == "Operational", what="Operational after resume")
    wait_for(lambda: vc.polled("auto") == "Ready", what="Ready after resume")
    assert vc.last() == "PreoperationalToInitializedAuto"
    # Halt pauses the daemon; Reset keeps it paused in Preoperational; SelectModeAutomatic
    # resumes it
    halt = (ua.Variant(7, I32), "shift change")
    assert vc.call("VisionStateMachine", "Halt", *halt) == 0
    assert vc.state() == "Halted" and vc.last() == "OperationalToHalted"
    assert dm.ctl({"cmd": "status"})["result"]["state"] == "paused"
    assert vc.call("VisionStateMachine", "Reset", *halt) == 0
    assert vc.state() == "Preoperational" and vc.last() == "HaltedToPreoperational"
    assert vc.node("SystemState").read_value().State == ua.SystemStateDataType.ENG_3
    assert dm.ctl({"cmd": "status"})["result"]["state"] == "paused"
    assert vc.call("VisionStateMachine", "SelectModeAutomatic") == 0
    assert vc.state() == "Operational" and vc.state("auto") == "Ready"
    assert dm.ctl({"cmd": "status"})["result"]["state"] == "running"
    with pytest.raises(ua.UaStatusCodeError, match="BadNotExecutable"):  # only in Preoperational
        vc.call("VisionStateMachine", "SelectModeAutomatic")
    with pytest.raises(ua.UaStatusCodeError, match="BadNotExecutable"):  # no job to stop
        vc.call("VisionStateMachine/AutomaticModeStateMachine", "Stop", *halt)
    assert mark(dm, sub) == before + 1  # StartSingleJob while Halted triggered nothing


def prometheus_parts(dm) -> float:
    """The parts /metrics counts, every verdict (prometheus_client's own parser)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    port = dm.ctl({"cmd": "status"})["result"]["endpoints"]["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "afrd_parts_total"
    )


def test_new_methods_go_through_the_one_gate(cell):
    """Every StartSingleJob part shows in every interface's counters; bad arguments and the
    store's bound (4) are answered on OPC UA only."""
    from pymodbus.client import ModbusTcpClient

    from afrd.daemon.interfaces.modbus import ADDR, from_words32

    dm, sub, vc, mb_port = cell
    jobs = []
    for i in range(5):
        wait_for(lambda: vc.polled("auto") == "Ready", what="Ready")
        job, err = vc.start_job(part=f"MV-gate-{i}")
        jobs.append(job.Id)
        assert err == 0
        zmq_results(sub, 1)
    # every trigger so far (any interface) took the next seq and got one result: that many
    # parts on every interface's counter (each counts just after the result is out)
    total = seq_of(jobs[-1]) + 1
    afrd_ns = vc.c.get_namespace_index("urn:afrd:inspection")
    cell_counter = vc.c.get_node(ua.NodeId("Cell.Counters.Parts", afrd_ns))
    wait_for(lambda: cell_counter.read_value() == total, what="Cell.Counters.Parts")
    m = ModbusTcpClient("127.0.0.1", port=mb_port, timeout=5)
    assert m.connect()
    try:

        def modbus_parts() -> int:
            r = m.read_holding_registers(ADDR["parts"], count=2).registers
            return from_words32(r[0], r[1])

        wait_for(lambda: modbus_parts() == total, what="Modbus parts")
    finally:
        m.close()
    status = lambda: sum(dm.ctl({"cmd": "status"})["result"]["parts"].values())  # noqa: E731
    wait_for(lambda: status() == total, what="status parts (the control socket)")
    wait_for(lambda: prometheus_parts(dm) == total, what="afrd_parts_total on /metrics")
    # the store keeps 4: the oldest of these five fell out and is counted
    evicted = vc.node("ResultManagement", f"{afrd_ns}:ResultsEvicted")
    wait_for(lambda: evicted.read_value() >= 1, what="ResultsEvicted")
    gone = vc.call(
        "ResultManagement", "GetResultById", ua.ResultIdDataType(Id=jobs[0]), ua.Variant(0, I32)
    )
    assert gone[2] == -1 and gone[1].ResultState == 0
    kept = vc.call(
        "ResultManagement", "GetResultById", ua.ResultIdDataType(Id=jobs[-1]), ua.Variant(0, I32)
    )
    assert kept[2] == 0
    bad = {
        "BadArgumentsMissing": (ua.MeasIdDataType(Id=""),),
        "BadInvalidArgument": (5, None, None, None, NO_PARAMS),  # a number for MeasId
        "BadInvalidArgument ": (None, ua.PartIdDataType(Id="x\x07"), None, None, NO_PARAMS),
        "BadInvalidArgument  ": (
            None,
            None,
            None,
            None,
            ua.Variant([ua.Variant(1)], ua.VariantType.Variant),
        ),
    }
    am = "VisionStateMachine/AutomaticModeStateMachine"
    for code, args in bad.items():
        with pytest.raises(ua.UaStatusCodeError, match=code.strip()):
            vc.call(am, "StartSingleJob", *args)
    assert mark(dm, sub) == seq_of(jobs[-1]) + 1  # none of those triggered a part


def test_device_fault_is_error_and_recovers(bundle, tmp_path):
    """A light controller answering Err (every 40th command) fails some parts with
    ``acquire``: Error, where StartSingleJob is refused; the next part acquired and judged
    brings it back to Operational (any interface's part), and Reset leaves Error too."""
    from _daemon_helpers import Daemon

    cfg, url, _ = mv_config(tmp_path, bundle, controller='kind = "sim"\nerror_every = 40')
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    wait_subscribed(sub)
    try:
        with VisionClient(url) as vc:
            wait_for(lambda: vc.state() == "Operational", what="Operational")
            for round_ in range(2):
                codes = []
                for i in range(30):  # parts over ZeroMQ until one fails on the controller
                    assert dm.ctl({"cmd": "trigger", "part_id": f"F-{round_}-{i}"})["ok"]
                    (msg,) = zmq_results(sub, 1).values()
                    codes.append((msg.get("error") or {}).get("code"))
                    if codes[-1] == "acquire":
                        break
                assert codes[-1] == "acquire", codes
                wait_for(lambda: vc.state() == "Error", what="Error after a device fault")
                assert vc.last() == "OperationalToErrorAuto"
                assert vc.node("SystemState").read_value().State == ua.SystemStateDataType.UDT_5
                with pytest.raises(ua.UaStatusCodeError, match="BadNotExecutable"):
                    vc.start_job()
                if round_ == 0:  # recovery: the next good part
                    for i in range(5):
                        assert dm.ctl({"cmd": "trigger", "part_id": f"G-{i}"})["ok"]
                        (msg,) = zmq_results(sub, 1).values()
                        if msg["verdict"] != "error":
                            break
                    assert msg["verdict"] != "error"
                    wait_for(lambda: vc.state() == "Operational", what="recovered")
                    assert vc.last() == "ErrorToOperationalAuto"
                else:  # or Reset (paused) and SelectModeAutomatic
                    halt = (ua.Variant(0, I32), "")
                    assert vc.call("VisionStateMachine", "Reset", *halt) == 0
                    assert vc.last() == "ErrorToPreoperational"
                    assert vc.call("VisionStateMachine", "SelectModeAutomatic") == 0
                    assert vc.state() == "Operational"
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
