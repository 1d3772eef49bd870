"""Roles and the ``[access]`` section of the cell config.

Three roles, each with everything the one before it has: ``operator`` (view, trigger, pause,
resume, label), ``engineer`` (thresholds, reload, shadow runs, promote, rollback, persisting
to the config), ``admin`` (everything, including any command no table lists: a new command
is never open by accident). Which command needs which role is the daemon's table
(``afrd.daemon.roles``); who has which role is said where they authenticate: the page's tokens
file, the OPC UA users file, the folder of a CURVE client key. ``[access]`` gives the role of
callers those cannot name, and where the audit log goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from afrd.audit import AuditLog, default_path

Role = Literal["operator", "engineer", "admin"]
ROLES: tuple[str, ...] = get_args(Role)  # lowest first


def check_role(value: object, where: str) -> str:
    """``value`` when it is a role; ValueError naming ``where`` and the roles otherwise."""
    if value not in ROLES:
        raise ValueError(f"{where}: {value!r} is not a role; expected one of {list(ROLES)}")
    return str(value)


def at_least(have: str | None, need: str) -> bool:
    """Whether the role ``have`` includes ``need`` (an unknown or missing role has none)."""
    return have in ROLES and ROLES.index(have) >= ROLES.index(need)


def lower(a: str, b: str) -> str:
    """The lesser of two roles."""
    return a if ROLES.index(a) <= ROLES.index(b) else b


class AccessConfig(BaseModel):
    """``[access]``: the roles of callers nothing else names, and the audit log."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    local_role: Role = Field(
        "engineer",
        description="control requests without CURVE (loopback tcp, ipc://): anyone on this "
        "machine can send them; operator restricts them",
    )
    key_role: Role = Field(
        "engineer",
        description="CURVE client keys directly in authorized_clients/ (and any key with "
        "allow_any_client); a key in authorized_clients/<role>/ has that role",
    )
    opcua_role: Role = Field(
        "operator", description="OPC UA users file lines without a role, and anonymous clients"
    )
    audit_log: Path | None = Field(
        None,
        description="JSON lines of every change (default $STATE_DIRECTORY/audit.jsonl, "
        "else /var/lib/afrd/audit.jsonl)",
    )
    audit_max_bytes: int = Field(
        10 * 1024**2, ge=4096, le=2**40, description="the log is rotated at this size"
    )
    audit_keep: int = Field(5, ge=1, le=1000, description="rotated files kept")

    def audit(self) -> AuditLog:
        return AuditLog(self.audit_log or default_path(), self.audit_max_bytes, self.audit_keep)

    def resolve_paths(self, base: Path) -> None:
        if self.audit_log is not None and not self.audit_log.is_absolute():
            self.audit_log = base / self.audit_log


def check_access(access: AccessConfig) -> None:
    """A configured ``audit_log`` the daemon could not append to is a ConfigError (exit 2);
    the default location is only warned about at start (``afrd.daemon.guard``)."""
    if access.audit_log is not None:
        access.audit().check()
