"""`afrd run --config cell.toml`: parse arguments, load the config, install the signal handlers
and run the Service until SIGTERM/SIGINT (exit 0), a start-up error (2) or a device error (1, so
systemd restarts the unit)."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys

from afrd import cliargs
from afrd.config.cell import load_config
from afrd.daemon.service import Service
from afrd.errors import AfrdError, DeviceError

log = logging.getLogger("afrd.daemon")


def main(argv: list[str]) -> int:
    ap = cliargs.parser(
        "afrd run", "run the inspection daemon (--log-level, a global flag, defaults to info)"
    )
    ap.add_argument("--config", "-c", required=True, help="cell config (TOML)")
    args = ap.parse_args(cliargs.take_global_flags(argv))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):  # journald stamps lines itself
        fmt = "%(asctime)s " + fmt
    cliargs.setup_logging("info", fmt)
    try:
        cfg = load_config(args.config)
    except AfrdError as exc:
        print(f"afrd run: error: {exc}", file=sys.stderr)
        return 2
    # Hand the GIL over within 1 ms (default 5 ms): the acquire thread's rendering/conversion
    # must not hold up the thread that publishes the previous part.
    sys.setswitchinterval(0.001)
    raise_fd_limit()
    svc = Service(args.config, cfg)

    def on_term(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        svc.stop_event.set()

    def on_hup(_signum: int, _frame: object) -> None:
        svc.reload_event.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        svc.start()
    except DeviceError as exc:  # a device may come back: exit 1 so systemd restarts us
        print(f"afrd run: device error: {exc}", file=sys.stderr)
        svc.shutdown()
        return 1
    except AfrdError as exc:
        print(f"afrd run: error: {exc}", file=sys.stderr)
        svc.shutdown()
        return 2
    except Exception:
        log.exception("start-up failed")
        svc.shutdown()
        return 1
    return svc.run_forever()


FD_WANTED = 65536  # the unit's LimitNOFILE=
FD_FLOOR = 4096  # below this a flood of idle connections can exhaust them: say so


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (Linux's default soft limit is 1024).

    The PLC and metrics servers cap their connections, but libzmq accepts every TCP peer of the
    PUB and control sockets until it has completed (or failed) its handshake, and aborts the
    process when a descriptor it needs is not there: a large limit is the reserve that keeps
    the daemon's own sockets, files and devices working while idle peers are dropped."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a sandbox may refuse it
            log.warning("could not raise the descriptor limit from %d: %s", soft, exc)
    if soft < FD_FLOOR:
        log.warning(
            "descriptor limit %d (< %d): a flood of idle connections could exhaust it; set "
            "LimitNOFILE=%d in the unit",
            soft,
            FD_FLOOR,
            FD_WANTED,
        )
    return soft


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
