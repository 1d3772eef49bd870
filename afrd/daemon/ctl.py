"""`afrd ctl [--connect EP] status|trigger|reload|set-threshold|pause|resume|shadow|promote|
rollback`: control client.

Prints the daemon's JSON reply; exit 0 when ``ok``, 1 when the daemon refused (a mistake, named
in the reply's one-line ``error``; a command your role does not include: its ``needs_role``), 2
when it did not answer. ``--reason`` goes into the audit log with the change. ``shadow start``,
``promote`` and ``rollback`` open an engine, so they wait up to 300 s for the reply, as
``reload`` does. CURVE: ``--server-key`` (the daemon's public key file) and ``--client-key``
(this client's secret key file, e.g. from ``zmq.auth.create_certificates``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import zmq
import zmq.auth

from afrd import cliargs
from afrd.errors import ConfigError


def connect(sock: zmq.Socket, endpoint: str, flag: str = "--connect") -> None:
    """``sock.connect`` with a ConfigError naming the flag instead of libzmq's EINVAL."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"{flag} {endpoint!r}: not a usable ZeroMQ endpoint ({exc}); expected e.g. "
            "tcp://HOST:PORT or ipc:///PATH"
        ) from None


def request(
    endpoint: str,
    req: dict | bytes,
    timeout_s: float = 5.0,
    server_key: Path | None = None,
    client_key: Path | None = None,
) -> dict | None:
    """One request/reply (``req``: a command object, or raw bytes as sent); None on timeout."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    if server_key is not None:
        server_public, _ = zmq.auth.load_certificate(str(server_key))
        if client_key is not None:
            pub, sec = zmq.auth.load_certificate(str(client_key))
        else:
            pub, sec = zmq.curve_keypair()
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, pub, sec
    try:
        connect(s, endpoint)
        s.send(req if isinstance(req, bytes) else json.dumps(req).encode())
        return json.loads(s.recv())
    except zmq.Again:
        return None
    finally:
        s.close()


def _model_parsers(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """``shadow start|stop|status``, ``promote``, ``rollback`` (afrd.daemon.model_commands)."""
    sh = sub.add_parser("shadow", help="judge a product's parts with a candidate model too")
    act = cliargs.subparsers(sh)
    act.required, act.dest = True, "action"
    start = act.add_parser("start", help="open the candidate bundle beside the live model")
    start.add_argument("--bundle", required=True, help="the candidate bundle's directory")
    start.add_argument("--product", help="the [[product]] recipe (default: the default one)")
    act.add_parser("stop", help="end the shadow run; prints its final report")
    act.add_parser("status", help="compared, agreement, disagreements, errors on reviewed parts")
    pr = sub.add_parser("promote", help="make the shadow candidate the live model")
    rb = sub.add_parser("rollback", help="return to the model the last promotion replaced")
    rb.add_argument("--product", help="the [[product]] recipe (default: the default one)")
    for p in (pr, rb):
        p.add_argument("--persist", action="store_true", help="also write it into the config")


def _model_request(args, req: dict) -> dict:  # noqa: ANN001 - argparse's namespace
    if args.cmd == "shadow":
        req["cmd"] = f"shadow_{args.action}"
        if args.action == "start":
            req["bundle"] = str(Path(args.bundle).resolve())  # the daemon's cwd is not ours
    if getattr(args, "product", None):
        req["product"] = args.product
    if getattr(args, "persist", False):
        req["persist"] = True
    return req


def main(argv: list[str]) -> int:
    ap = cliargs.parser("afrd ctl", __doc__.split("\n\n")[0])
    ap.add_argument("--connect", default="tcp://127.0.0.1:5557", help="the control endpoint")
    ap.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the reply (default 5; reload: 300, it answers once the new "
        "recipes are open)",
    )
    ap.add_argument("--server-key", type=Path, help="the daemon's CURVE public key file")
    ap.add_argument("--client-key", type=Path, help="this client's CURVE secret key file")
    ap.add_argument("--reason", help="why: recorded with the change in the daemon's audit log")
    sub = cliargs.subparsers(ap)
    sub.add_parser("status", help="state, counts, queues, model, threshold")
    t = sub.add_parser("trigger", help="inspect one part")
    t.add_argument("--part-id")
    t.add_argument("--product")
    sub.add_parser("reload", help="re-read the config, reload model and threshold")
    th = sub.add_parser("set-threshold", help="verdict = score > THRESHOLD from the next part")
    th.add_argument("threshold", type=float)
    sub.add_parser("pause", help="publish triggers as error/paused until resume")
    sub.add_parser("resume", help="inspect again")
    _model_parsers(sub)
    args = ap.parse_args(cliargs.take_global_flags(argv))
    req: dict = {"cmd": args.cmd.replace("-", "_")}
    if args.reason:
        req["reason"] = args.reason
    if args.cmd == "trigger":
        if args.part_id:
            req["part_id"] = args.part_id
        if args.product:
            req["product"] = args.product
    elif args.cmd == "set-threshold":
        req["threshold"] = args.threshold
    elif args.cmd in ("shadow", "promote", "rollback"):
        req = _model_request(args, req)
    slow = req["cmd"] in ("reload", "shadow_start", "promote", "rollback")  # they open engines
    timeout = args.timeout if args.timeout is not None else 300.0 if slow else 5.0
    reply = request(args.connect, req, timeout, args.server_key, args.client_key)
    if reply is None:
        print(
            f"afrd ctl: no reply from {args.connect} within {timeout} s (no daemon there, or "
            "it is busy; a request over the daemon's sockets.max_request_bytes is dropped "
            "without a reply)",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1
