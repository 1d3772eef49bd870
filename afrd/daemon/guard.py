"""The daemon's commands run for someone: the role check first, the audit record after.

Every way into a command goes through :meth:`Guard.run`: the control socket (each request, with
the caller it identified), the PLC servers' hooks (OPC UA's SetThreshold, Machine Vision's
Halt/Reset/SelectModeAutomatic, run for the session's user: :meth:`Guard.call`) and SIGHUP. A
caller without the role the command needs (``afrd.daemon.roles``) is refused before the
handler runs, with :class:`~afrd.daemon.roles.Forbidden`, and the refusal is recorded. A
change that ran is recorded with its value before and after (a command answered later, a
reload, when its future is done), one that raised as ``failed`` with the error.

Each record also goes to the journal (logger ``afrd.daemon.audit``), so a log file that
cannot be written (a full disk) loses nothing the journal keeps. The configured log must be
usable at start (exit 2 naming ``access.audit_log``); the default one, when its folder is not
there (a daemon run by hand, not by the unit), is reported once and the journal keeps the
records.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from afrd.audit import AuditError, AuditLog
from afrd.audit import record as make_record
from afrd.config.roles import AccessConfig
from afrd.daemon.roles import (
    CALLER,
    READ_ONLY,
    BadRequest,
    Caller,
    Forbidden,
    acting,
    allowed,
    needed,
    reason_of,
)

log = logging.getLogger("afrd.daemon.audit")
LABELS = (0, 1, None)
ID_CHARS = 1024


def _paused(svc: Any, _req: dict, _out: Any = None) -> str:
    return "paused" if svc.pipeline.paused else "running"


def _model_of(product: str | None, svc: Any) -> dict:
    recipe = svc.pipeline.book.get(product)
    return {"model": recipe.runtime.model_name, "threshold": recipe.threshold}


def _model(svc: Any, _req: dict, _out: Any = None) -> dict:
    """A reload's: the default recipe's model (every product's may change)."""
    return _model_of(None, svc)


def _shadowed(svc: Any, _req: dict) -> dict:
    """Before a promote: the model of the product the shadow run compares against."""
    run = getattr(svc, "shadow", None)
    return _model_of(run.recipe if run is not None else None, svc)


def _requested(svc: Any, req: dict) -> dict:
    """Before a rollback: the model of the product it names (None: the cell's default)."""
    return _model_of(req.get("product"), svc)


def _changed(svc: Any, _req: dict, out: Any = None) -> dict:
    """After a promote or a rollback: the model of the product it changed."""
    return _model_of(out.get("product") if isinstance(out, dict) else None, svc)


def _threshold_before(svc: Any, req: dict) -> float | None:
    try:
        return svc.pipeline.book.get(req.get("product")).threshold
    except Exception:  # an unknown product: the handler refuses it and says why
        return None


def _result(_svc: Any, _req: dict, out: Any = None) -> Any:
    return out


def _read(view: Callable, *args: Any) -> Any:
    try:
        return view(*args)
    except Exception as exc:  # a view that cannot read the value: say so, record the rest
        return f"(not read: {type(exc).__name__})"


# command -> (value before, value after from the handler's result); others: (None, result)
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "set_threshold": (_threshold_before, lambda _s, _r, out: out.get("threshold")),
    "pause": (_paused, _paused),
    "resume": (_paused, _paused),
    "reload": (_model, _model),
    "promote": (_shadowed, _changed),
    "rollback": (_requested, _changed),
    "audit_label": (lambda _s, req: req.get("old"), lambda _s, req, _out: req.get("new")),
}
# the record's "what" where it is not the command's name
WHAT = {"audit_label": "label"}


def audit_label(req: dict) -> dict:
    """``audit_label {id, old, new}``: a label a client (the page) wrote into a capture; the
    guard records it. Refused (and recorded as failed) when malformed."""
    cid = req.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= ID_CHARS or not cid.isprintable():
        raise BadRequest(f"audit_label: id must be a capture id of 1-{ID_CHARS} characters")
    for key in ("old", "new"):
        if key not in req or req[key] not in LABELS or isinstance(req[key], bool):
            raise BadRequest(f"audit_label: {key} must be 0 (good), 1 (defective) or null")
    return {"recorded": True}


