"""`afrd run --config cell.toml`: parse arguments, load the config, install the signal handlers
and run the Service until SIGTERM/SIGINT (exit 0), a start-up error (2) or a device error (1, so
systemd restarts the unit)."""

from __future__ import annotations

import logging
import os
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
