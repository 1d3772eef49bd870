"""`afrd web --config cell.toml [--host 127.0.0.1] [--port 8080] [--tokens-file F]`: the
operator's page: live verdicts and heatmaps, threshold tuning, review and labelling.

A separate process and a client of the daemon like any MES software: it subscribes to the PUB
socket and speaks the control socket named in the cell config, and reads the recorder's
directory. It is never in the inspection path.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from afrd import cliargs
from afrd.config.cell import load_config
from afrd.errors import ConfigError

log = logging.getLogger("afrd.web")


def connectable(endpoint: str) -> str:
    """A bind endpoint turned into one a client can connect to (``*`` -> loopback)."""
    m = re.match(r"^tcp://(\*|0\.0\.0\.0|\[::\]|\[\*\]):(\d+)$", endpoint)
    if m is None:
        return endpoint
    host = "[::1]" if m.group(1).startswith("[") else "127.0.0.1"
    return f"tcp://{host}:{m.group(2)}"


def parse_shifts(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", item)
        if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ConfigError(f"--shifts {text!r}: {item!r} is not HH:MM (e.g. 06:00,14:00,22:00)")
        out.append((int(m.group(1)), int(m.group(2))))
    return tuple(sorted(out))


def _default_export_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # systemd's StateDirectory=
    return Path(state.split(":")[0]) / "exports" if state else Path("afrd-exports")


def main(argv: list[str]) -> int:
    ap = cliargs.parser("afrd web", __doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True, help="the cell config the daemon runs")
    ap.add_argument("--host", default="127.0.0.1", help="address to serve the page on")
    ap.add_argument("--port", type=int, default=8080, help="port to serve the page on")
    ap.add_argument(
        "--tokens-file",
        type=Path,
        help="named tokens with roles, 'name:role:sha256$HEX' lines (python -m afrd.web.tokens "
        "NAME ROLE); a token is required when --host is not loopback, and actions need one once "
        "any is given",
    )
    ap.add_argument(
        "--token-file",
        type=Path,
        help="one shared token (its first line), with the engineer role: the form from before "
        "--tokens-file",
    )
    ap.add_argument(
        "--open-view",
        action="store_true",
        help="with a token on a wide bind, let anyone view (actions still need the token)",
    )
    ap.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name browsers reach the page by, besides loopback, IP addresses, this machine's "
        "name and --host (repeatable); any other Host header is refused (DNS rebinding)",
    )
    ap.add_argument(
        "--max-body-kib",
        type=int,
        default=256,
        help="largest request body an action accepts, in KiB (413 beyond)",
    )
    ap.add_argument("--pub", help="the daemon's PUB endpoint (default: from the config)")
    ap.add_argument("--control", help="the daemon's control endpoint (default: from the config)")
    ap.add_argument("--server-key", type=Path, help="the daemon's CURVE public key file")
    ap.add_argument("--client-key", type=Path, help="this client's CURVE secret key file")
    ap.add_argument(
        "--captures", type=Path, help="capture directory to review (default: the recorder's)"
    )
    ap.add_argument(
        "--export-dir",
        type=Path,
        help="where exported datasets go (default: $STATE_DIRECTORY/exports or ./afrd-exports)",
    )
    ap.add_argument("--history", type=int, default=500, help="recent results kept for the page")
    ap.add_argument("--strip", type=int, default=30, help="results shown in the live strip")
    ap.add_argument(
        "--shifts", default="06:00,14:00,22:00", help="local shift start times (counts reset)"
    )
    args = ap.parse_args(cliargs.take_global_flags(argv))
    cliargs.setup_logging("info")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected 1-65535")
    if not 1 <= args.history <= 100_000 or not 1 <= args.strip <= args.history:
        raise ConfigError("--history: expected 1-100000, --strip: 1 to --history")
    if not 1 <= args.max_body_kib <= 65536:
        raise ConfigError(f"--max-body-kib {args.max_body_kib}: expected 1-65536")

    from afrd.web.app import Settings, create_app
    from afrd.web.auth import Access, read_token
    from afrd.web.tokens import load_tokens

    cfg = load_config(args.config)
    captures = args.captures or (cfg.recorder.dir if cfg.recorder.enabled else None)
    products = [getattr(p, "name", "") for p in getattr(cfg, "product", None) or []]
    settings = Settings(
        cell=cfg.cell,
        pub=args.pub or connectable(cfg.sockets.pub),
        control=args.control or connectable(cfg.sockets.control),
        captures=captures,
        export_dir=args.export_dir or _default_export_dir(),
        server_key=args.server_key,
        client_key=args.client_key,
        history=args.history,
        strip=args.strip,
        stale_after_s=max(3.0, 3 * cfg.sockets.heartbeat_s),
        shifts=parse_shifts(args.shifts),
        products=[p for p in products if p],
        max_body=args.max_body_kib * 1024,
    )
    tokens = load_tokens(args.tokens_file) if args.tokens_file is not None else None
    access = Access(
        read_token(args.token_file), args.host, args.open_view, args.allowed_host, tokens
    )
    app = create_app(settings, access)

    import uvicorn

    log.info(
        "afrd web for cell %s on http://%s:%d (PUB %s, control %s, review %s)",
        cfg.cell,
        args.host,
        args.port,
        settings.pub,
        settings.control,
        captures or "off",
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, loop="asyncio", log_level="warning"
    )
    config.timeout_graceful_shutdown = 5  # a stream still open then is cut
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # event streams end within a second
    server.run()
    return 0
