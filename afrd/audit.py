"""The audit log: who changed what on the cell, one JSON object per line.

A record is appended by the process that made (or refused) the change: the daemon for its
control commands and OPC UA methods, ``afrd label`` for the labels it writes. Fields, in order:
``ts`` (UTC, ISO-8601, ``Z``), ``who`` (a web token's name, an OPC UA user, a CURVE key id, the
local user), ``role`` (the role the change was judged with), ``via`` (``web``, ``ctl``,
``opcua``, ``modbus``, ``signal``, ``cli``), ``what`` (the command), ``outcome`` (``done``,
``refused``: ``needs`` is the role that was missing, ``failed``: ``error`` says why), and
where they apply ``target`` (the recipe or capture), ``old``, ``new``, ``reason``, ``peer``
(the connection that spoke for ``who``: the page's own key), ``call`` (the interface's own name
for the action: OPC UA's ``Halt``), ``detail``.

The file is only ever appended to and renamed, never rewritten: each record is one ``write``
under an exclusive ``flock`` of ``<log>.lock``, so the daemon and ``afrd label`` can share it.
When a record would take it over ``max_bytes`` the files move up (``audit.jsonl`` ->
``audit.jsonl.1`` -> ... -> ``audit.jsonl.<keep>``, the oldest dropped) and the record starts
a new one. Rank 0 (below every stage): ``afrd.data.label_cli`` writes it too.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from afrd.errors import AfrdError, ConfigError

DEFAULT_DIR = Path("/var/lib/afrd")  # the unit's StateDirectory=afrd
MAX_FIELD = 1000  # characters of a value kept (a longer one is clipped, its length said)


class AuditError(AfrdError):
    """A record could not be appended (the message names the file and the reason)."""


def default_path() -> Path:
    """``$STATE_DIRECTORY/audit.jsonl`` under systemd, else ``/var/lib/afrd/audit.jsonl``."""
    state = os.environ.get("STATE_DIRECTORY")
    return (Path(state.split(":")[0]) if state else DEFAULT_DIR) / "audit.jsonl"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _clip(value: Any) -> Any:
    """A JSON-able value of bounded size (long strings and structures clipped)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD else f"{value[:MAX_FIELD]}... ({len(value)} chars)"
    text = json.dumps(value, default=str, allow_nan=False)
    return value if len(text) <= MAX_FIELD else _clip(text)


def record(
    who: str, role: str | None, via: str, what: str, outcome: str = "done", **fields
) -> dict:
    """One record: the fixed fields first, then ``fields`` that are not None (``old`` and
    ``new`` even then: an unset label or threshold is a value)."""
    rec = {"ts": utc_now(), "who": who, "role": role, "via": via, "what": what}
    rec["outcome"] = outcome
    rec.update({k: _clip(v) for k, v in fields.items() if v is not None or k in ("old", "new")})
    return rec


class AuditLog:
    """Appends records to ``path`` (rotated at ``max_bytes``, ``keep`` old files kept).
    ``key`` names the setting that chose the path, for error messages."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 10 * 1024**2,
        keep: int = 5,
        key: str = "access.audit_log",
    ) -> None:
        self.path, self.max_bytes, self.keep, self.key = Path(path), max_bytes, keep, key
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def problem(self) -> str | None:
        """Why records could not be appended here (None: they can); opens nothing."""
        folder = self.path.parent
        if not folder.is_dir():
            return f"no directory {folder}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable by this user"
        for p in (self.path, self.lock_path):
            if p.exists() and not os.access(p, os.W_OK):
                return f"{p} is not writable by this user"
        return None

    def check(self) -> None:
        """ConfigError naming the key when records could not be appended."""
        why = self.problem()
        if why is not None:
            raise ConfigError(f"{self.key}: cannot append to {self.path}: {why}")

    def append(self, rec: dict) -> dict:
        """Append ``rec`` as one line (rotating first when it would not fit); AuditError."""
        line = (json.dumps(rec, default=str, allow_nan=False, ensure_ascii=False) + "\n").encode()
        try:
            lock = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    size = self.path.stat().st_size
                except FileNotFoundError:
                    size = 0
                if size and size + len(line) > self.max_bytes:
                    self._rotate()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                os.close(lock)  # releases the flock
        except OSError as exc:
            raise AuditError(f"{self.key}: cannot append to {self.path}: {exc}") from None
        return rec

    def _rotate(self) -> None:
        for i in range(self.keep - 1, 0, -1):
            older = self._rotated(i)
            if older.exists():
                os.replace(older, self._rotated(i + 1))
        os.replace(self.path, self._rotated(1))

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def files(self) -> list[Path]:
        """The log's files that exist, oldest first."""
        rotated = [self._rotated(i) for i in range(self.keep, 0, -1)]
        # a smaller `keep` than before leaves older files: read them too
        extra = sorted(
            (p for p in self.path.parent.glob(self.path.name + ".*") if p.suffix[1:].isdigit()),
            key=lambda p: -int(p.suffix[1:]),
        )
        ordered = [p for p in extra if p not in rotated] + rotated + [self.path]
        return [p for p in ordered if p.is_file()]

    def read(self) -> Iterator[dict]:
        """Every record, oldest first; a line that does not parse is yielded as
        ``{"unreadable": <file:line>}`` rather than hidden."""
        for p in self.files():
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise AuditError(f"cannot read {p}: {exc.strerror or exc}") from None
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                yield rec if isinstance(rec, dict) else {"unreadable": f"{p}:{n}"}
