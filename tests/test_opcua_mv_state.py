"""The Machine Vision state machines' paths the process-level tests cannot time (a job still in
flight when Stop or Abort arrives; a reload that drops the prepared recipe; shutdown), on the
plain-Python model the OPC UA server mirrors (tests/test_opcua_mv.py: the rest, on the wire)."""

from __future__ import annotations

import pytest

pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from afrd.daemon.interfaces.opcua_mv_spec import TRANSITIONS, transition_ends  # noqa: E402
from afrd.daemon.interfaces.opcua_mv_state import (  # noqa: E402
    ENG,
    NST,
    PRD,
    SBY,
    SDT,
    UDT,
    NotExecutable,
    VisionModel,
)


def ready() -> VisionModel:
    m = VisionModel()
    m.prepare("widget")
    m.observe("running", ["widget", "gadget"])
    assert (m.main, m.auto, m.last, m.last_auto) == (
        "Operational",
        "Ready",
        "PreoperationalToInitializedAuto",
        "InitializedToReadyAuto",
    )
    return m


@pytest.mark.parametrize("abort", [False, True])
def test_stop_and_abort_return_to_ready_and_the_late_result_changes_nothing(abort):
    m = ready()
    m.start_job(7)
    assert m.auto == "SingleExecution" and m.system_state(0) == PRD
    with pytest.raises(NotExecutable):
        m.start_job(8)  # one job at a time
    m.stop(abort=abort)
    assert m.auto == "Ready"
    assert m.last_auto == ("SingleExecutionToReadyAbort" if abort else "SingleExecutionToReadyStop")
    version = m.version
    m.result(7, "pass", None)  # the part itself is still judged and published
    assert m.version == version and m.auto == "Ready"
    with pytest.raises(NotExecutable):
        m.stop()


def test_a_reload_that_drops_the_prepared_recipe_unprepares_it():
    m = ready()
    m.observe("running", ["gadget"])
    assert m.prepared is None and m.auto == "Initialized"
    assert m.last_auto == "ReadyToInitializedAuto" and not m.executable("StartSingleJob")
    m.prepare("gadget")
    assert m.auto == "Ready" and m.last_auto == "InitializedToReadyRecipe"


def test_faults_halts_and_shutdown():
    m = ready()
    assert m.system_state(0) == SBY
    m.result(3, "error", "infer")  # an engine error is no device fault
    assert m.main == "Operational"
    m.result(4, "error", "acquire")
    assert (m.main, m.auto, m.system_state(0)) == ("Error", None, UDT)
    m.halt()
    assert (m.main, m.last, m.system_state(0)) == ("Halted", "ErrorToHalted", SDT)
    m.reset()
    assert (m.main, m.system_state(0)) == ("Preoperational", ENG)
    m.observe("paused")  # Preoperational after Reset keeps the daemon paused
    assert m.main == "Preoperational"
    m.observe("stopping")
    assert (m.main, m.last, m.system_state(0)) == ("Halted", "PreoperationalToHaltedAuto", NST)
    assert m.executable("Halt") and not m.executable("StartContinuous")


def test_every_transition_name_reads_as_its_states():
    for name in TRANSITIONS:
        src, dst = transition_ends(name)
        assert name.startswith(src + "To" + dst), name
