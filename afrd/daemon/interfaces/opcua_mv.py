"""OPC UA for Machine Vision (OPC 40100-1): the ``VisionSystem`` object beside ``Cell`` on the
same server (``[opcua] machine_vision = true``), for clients that speak the standard.

Address space (browse names in the MV namespace ``http://opcfoundation.org/UA/MachineVision``
unless ``0:``; find the object by its type, VisionSystemType, under Objects)::

    VisionSystem                                    VisionSystemType
        VisionStateMachine                          0:CurrentState, 0:LastTransition,
            Halt, Reset, SelectModeAutomatic        (each with 0:Id and 0:Number)
            AutomaticModeStateMachine               0:CurrentState, 0:LastTransition,
                StartSingleJob, StartContinuous, Stop, Abort
        RecipeManagement                            GetRecipeListFiltered, PrepareRecipe,
                                                    UnprepareRecipe
        ResultManagement                            GetResultById, GetResultComponentsById,
                                                    GetResultListFiltered; afrd:ResultsEvicted
        ConfigurationManagement                     ActiveConfiguration, ActivateConfiguration,
                                                    GetConfigurationById, GetConfigurationList
        SystemState (SEMI E10), DiagnosticLevel

and a ResultReadyEvent from VisionSystem for every published result (of any trigger).

The state machines are ``opcua_mv_state``; the methods' argument checks and the management
methods ``opcua_mv_methods``; the store ``opcua_mv_results``; the types ``opcua_mv_types``.
Everything runs on the OPC UA server's loop: method calls change the model at once (the next
call sees it); what clients read and the events go through the server's one writer task, in
order with ``Cell``'s updates (``OpcUaServer._writer``).
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from asyncua import Server, ua

from afrd.daemon.interfaces.base import Hooks
from afrd.daemon.interfaces.control import check_name
from afrd.daemon.interfaces.opcua_mv_methods import (
    ERR_NOT_INSPECTED,
    ERR_NOT_PREPARED,
    OK,
    Management,
    Refused,
    ident,
    wrap,
)
from afrd.daemon.interfaces.opcua_mv_results import ResultStore
from afrd.daemon.interfaces.opcua_mv_spec import METHODS, STATES, TRANSITIONS
from afrd.daemon.interfaces.opcua_mv_state import VisionModel
from afrd.daemon.interfaces.opcua_mv_types import (
    MvTypes,
    add_method,
    add_typed_object,
    build_types,
    event_generator,
    retype,
)
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.opcua")

_STATE_VAR, _TRANSITION_VAR = 2760, 2767  # FiniteStateVariableType, FiniteTransitionVariableType
# the state machines' methods, whose Executable attribute follows the state
_CONTROL = "Halt Reset SelectModeAutomatic StartSingleJob StartContinuous Stop Abort".split()
_MAX_PENDING = 10_000  # MeasIds kept for jobs whose result has not come (each gets one)


class MachineVision:
    """The VisionSystem object; ``OpcUaServer`` builds it, feeds it results and status, and
    runs what it returns on its writer task."""

    def __init__(self, hooks: Hooks, cell: str, results: int) -> None:
        if hooks.pause is None or hooks.resume is None:  # Halt, Reset, SelectModeAutomatic
            raise RuntimeError("MachineVision needs Hooks.pause and Hooks.resume")
        self.hooks, self.cell = hooks, cell
        self.started = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        self.model = VisionModel()
        self.store = ResultStore(results, self.started)
        self.recipe_names: list[str] = []
        self.single_recipe = True  # no [[product]]: any product is a label of the one recipe
        self.default = hooks.default_product  # the recipe prepared at start
        self.t: MvTypes | None = None
        self.srv: Server | None = None
        self.nodes: dict[str, Any] = {}
        self._meas: dict[int, Any] = {}  # seq -> the MeasId StartSingleJob was given
        self._published: tuple | None = None
        self._in_flight = 0  # parts in the pipeline at the last status poll (SystemState)
        self._event: Any = None
        self.guard: Any = lambda _name, fn: fn  # the role check: opcua_roles.method_guard

    # ---------------------------------------------------------------- building
    async def build(self, srv: Server, afrd_ns: int) -> None:
        self.srv = srv
        self.t = t = await build_types(srv)
        self._recipes(self.hooks.status())
        self.model.prepare(self.default)
        ns, n = afrd_ns, self.nodes

        async def obj(parent: Any, key: str, name: str, typename: str) -> Any:
            node = await add_typed_object(
                srv,
                parent.nodeid,
                ua.NodeId(key, ns),
                ua.QualifiedName(name, ns if key == "VisionSystem" else t.ns),  # ours / the spec's
                t.nodes[typename],
            )
            n[key] = node
            return node

        vs = await obj(srv.nodes.objects, "VisionSystem", "VisionSystem", "VisionSystemType")
        vsm = await obj(
            vs, "VisionSystem.VisionStateMachine", "VisionStateMachine", "VisionStateMachineType"
        )
        auto = await obj(
            vsm,
            "VisionSystem.AutomaticMode",
            "AutomaticModeStateMachine",
            "VisionAutomaticModeStateMachineType",
        )
        for machine, key in ((vsm, "Main"), (auto, "Auto")):
            await self._state_vars(machine, key, ns)
        handlers = {
            "Halt": self._halt,
            "Reset": self._reset,
            "SelectModeAutomatic": self._select_automatic,
            "StartSingleJob": self._start_single_job,
            "StartContinuous": self._start_continuous,
            "Stop": lambda _c, _d: self._stop(abort=False),
            "Abort": lambda _c, _d: self._stop(abort=True),
        }
        mgmt = Management(
            self.model, self.store, lambda: self.recipe_names, self.cell, self.started
        )
        handlers.update(mgmt.handlers())
        parents = {"VisionStateMachineType": vsm, "VisionAutomaticModeStateMachineType": auto}
        for typename, key, name in (
            ("RecipeManagementType", "VisionSystem.RecipeManagement", "RecipeManagement"),
            ("ResultManagementType", "VisionSystem.ResultManagement", "ResultManagement"),
            (
                "ConfigurationManagementType",
                "VisionSystem.ConfigurationManagement",
                "ConfigurationManagement",
            ),
        ):
            parents[typename] = await obj(vs, key, name, typename)
        for name, (typename, *_rest) in METHODS.items():
            parent = parents[typename]
            fn = self.guard(name, wrap(t, name, self._kicking(handlers[name])))
            key = f"{parent.nodeid.Identifier}.{name}"
            n[name] = await add_method(
                t, parent, ua.NodeId(key, ns), name, fn, METHODS[name][5], METHODS[name][6]
            )
        await self._variables(vs, parents, mgmt)
        self._event = await event_generator(srv, t.nodes["ResultReadyEventType"], vs)
        await self.publish()

    async def _variables(self, vs: Any, parents: dict, mgmt: Management) -> None:
        """ActiveConfiguration, SystemState, DiagnosticLevel and afrd:ResultsEvicted."""
        t, ns, n = self.t, self.nodes["VisionSystem"].nodeid.NamespaceIndex, self.nodes
        ext = ua.VariantType.ExtensionObject
        for key, parent, name, value, datatype in (
            (
                "ActiveConfiguration",
                parents["ConfigurationManagementType"],
                "ActiveConfiguration",
                ua.Variant(mgmt.config, ext),
                t.nodes["ConfigurationDataType"],
            ),
            (
                "SystemState",
                vs,
                "SystemState",
                ua.Variant(self._system_state(self.model.system_state(0)), ext),
                t.nodes["SystemStateDescriptionDataType"],
            ),
            # clients may set it (§7.1); afrd sends no diagnostic events, so it only keeps it
            (
                "DiagnosticLevel",
                vs,
                "DiagnosticLevel",
                ua.Variant(500, ua.VariantType.UInt16),
                None,
            ),
        ):
            nid = ua.NodeId(f"{parent.nodeid.Identifier}.{name}", ns)
            n[key] = await parent.add_variable(
                nid, ua.QualifiedName(name, t.ns), value, datatype=datatype
            )
        await n["DiagnosticLevel"].set_writable()
        rm = parents["ResultManagementType"]
        n["ResultsEvicted"] = await rm.add_variable(  # afrd's own: the store's evictions
            ua.NodeId(f"{rm.nodeid.Identifier}.ResultsEvicted", ns),
            ua.QualifiedName("ResultsEvicted", ns),
            ua.Variant(0, ua.VariantType.UInt32),
        )

    async def _state_vars(self, machine: Any, key: str, ns: int) -> None:
        """CurrentState and LastTransition with their Id and Number properties."""
        base = machine.nodeid.Identifier
        for var, typedef, props in (
            ("CurrentState", _STATE_VAR, ("Id", "Number")),
            ("LastTransition", _TRANSITION_VAR, ("Id", "Number", "TransitionTime")),
        ):
            v = await machine.add_variable(
                ua.NodeId(f"{base}.{var}", ns),
                ua.QualifiedName(var, 0),
                ua.Variant(ua.LocalizedText("")),
            )
            await retype(v, typedef)
            self.nodes[f"{key}.{var}"] = v
            for prop in props:
                vt = {"Id": ua.VariantType.NodeId, "Number": ua.VariantType.UInt32}.get(
                    prop, ua.VariantType.DateTime
                )
                init = {"Id": ua.NodeId(), "Number": 0}.get(prop, ua.get_win_epoch())
                p = await v.add_property(
                    ua.NodeId(f"{base}.{var}.{prop}", ns),
                    ua.QualifiedName(prop, 0),
                    ua.Variant(init, vt),
                )
                self.nodes[f"{key}.{var}.{prop}"] = p

    # ---------------------------------------------------------------- daemon side (loop)
    def result(self, msg: dict) -> Any:
        """A published result: stored, the state machines told; returns the writer's work."""
        seq = int(msg.get("seq", 0))
        product = str(msg.get("product", ""))
        recipe = self.default if self.single_recipe else product
        r = self.store.add(msg, recipe, self.cell, self._meas.pop(seq, None))
        self.model.result(seq, str(msg.get("verdict", "")), (msg.get("error") or {}).get("code"))
        return lambda: self._emit(r)

    def status(self, st: dict) -> Any:
        """The polled daemon status; the writer's work when something changed, else None."""
        self._recipes(st)
        self._in_flight = int(st.get("in_flight") or 0)
        self.model.observe(str(st.get("state", "starting")), self.recipe_names)
        return self.publish if self._snapshot() != self._published else None

    # ---------------------------------------------------------------- writer side
    async def _emit(self, r: Any) -> None:
        await self.publish()
        ev = self._event.event
        for name in (
            "ResultId",
            "IsPartial",
            "ResultState",
            "JobId",
            "PartId",
            "ProductId",
            "CreationTime",
            "ExternalRecipeId",
            "InternalRecipeId",
            "InternalConfigurationId",
            "ProcessingTimes",
            "ResultContent",
        ):
            setattr(ev, name, getattr(r, name))
        ev.MeasId = r.MeasId or ua.MeasIdDataType(Id="")
        await self._event.trigger(message=f"result {r.ResultId.Id}")

    def _snapshot(self) -> tuple:
        m = self.model
        return (m.version, m.system_state(self._in_flight), self.store.evicted)

    async def publish(self) -> None:
        """Mirror the model into the variables and the methods' Executable attributes (only
        what changed: every write notifies each client monitoring the node)."""
        snap, old = self._snapshot(), self._published or (None, None, None)
        self._published = snap
        if snap[0] != old[0]:
            await self._publish_states()
        if snap[1] != old[1]:
            value = ua.Variant(self._system_state(snap[1]), ua.VariantType.ExtensionObject)
            await self._write("SystemState", value)
        if snap[2] != old[2]:
            evicted = ua.Variant(min(snap[2], 0xFFFFFFFF), ua.VariantType.UInt32)
            await self._write("ResultsEvicted", evicted)

    async def _publish_states(self) -> None:
        m, srv, n, t = self.model, self.srv, self.nodes, self.t
        now = _dt.datetime.now(_dt.timezone.utc)
        u32 = ua.VariantType.UInt32
        for key, state, last in (("Main", m.main, m.last), ("Auto", m.auto, m.last_auto)):
            if state is None:  # §8.1.2: an inactive sub-state machine's CurrentState
                bad = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadStateNotActive))
                for var in ("CurrentState", "LastTransition"):
                    await srv.write_attribute_value(n[f"{key}.{var}"].nodeid, bad)
                continue
            await self._write(f"{key}.CurrentState", ua.LocalizedText(state))
            await self._write(f"{key}.CurrentState.Id", t.nodes[state])
            await self._write(f"{key}.CurrentState.Number", ua.Variant(STATES[state][2], u32))
            if last is not None:
                await self._write(f"{key}.LastTransition", ua.LocalizedText(last))
                await self._write(f"{key}.LastTransition.Id", t.nodes[last])
                num = ua.Variant(TRANSITIONS[last][1], u32)
                await self._write(f"{key}.LastTransition.Number", num)
                await self._write(f"{key}.LastTransition.TransitionTime", now)
        for name in _CONTROL:
            dv = ua.DataValue(ua.Variant(m.executable(name), ua.VariantType.Boolean))
            for attr in (ua.AttributeIds.Executable, ua.AttributeIds.UserExecutable):
                await srv.write_attribute_value(n[name].nodeid, dv, attr)

    async def _write(self, key: str, value: Any) -> None:
        v = value if isinstance(value, ua.Variant) else ua.Variant(value)
        await self.srv.write_attribute_value(self.nodes[key].nodeid, ua.DataValue(v))

    # ---------------------------------------------------------------- control methods
    def _kicking(self, fn: Any) -> Any:
        """``fn``, then the state republished (through the writer, like every update)."""

        def call(*args: Any) -> list:
            out = fn(*args)
            self.kick()
            return out

        return call

    def kick(self) -> None:
        """Set by OpcUaServer: queue ``publish`` on its writer."""

    def _halt(self, cause: int, text: str) -> list:
        log.info("opcua: Halt (cause %d %r): pausing inspection", cause, text)
        self.hooks.pause()
        self.model.halt()
        return [OK]

    def _reset(self, cause: int, text: str) -> list:
        self.model.check("Reset")
        log.info(
            "opcua: Reset (cause %d %r): inspection paused until SelectModeAutomatic", cause, text
        )
        self.hooks.pause()
        self.model.reset()
        return [OK]

    def _select_automatic(self) -> list:
        self.model.check("SelectModeAutomatic")
        log.info("opcua: SelectModeAutomatic: resuming inspection")
        self.hooks.resume()
        self.model.select_automatic()
        return [OK]

    def _start_continuous(self, *_args: Any) -> list:
        self.model.check("StartContinuous")  # never executable: see opcua_mv_state
        return []

    def _stop(self, abort: bool) -> list:
        self.model.stop(abort)
        return [OK]

    def _start_single_job(
        self, meas: Any, part: Any, recipe: Any, product: Any, params: Any
    ) -> list:
        self.model.check("StartSingleJob")
        if params:
            raise Refused("BadInvalidArgument", "afrd recipes take no parameters", 4)
        part_id = ident(part) or None
        try:
            if part_id is not None:
                check_name(part_id, "PartId")
        except AfrdError as exc:
            raise Refused("BadInvalidArgument", str(exc), 1) from None
        name = self._job_product(ident(recipe), ident(product))
        if name is None:
            return [ua.JobIdDataType(Id=""), ERR_NOT_PREPARED]
        try:
            reply = self.hooks.trigger(part_id, name)
        except AfrdError as exc:  # the daemon is stopping: nothing was triggered
            raise Refused("BadInvalidState", str(exc)) from None
        self.model.start_job(reply.seq)
        if ident(meas) and len(self._meas) < _MAX_PENDING:
            self._meas[reply.seq] = meas
        job = ua.JobIdDataType(Id=self.store.job_id(reply.seq))
        return [job, OK if reply.error is None else ERR_NOT_INSPECTED]

    def _job_product(self, recipe: str, product: str) -> str | None:
        """The product a job is triggered with: the prepared recipe's (§8.3.7.1: a named recipe
        or product must be the prepared one); a one-recipe cell takes any product label."""
        prepared = self.model.prepared
        if recipe and recipe != prepared:
            return None
        if self.single_recipe:
            return product or self.hooks.default_product
        return prepared if not product or product == prepared else None

    # ---------------------------------------------------------------- helpers
    def _recipes(self, st: dict) -> None:
        names = sorted((st.get("recipes") or {}).keys())
        self.single_recipe = not names
        self.default = str(st.get("default_product") or self.hooks.default_product)
        self.recipe_names = names or [self.default]

    def _system_state(self, code: int) -> Any:
        return ua.SystemStateDescriptionDataType(State=ua.SystemStateDataType(code))
