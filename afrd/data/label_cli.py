"""`afrd label ROOT --good|--defective|--clear SELECTION`: review recorded image sets.

Marks sets of a capture root (written by `afrd capture` or the daemon's recorder) good
(label 0: `afrd train` trains on them), defective (label 1: they test a model) or unreviewed
again, through ``afrd.data.capture.set_label``. The selection combines (AND) any of: ``--part``
(part ids or set folders, repeatable), ``--day`` (UTC dates), ``--product``, ``--verdict``
(e.g. ``--verdict pass --model NAME``: all passes of one model's run), ``--unreviewed``; or
``--all``. ``--dry-run`` lists what would change.

Every label changed is appended to the cell's audit log (``afrd.audit``: who is the user
running the command, via ``cli``, with ``--reason``): ``--audit-log``, else
``$STATE_DIRECTORY/audit.jsonl`` or ``/var/lib/afrd/audit.jsonl``. A log given with
``--audit-log`` that cannot be written stops the command before anything changes; the default
one is warned about (a capture root on a laptop has no cell).
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from afrd import cliargs
from afrd.audit import AuditError, AuditLog, default_path, record
from afrd.data.capture import find_sets, load_set_json, set_label
from afrd.errors import AfrdError, ConfigError, DataError

PROG = "afrd label"
DESCRIPTION = "mark recorded image sets good (train on them), defective, or unreviewed again"


def _parser():
    ap = cliargs.parser(PROG, DESCRIPTION)
    ap.add_argument("root", type=Path, help="capture root")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--good", action="store_true", help="label 0: train on these")
    what.add_argument("--defective", action="store_true", help="label 1: defective parts")
    what.add_argument("--clear", action="store_true", help="unreviewed again (label null)")
    ap.add_argument("--part", action="append", default=[], help="part id or set folder")
    ap.add_argument("--day", action="append", default=[], help="UTC day YYYY-MM-DD")
    ap.add_argument("--product", help="only this product")
    ap.add_argument(
        "--verdict", choices=("pass", "fail", "error", "none"), help="only sets with this verdict"
    )
    ap.add_argument("--model", help="only sets inspected by this model (bundle name)")
    ap.add_argument("--unreviewed", action="store_true", help="only sets not labelled yet")
    ap.add_argument("--all", action="store_true", help="every set (with the filters above)")
    ap.add_argument("--dry-run", action="store_true", help="list, change nothing")
    ap.add_argument("--reason", help="why: recorded with each label in the audit log")
    ap.add_argument(
        "--audit-log",
        type=Path,
        help="the cell's audit log (default: $STATE_DIRECTORY/audit.jsonl or "
        "/var/lib/afrd/audit.jsonl)",
    )
    return ap


def _audit(args) -> AuditLog | None:
    """The log labels are recorded in; None (warned) when the default one is not usable."""
    log = AuditLog(args.audit_log or default_path(), key="--audit-log")
    why = log.problem()
    if why is None:
        return log
    if args.audit_log is not None:
        raise ConfigError(f"--audit-log {log.path}: cannot append to it: {why}")
    print(f"{PROG}: warning: labels not audited: {log.path}: {why}", file=sys.stderr)
    return None


def select(root: Path, args) -> list[tuple[Path, dict]]:
    """(set folder, set.json) of every set the arguments pick."""
    sets = []
    parts = set(args.part)
    for path in find_sets(root, args.product):
        d = path.parent
        doc = load_set_json(path)
        if parts and not ({doc.get("part_id"), d.name, str(d)} & parts):
            continue
        if args.day and d.parent.name not in args.day:
            continue
        if args.verdict is not None and doc.get("verdict") != (
            None if args.verdict == "none" else args.verdict
        ):
            continue
        if args.model is not None and (doc.get("model") or {}).get("name") != args.model:
            continue
        if args.unreviewed and doc.get("label") is not None:
            continue
        sets.append((d, doc))
    return sets


def label(argv: list[str]) -> int:
    args = _parser().parse_args(cliargs.take_global_flags(argv))
    if not (args.all or args.part or args.day or args.verdict or args.model or args.unreviewed):
        raise DataError("say which sets: --part, --day, --verdict, --model, --unreviewed, or --all")
    if not args.root.is_dir():
        raise DataError(f"capture root {args.root} does not exist or is not a folder")
    new = 0 if args.good else 1 if args.defective else None
    chosen = select(args.root, args)
    if args.part:
        seen = {x for d, doc in chosen for x in (doc.get("part_id"), d.name, str(d))}
        missing = sorted(set(args.part) - seen)
        if missing:
            raise DataError(f"{args.root}: no recorded set for --part {missing}")
    audit = None if args.dry_run else _audit(args)
    user = getpass.getuser()
    changed = 0
    for d, doc in chosen:
        if doc.get("label") == new:
            continue
        changed += 1
        if args.dry_run:
            print(f"would label {d}: {doc.get('label')} -> {new}")
        else:
            set_label(d, new)
            if audit is not None:
                old = doc.get("label")
                target = str(d.relative_to(args.root)) if d.is_relative_to(args.root) else str(d)
                rec = record(
                    user, None, "cli", "label", target=target, old=old, new=new, reason=args.reason
                )
                try:
                    audit.append(rec)
                except AuditError as exc:
                    print(f"{PROG}: warning: {exc}", file=sys.stderr)
    name = {0: "good", 1: "defective", None: "unreviewed"}[new]
    verb = "would change" if args.dry_run else "labelled"
    print(f"{verb} {changed} of {len(chosen)} selected sets as {name}")
    if not chosen:
        print(f"no set in {args.root} matches the selection", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    try:
        return label(argv)
    except AfrdError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
