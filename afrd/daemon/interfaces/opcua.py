"""OPC UA server (asyncua): the cell's last result, counters and state, and a Trigger method.

Address space (namespace URI ``opcua.namespace``, default ``urn:afrd:inspection``; resolve its
index by URI, string node ids are stable; the README has the table)::

    Objects/Cell                       s=Cell
        CellId, State, Model, Threshold            s=Cell.<name>
        LastResult/                                s=Cell.LastResult
            PartId, Product, Seq, Verdict, Score,  s=Cell.LastResult.<name>
            Threshold, Timestamp, ErrorCode, ErrorMessage
        Counters/ Parts, Pass, Fail, Error         s=Cell.Counters.<name>
        Trigger(PartId: String, Product: String) -> (Seq: UInt32, PartId: String)  s=Cell.Trigger
        SetThreshold(Threshold: Double, Product: String, Persist: Boolean, Reason: String)
            -> (Threshold: Double)                                    s=Cell.SetThreshold
        ShadowStart(Bundle, Product), ShadowStop(), ShadowStatus(), Promote(Persist),
            Rollback(Product, Persist) -> (Result: String)            s=Cell.<name>
            (``opcua_models``: the shadow run, promote and rollback commands)
    Objects/VisionSystem               with ``machine_vision``: OPC 40100-1 (``opcua_mv``)

Every variable is read-only to clients. Every published result (of any trigger) updates
LastResult on the server's loop, Seq last, through one writer task that applies the results in
their order, one whole result at a time: two results never interleave, so a client that sees
Seq change has already been sent that result's other values. (A Read of several nodes is
consistent too, as long as asyncua's value write does not yield to the loop: it only queues
notifications; should an asyncua release change that, the writer logs it once.) ``Trigger``
with an empty PartId lets the cell number the part and an empty Product means
``trigger.product``; it returns the part's Seq, or BadInvalidArgument (wrong type or count of
arguments, an unusable name: nothing is triggered) or BadInvalidState (paused, overrun,
stopping: the part's ``error`` result is still published with that Seq).

Security: endpoints for the configured modes (None, Basic256Sha256 Sign, SignAndEncrypt) with
the server's certificate and key; ``trusted_clients_dir`` limits secured endpoints to those
client certificates; ``users_file`` requires a user name and password (no anonymous login).
Clients never get asyncua's admin role (they cannot add or delete nodes). Each method needs
afrd's role for it (``opcua_roles``: the users file's role column, else ``access.opcua_role``;
SetThreshold and the model methods are an engineer's), else Bad_UserAccessDenied; changes go to
the audit log. At most ``opcua.max_connections`` TCP connections are served at once
(``ConnectionGuard``); one that sends nothing within ``opcua.hello_timeout_s`` is closed, and
asyncua closes one that opens no session within 30 s (its ``max_pending_activation_seconds``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import math
from typing import Any

from asyncua import Server, ua

from afrd.config.plc import OpcUaConfig, trusted_certificates
from afrd.config.plcusers import load_user_entries
from afrd.daemon.interfaces.base import Hooks
from afrd.daemon.interfaces.loop import ConnectionGuard, LoopThread
from afrd.daemon.interfaces.opcua_models import add_model_methods
from afrd.daemon.interfaces.opcua_roles import (
    Permissions,
    Users,
    add_set_threshold,
    argument,
    guarded,
    method_guard,
)
from afrd.errors import AfrdError, ConfigError

log = logging.getLogger("afrd.daemon.opcua")  # the name the journal has always shown

VT = ua.VariantType
# name -> (variant type, initial value)
CELL_VARS = {
    "CellId": (VT.String, ""),
    "State": (VT.String, "starting"),
    "Model": (VT.String, ""),
    "Threshold": (VT.Double, math.nan),
}
RESULT_VARS = {
    "PartId": (VT.String, ""),
    "Product": (VT.String, ""),
    "Seq": (VT.UInt32, 0),
    "Verdict": (VT.String, ""),
    "Score": (VT.Double, math.nan),
    "Threshold": (VT.Double, math.nan),
    "Timestamp": (VT.DateTime, _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)),
    "ErrorCode": (VT.String, ""),
    "ErrorMessage": (VT.String, ""),
}
COUNTER_VARS = {name: (VT.UInt32, 0) for name in ("Parts", "Pass", "Fail", "Error")}
_UNSET = object()
_MODES = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign_and_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class OpcUaServer(LoopThread):
    """The ``[opcua]`` server; results and method calls run on its own event loop."""

    name = "opcua"

    def __init__(
        self, cfg: OpcUaConfig, hooks: Hooks, cell: str, default_role: str = "operator"
    ) -> None:
        guard = ConnectionGuard(self.name, cfg.max_connections, hello_timeout_s=cfg.hello_timeout_s)
        super().__init__(hooks, cfg.host, cfg.port, guard)
        self.cfg = cfg
        self.cell = cell
        self.default_role = default_role  # users without a role in the file, anonymous ones
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[str, Any] = {}
        self.vtypes: dict[str, ua.VariantType] = {}
        self._written: dict[str, Any] = {}  # what each variable was last set to
        self._counts = {"pass": 0, "fail": 0, "error": 0}
        self._last_state: tuple | None = None
        self._updates: asyncio.Queue[Any] = asyncio.Queue()  # for _writer only: values or work
        self._writer_task: asyncio.Task | None = None
        self._yield_logged = False
        self.mv = None  # opcua_mv.MachineVision with [opcua] machine_vision
        if cfg.machine_vision:
            from afrd.daemon.interfaces.opcua_mv import MachineVision

            self.mv = MachineVision(hooks, cell, cfg.machine_vision_results)
            self.mv.guard = method_guard(hooks, lambda: self.mv.model.prepared)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.where}/afrd/"

    # ---------------------------------------------------------------- serving
    async def _serve(self) -> None:
        cfg = self.cfg
        users = load_user_entries(cfg.users_file) if cfg.users_file is not None else None
        trusted = trusted_certificates(cfg.trusted_clients_dir) if cfg.trusted_clients_dir else None
        srv = Server(user_manager=Users(users, self.default_role))
        await srv.init()
        srv.allow_remote_admin(False)
        srv.set_server_name(f"afrd {self.cell}")
        await srv.set_application_uri(f"urn:afrd:{self.cell}")
        srv.set_endpoint(self.endpoint)
        srv.set_security_policy([_MODES[m] for m in cfg.security], Permissions())
        srv.set_identity_tokens(
            [ua.UserNameIdentityToken] if users is not None else [ua.AnonymousIdentityToken]
        )
        if cfg.certificate is not None and cfg.private_key is not None:
            for key, path, load in (
                ("certificate", cfg.certificate, srv.load_certificate),
                ("private_key", cfg.private_key, srv.load_private_key),
            ):
                try:
                    await load(path)
                except Exception as exc:
                    raise ConfigError(f"opcua.{key}: cannot load {path}: {exc}") from None
        if trusted is not None:
            srv.set_certificate_validator(self._validator(trusted))
        self.ns = await srv.register_namespace(cfg.namespace)
        await self._build(srv)
        if self.mv is not None:  # its namespace and types after afrd's (index 3)
            await self.mv.build(srv, self.ns)
            self.mv.kick = lambda: self._updates.put_nowait(self.mv.publish)
        self.server = srv
        # asyncua logs its own traceback before it raises (a port in use): the daemon says it
        # in one line (LoopThread.start); any other failure still shows in full at debug level
        quiet = logging.getLogger("asyncua.server.server")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL if log.getEffectiveLevel() > logging.DEBUG else level)
        try:
            await srv.start()
        finally:
            quiet.setLevel(level)
        self._writer_task = asyncio.get_running_loop().create_task(self._writer())

    @staticmethod
    def _validator(trusted: set[bytes]) -> Any:
        from cryptography.hazmat.primitives.serialization import Encoding

        async def validate(cert: Any, _app: Any) -> None:
            if cert.public_bytes(Encoding.DER) not in trusted:
                log.warning("opcua: untrusted client certificate %s refused", cert.subject)
                raise ua.UaStatusCodeError(ua.StatusCodes.BadCertificateUntrusted)

        return validate

    async def _build(self, srv: Server) -> None:
        ns = self.ns
        cell = await srv.nodes.objects.add_object(ua.NodeId("Cell", ns), f"{ns}:Cell")
        groups = (("", cell, CELL_VARS),)
        res = await cell.add_object(ua.NodeId("Cell.LastResult", ns), f"{ns}:LastResult")
        cnt = await cell.add_object(ua.NodeId("Cell.Counters", ns), f"{ns}:Counters")
        groups += (("LastResult.", res, RESULT_VARS), ("Counters.", cnt, COUNTER_VARS))
        for prefix, parent, table in groups:
            for name, (vt, init) in table.items():
                key = prefix + name
                node = await parent.add_variable(
                    ua.NodeId(f"Cell.{key}", ns), f"{ns}:{name}", ua.Variant(init, vt)
                )
                self.nodes[key] = node
                self.vtypes[key] = vt
        await self._set({"CellId": self.cell})
        inputs = [
            argument("PartId", "part id; empty: the cell numbers the part"),
            argument("Product", "product (recipe) name; empty: trigger.product"),
        ]
        outputs = [
            argument("Seq", "the part's sequence number", VT.UInt32),
            argument("PartId", "the part id its result will carry"),
        ]
        trigger = guarded("Trigger", self._trigger, self.hooks)
        await cell.add_method(
            ua.NodeId("Cell.Trigger", ns), f"{ns}:Trigger", trigger, inputs, outputs
        )
        await add_set_threshold(cell, ns, self.hooks)
        await add_model_methods(cell, ns, self.hooks)

    async def _stop(self) -> None:
        if self.server is not None:
            self._updates.put_nowait({"State": "stopping"})
            try:  # the results handed over before close() are applied first
                await asyncio.wait_for(self._updates.join(), 5.0)
            except asyncio.TimeoutError:  # builtins.TimeoutError only from 3.11
                log.error("opcua: %d updates not applied at stop", self._updates.qsize())
            if self._writer_task is not None:
                self._writer_task.cancel()
            await self.server.stop()

    # ---------------------------------------------------------------- values
    async def _writer(self) -> None:
        """The one task that writes values once the server runs: updates (results, state) are
        applied in the order they were queued, each whole before the next begins. An update is
        Cell's values, or the Machine Vision object's work (a coroutine function)."""
        while True:
            values = await self._updates.get()
            if callable(values):
                try:
                    await values()
                except Exception:
                    log.exception("opcua: Machine Vision update not applied")
                finally:
                    self._updates.task_done()
                continue
            yielded: list[bool] = []
            probe = self.loop.call_soon(yielded.append, True)  # runs only if _set yields
            try:
                await self._set(values)
            except Exception:
                log.exception("opcua: update of %s not applied", sorted(values))
            finally:
                probe.cancel()
                self._updates.task_done()
            if yielded and not self._yield_logged:
                self._yield_logged = True
                log.warning(
                    "opcua: asyncua yielded while writing one result: a client's Read of "
                    "several nodes may mix two results (subscriptions and Seq-last still hold)"
                )

    async def _set(self, values: dict[str, Any]) -> None:
        """Write the values that changed (each write costs every client monitoring the node a
        copy and a notification; unchanged ones would notify nobody)."""
        srv = self.server
        for key, v in values.items():
            old = self._written.get(key, _UNSET)
            if old is not _UNSET and (old == v or (v != v and old != old)):  # NaN == NaN here
                continue
            self._written[key] = v
            node = self.nodes[key]
            dv = ua.DataValue(ua.Variant(v, self.vtypes[key]))
            if srv is not None:
                await srv.write_attribute_value(node.nodeid, dv)
            else:  # while building, before the server runs
                await node.write_value(dv)

    def _on_result(self, msg: dict) -> None:
        verdict = msg.get("verdict", "")
        if verdict in self._counts:
            self._counts[verdict] += 1
        c = self._counts
        err = msg.get("error") or {}
        score, thr = msg.get("score"), msg.get("threshold")
        try:
            ts = _dt.datetime.fromisoformat(str(msg.get("timestamp", "")).replace("Z", "+00:00"))
        except ValueError:
            ts = _dt.datetime.now(_dt.timezone.utc)
        values = {
            "LastResult.PartId": str(msg.get("part_id", "")),
            "LastResult.Product": str(msg.get("product", "")),
            "LastResult.Verdict": str(verdict),
            "LastResult.Score": math.nan if score is None else float(score),
            "LastResult.Threshold": math.nan if thr is None else float(thr),
            "LastResult.Timestamp": ts,
            "LastResult.ErrorCode": str(err.get("code", "")),
            "LastResult.ErrorMessage": str(err.get("message", ""))[:1000],
            "Counters.Parts": sum(c.values()),
            "Counters.Pass": c["pass"],
            "Counters.Fail": c["fail"],
            "Counters.Error": c["error"],
            "LastResult.Seq": int(msg.get("seq", 0)) & 0xFFFFFFFF,  # last: the change to watch
        }
        self._updates.put_nowait(values)
        if self.mv is not None:
            self._updates.put_nowait(self.mv.result(msg))

    async def _tick(self) -> None:
        st = self.hooks.status()
        model = st.get("model") or {}
        thr = st.get("threshold")
        now = (
            str(st.get("state", "starting")),
            str(model.get("name", "")) if isinstance(model, dict) else str(model),
            math.nan if thr is None else float(thr),
        )
        if now != self._last_state:
            self._last_state = now
            self._updates.put_nowait(dict(zip(("State", "Model", "Threshold"), now, strict=True)))
        if self.mv is not None and (work := self.mv.status(st)) is not None:  # after Cell's
            self._updates.put_nowait(work)

    # ---------------------------------------------------------------- Trigger method
    async def _trigger(self, _parent: Any, *args: Any) -> Any:
        bad = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        good = ua.StatusCode()
        if len(args) != 2:
            code = (
                ua.StatusCodes.BadArgumentsMissing
                if len(args) < 2
                else ua.StatusCodes.BadTooManyArguments
            )
            return ua.CallMethodResult(StatusCode=ua.StatusCode(code))
        ok = [
            isinstance(a, ua.Variant)
            and a.VariantType == VT.String
            and isinstance(a.Value, (str, type(None)))
            for a in args
        ]
        if not all(ok):
            return ua.CallMethodResult(
                StatusCode=bad,
                InputArgumentResults=[
                    good if o else ua.StatusCode(ua.StatusCodes.BadTypeMismatch) for o in ok
                ],
            )
        part_id, product = (a.Value or None for a in args)
        try:
            reply = self.hooks.trigger(part_id, product or self.hooks.default_product)
        except AfrdError as exc:
            log.warning("opcua: Trigger refused: %s", exc)
            return ua.CallMethodResult(StatusCode=bad, InputArgumentResults=[good, good])
        if reply.error is not None:
            log.info("opcua: Trigger seq %d not inspected: %s", reply.seq, reply.error[1])
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        return [ua.Variant(reply.seq & 0xFFFFFFFF, VT.UInt32), ua.Variant(reply.part_id, VT.String)]
