"""The Machine Vision state machines (OPC 40100-1 §8) mapped onto the daemon's real states.

``VisionModel`` is plain Python (no asyncua): the OPC UA side calls it on the server's loop and
mirrors it into CurrentState/LastTransition, the methods' Executable attributes and SystemState.

VisionStateMachine <- the daemon (``status()["state"]``, polled every 0.5 s, and each result):

- Preoperational: ``starting``, and after ``Reset`` (the daemon is paused: it inspects nothing
  until ``SelectModeAutomatic`` resumes it, or someone resumes it over another interface);
- Halted: ``paused`` (``Halt`` pauses the daemon; a pause from the control socket is the same,
  ``...ToHaltedAuto``), and ``stopping``;
- Error: a part's result was ``error``/``acquire`` (camera or light controller: a device
  fault); left by the next part acquired and judged (``pass``/``fail``, through any interface:
  ``ErrorToOperationalAuto``), by ``Reset`` or by ``Halt``;
- Operational: ``running`` or ``reloading``, with the automatic-mode machine:
  Initialized (no recipe prepared) -> Ready (one is) -> SingleExecution (from ``StartSingleJob``
  until that job's result is published; ``Stop``/``Abort`` return to Ready at once, the part
  itself is still judged and published: a trigger the daemon took is never withdrawn).

Methods that cannot run in the current state are not Executable (§8.1.4) and answer
Bad_NotExecutable (the Call service's code for that, OPC 10000-4). ``Halt`` always can
(§8.2.2.3). ContinuousExecution is not offered (``StartContinuous`` is never executable): a cell
that runs on its own uses the hardware line or the free-run timer, whose parts still produce
ResultReady events.
"""

from __future__ import annotations

from afrd.daemon.interfaces.opcua_mv_spec import STATES, transition_ends

MAIN = ("Preoperational", "Halted", "Error", "Operational")
DEVICE_FAULTS = ("acquire",)  # error codes of a failed camera or light controller
# SEMI E10 (SystemStateDataType values)
PRD, SBY, ENG, SDT, UDT, NST = 1, 2, 3, 4, 5, 6


class NotExecutable(Exception):
    """The method cannot run in the current state (Bad_NotExecutable)."""


class VisionModel:
    def __init__(self) -> None:
        self.main = "Preoperational"
        self.auto: str | None = None  # the automatic-mode state while Operational
        self.last: str | None = None  # last transition of each machine
        self.last_auto: str | None = None
        self.prepared: str | None = None  # the prepared recipe (afrd prepares one at a time)
        self.job: int | None = None  # the seq SingleExecution waits for
        self.stopping = False
        self.version = 0  # bumped by every transition: the OPC UA side republishes on change

    # ------------------------------------------------------------------ queries
    def executable(self, method: str) -> bool:
        if method == "Halt":
            return True
        if method == "Reset":
            return self.main in ("Halted", "Error", "Operational")
        if method == "SelectModeAutomatic":
            return self.main == "Preoperational"
        if method == "StartSingleJob":
            return self.auto == "Ready"
        if method in ("Stop", "Abort"):
            return self.auto == "SingleExecution"
        return False  # StartContinuous

    def system_state(self, in_flight: int) -> int:
        if self.main == "Operational":
            return PRD if self.auto == "SingleExecution" or in_flight > 0 else SBY
        if self.main == "Halted":
            return NST if self.stopping else SDT
        return UDT if self.main == "Error" else ENG

    # ------------------------------------------------------------------ methods
    def check(self, method: str) -> None:
        if not self.executable(method):
            state = self.main if self.auto is None else f"{self.main}/{self.auto}"
            raise NotExecutable(f"{method} is not executable in state {state}")

    def halt(self) -> None:
        if self.main != "Halted":
            self._go(f"{self.main}ToHalted")

    def reset(self) -> None:
        self.check("Reset")
        self._go(f"{self.main}ToPreoperational")

    def select_automatic(self) -> None:
        self.check("SelectModeAutomatic")
        self._go("PreoperationalToInitialized")

    def start_job(self, seq: int) -> None:
        self.check("StartSingleJob")
        self._go("ReadyToSingleExecution")
        self.job = seq

    def stop(self, abort: bool = False) -> None:
        self.check("Abort" if abort else "Stop")
        self.job = None
        self._go("SingleExecutionToReadyAbort" if abort else "SingleExecutionToReadyStop")

    def prepare(self, recipe: str) -> None:
        self.prepared = recipe
        if self.auto == "Initialized":
            self._go("InitializedToReadyRecipe")

    def unprepare(self) -> None:
        self.prepared = None
        if self.auto == "Ready":
            self._go("ReadyToInitializedRecipe")

    # ------------------------------------------------------------------ the daemon
    def observe(self, state: str, recipes: list[str] | None = None) -> None:
        """The daemon's state (and its recipes: a reload may drop the prepared one)."""
        if recipes is not None and self.prepared is not None and self.prepared not in recipes:
            self.prepared = None
            self._settle()
        self.stopping = state == "stopping"
        if state in ("paused", "stopping"):
            if self.main in ("Operational", "Error") or (self.stopping and self.main != "Halted"):
                self._go(f"{self.main}ToHaltedAuto")
        elif state in ("running", "reloading"):
            if self.main == "Halted":
                self._go("HaltedToPreoperationalAuto")
            if self.main == "Preoperational":
                self._go("PreoperationalToInitializedAuto")

    def result(self, seq: int, verdict: str, code: str | None) -> None:
        """A published result (of any trigger)."""
        if self.job == seq:
            self.job = None
            if self.auto == "SingleExecution":
                self._go("SingleExecutionToReadyAuto")
        if verdict == "error" and code in DEVICE_FAULTS and self.main == "Operational":
            self._go("OperationalToErrorAuto")
        elif verdict in ("pass", "fail") and self.main == "Error":
            self._go("ErrorToOperationalAuto")

    # ------------------------------------------------------------------ transitions
    def _go(self, name: str) -> None:
        src, dst = transition_ends(name)
        here = self.auto if STATES[src][0] == "VisionAutomaticModeStateMachineType" else self.main
        assert here == src, f"{name} from {here}"  # a bug in this module, never a client's
        if src in MAIN:
            self.main, self.last = ("Operational" if dst not in MAIN else dst), name
            self.auto = (
                dst if dst not in MAIN else ("Initialized" if dst == "Operational" else None)
            )
            if dst == "Operational" or dst not in MAIN:
                self.last_auto = None
        else:
            self.auto, self.last_auto = dst, name
        self.version += 1
        self._settle()

    def _settle(self) -> None:
        """The automatic transitions that follow from the prepared recipe."""
        if self.auto == "Initialized" and self.prepared is not None:
            self._go("InitializedToReadyAuto")
        elif self.auto == "Ready" and self.prepared is None:
            self._go("ReadyToInitializedAuto")