@dataclasses.dataclass
class _Change:
    """A change under way: what its record will say."""

    caller: Caller
    what: str
    target: str | None
    req: dict
    old: Any
    reason: str | None
    after: Callable


class Guard:
    """The role check and audit around ``service``'s commands (``service.commands``, its
    ``pipeline``); ``audit`` None: the journal only."""

    def __init__(self, service: Any, audit: AuditLog | None) -> None:
        self.service, self.audit = service, audit

    @classmethod
    def open(cls, service: Any, access: AccessConfig) -> Guard:
        audit = access.audit()
        why = audit.problem()
        if why is not None:
            if access.audit_log is not None:
                audit.check()  # configured, so meant: exit 2 naming the key
            log.error(
                "audit log %s not usable (%s): changes are recorded in the journal only; set "
                "access.audit_log in the cell config",
                audit.path,
                why,
            )
            return cls(service, None)
        log.info("audit log: %s", audit.path)
        return cls(service, audit)

    def call(self, cmd: str, req: dict) -> Any:
        """``cmd`` run for the current caller (an interface's hook, on its own thread)."""
        return self.run(cmd, self.service.commands[cmd], req, CALLER.get())

    def run(self, cmd: str, handler: Callable[[dict], Any], req: dict, caller: Caller) -> Any:
        """``handler(req)`` for ``caller``: Forbidden (recorded) without the role ``cmd``
        needs; the change recorded when it ran; a Future's when it is done."""
        reason = reason_of(req)
        what = WHAT.get(cmd, cmd)
        target = self._target(cmd, req)
        need = needed(cmd)
        if not allowed(caller, need):
            self.record(caller, what, "refused", target=target, needs=need, reason=reason)
            raise Forbidden(cmd, caller, need)
        if cmd in READ_ONLY:
            with acting(caller):
                return handler(req)
        before, after = VIEWS.get(cmd, (lambda _s, _r: None, _result))
        change = _Change(caller, what, target, req, _read(before, self.service, req), reason, after)
        try:
            with acting(caller):
                out = handler(req)
        except Exception as exc:
            self.failed(change, exc)
            raise
        if isinstance(out, Future):
            out.add_done_callback(functools.partial(self._deferred, change))
        else:
            self.done(change, out)
        return out

    def _deferred(self, change: _Change, fut: Future) -> None:
        if fut.cancelled():
            self.failed(change, RuntimeError("cancelled: the daemon is stopping"))
        elif (exc := fut.exception()) is not None:
            self.failed(change, exc)
        else:
            self.done(change, fut.result())

    def failed(self, c: _Change, exc: BaseException) -> None:
        self.record(
            c.caller, c.what, "failed", target=c.target, old=c.old, error=str(exc), reason=c.reason
        )

    def done(self, c: _Change, out: Any) -> None:
        new = _read(c.after, self.service, c.req, out)
        detail = None
        if c.req.get("persist") is True and isinstance(out, dict):
            detail = {k: out[k] for k in ("persisted", "config", "persist_error") if k in out}
        self.record(
            c.caller,
            c.what,
            "done",
            target=c.target,
            old=c.old,
            new=new,
            reason=c.reason,
            detail=detail,
        )

    @staticmethod
    def _target(cmd: str, req: dict) -> str | None:
        key = {"set_threshold": "product", "audit_label": "id"}.get(cmd)
        value = req.get(key) if key else None
        return value if isinstance(value, str) else None

    def record(self, caller: Caller, what: str, outcome: str, **fields: Any) -> dict:
        """Append one record (and log it to the journal); an unwritable log is logged."""
        rec = make_record(
            caller.who, caller.role, caller.via, what, outcome, **fields, **caller.fields()
        )
        log.info("audit: %s", json.dumps(rec, default=str))
        if self.audit is not None:
            try:
                self.audit.append(rec)
            except AuditError as exc:
                log.error("%s (the record above is in the journal only)", exc)
        return rec
