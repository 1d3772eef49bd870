"""`afrd audit [--config CELL | --log FILE] [--since WHEN] [--who NAME] [--what CMD]`: the audit
log, oldest first.

One line per record: when (UTC), who (role) via which interface, what, on which recipe or
capture, old -> new, the reason, and for a refusal the role that was missing. ``--json`` prints
the records as they are stored. The filters combine (AND): ``--since`` (``30m``, ``12h``,
``7d``, or a UTC date or time such as ``2026-11-23`` or ``2026-11-23T06:00``), ``--who`` (the
name or the connection that spoke for it), ``--what`` (a command, or an OPC UA method such as
``Halt``), ``--refused``. Exit 0 when a record matched, 1 when none did. The log's location:
``--log``, else ``--config``'s ``access.audit_log``, else ``$STATE_DIRECTORY/audit.jsonl`` or
``/var/lib/afrd/audit.jsonl``; its rotated files are read too.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from pathlib import Path

from afrd import cliargs
from afrd.audit import AuditLog, default_path
from afrd.errors import ConfigError

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """``30m``/``12h``/``7d`` before ``now``, or an ISO date or time (UTC unless it says)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    m = _AGO.match(text.strip())
    if m:
        return now - _dt.timedelta(seconds=float(m[1]) * _UNIT[m[2]])
    try:
        when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected 30m, 12h, 7d or a UTC date/time like 2026-11-23T06:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _when(rec: dict) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(str(rec.get("ts", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def matches(rec: dict, since=None, who=None, what=None, refused: bool = False) -> bool:
    if since is not None and ((t := _when(rec)) is None or t < since):
        return False
    if who is not None and who not in (rec.get("who"), rec.get("peer")):
        return False
    if what is not None and what not in (rec.get("what"), rec.get("call")):
        return False
    return not refused or rec.get("outcome") == "refused"


def _v(value: object) -> str:
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value


def format_record(rec: dict) -> str:
    """One record as a line a person reads."""
    if "unreadable" in rec:
        return f"(unreadable line {rec['unreadable']})"
    who = f"{rec.get('who')} ({rec.get('role') or 'no role'}) via {rec.get('via')}"
    if rec.get("peer"):
        who += f" (connection {rec['peer']})"
    what = str(rec.get("what"))
    if rec.get("call") and rec["call"] != what:
        what += f" ({rec['call']})"
    if rec.get("target"):
        what += f" [{rec['target']}]"
    out = f"{rec.get('ts')}  {who}: {what}"
    outcome = rec.get("outcome")
    if outcome == "refused":
        out += f"  REFUSED: needs {rec.get('needs')}"
    elif "old" in rec or "new" in rec:
        out += f"  {_v(rec.get('old'))} -> {_v(rec.get('new'))}"
    if outcome == "failed":
        out += f"  FAILED: {rec.get('error')}"
    if rec.get("reason"):
        out += f"  reason: {rec['reason']}"
    return out


def main(argv: list[str]) -> int:
    ap = cliargs.parser("afrd audit", __doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="the cell config (its access.audit_log)")
    src.add_argument("--log", type=Path, help="the audit log file")
    ap.add_argument("--since", help="30m, 12h, 7d, or a UTC date/time (2026-11-23T06:00)")
    ap.add_argument("--who", help="a token name, OPC UA user, CURVE key id or local user")
    ap.add_argument("--what", help="a command (set_threshold, pause, label...) or OPC UA method")
    ap.add_argument("--refused", action="store_true", help="only refusals")
    ap.add_argument("--json", action="store_true", help="the stored JSON lines")
    args = ap.parse_args(cliargs.take_global_flags(argv))
    since = parse_since(args.since) if args.since else None
    if args.log is not None:
        log = AuditLog(args.log, key="--log")
    elif args.config is not None:
        from afrd.config.cell import load_config

        log = load_config(args.config).access.audit()
    else:
        log = AuditLog(default_path(), key="--log")
    if not log.files():
        raise ConfigError(f"{log.key}: no audit log at {log.path}")
    n = 0
    for rec in log.read():
        if "unreadable" in rec or matches(rec, since, args.who, args.what, args.refused):
            n += "unreadable" not in rec
            print(json.dumps(rec, ensure_ascii=False) if args.json else format_record(rec))
    if not n:
        print("no record matches", file=sys.stderr)
    return 0 if n else 1
