"""ZeroMQ endpoints of the cell config: syntax, reach, CURVE keys and ipc:// ownership.

``check_endpoint`` is the syntax a config may use (tcp://HOST:PORT with a port in 0-65535 or
``*``, ipc:///PATH); ``is_local`` tells whether an endpoint is reachable only from this machine;
``curve_server_keys`` loads the control socket's CURVE keys, refusing a wide bind without them;
``check_ipc_free`` refuses to bind an ipc:// path another live socket is listening on (libzmq
would unlink it and leave that process unreachable); ``bind`` turns libzmq's bind failures
(port in use, no such directory) into a ConfigError naming the key, as a listener's
``listen_error`` does for the daemon's other servers.
"""

from __future__ import annotations

import errno
import re
import socket
import stat
from pathlib import Path
from typing import Any

from afrd.errors import ConfigError

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/]+):(?P<port>\*|[0-9]{1,5})$")
# a peer of the daemon's sockets that has not completed the ZMTP handshake by then is dropped
# (libzmq's default is 30 s): a flood of idle TCP connections holds descriptors only briefly
HANDSHAKE_S = 5.0
ENDPOINT_HELP = "tcp://HOST:PORT (port 0-65535 or *; IPv6 as [::1]) or ipc:///PATH"


def check_endpoint(endpoint: str, key: str) -> str:
    """``endpoint`` when it is a bindable tcp:// or ipc:// endpoint, else ConfigError."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path or len(path.encode()) > 107:
            raise ConfigError(
                f"{key}: {endpoint!r}: an ipc:// path must be 1-107 bytes (the AF_UNIX limit)"
            )
        return endpoint
    m = _TCP.match(endpoint)
    if m is None or (m["port"] != "*" and int(m["port"]) > 65535):
        raise ConfigError(f"{key}: {endpoint!r} is not a usable endpoint; expected {ENDPOINT_HELP}")
    return endpoint


def is_ipv6(endpoint: str) -> bool:
    return endpoint.startswith("tcp://[")


def is_local(endpoint: str) -> bool:
    """True when ``endpoint`` is reachable only from this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
        return host in ("localhost", "::1") or host.startswith("127.")
    return False


def curve_server_keys(
    keys_dir: Path | None, endpoint: str, allow_any_client: bool = False
) -> tuple[bytes, bytes] | None:
    """The control socket's server key pair; None when loopback needs none. ConfigError when
    the endpoint is wider than loopback without usable keys, or when the keys directory has no
    ``authorized_clients/`` and ``allow_any_client`` is not set."""
    import zmq
    import zmq.auth

    if keys_dir is None:
        if is_local(endpoint):
            return None
        raise ConfigError(
            f"sockets.control: {endpoint!r} is not loopback; refusing to open the control socket "
            f"without CURVE keys: set sockets.curve_keys_dir to a directory with server.key_secret"
        )
    secret = Path(keys_dir) / "server.key_secret"
    if not secret.is_file():
        raise ConfigError(
            f"sockets.curve_keys_dir: {secret} not found (expected a CURVE secret key)"
        )
    if not (Path(keys_dir) / "authorized_clients").is_dir() and not allow_any_client:
        raise ConfigError(
            f"sockets.curve_keys_dir: {keys_dir} has no authorized_clients/ directory: any client "
            f"knowing the server's public key could command the cell; add the clients' public "
            f"keys there, or set sockets.allow_any_client = true"
        )
    if not zmq.has("curve"):
        raise ConfigError("sockets.curve_keys_dir: this libzmq has no CURVE support")
    try:
        public, private = zmq.auth.load_certificate(str(secret))
    except Exception as exc:
        raise ConfigError(f"sockets.curve_keys_dir: cannot read {secret}: {exc}") from None
    if not private:
        raise ConfigError(f"sockets.curve_keys_dir: {secret} holds no secret key")
    return public, private


def check_ipc_free(endpoint: str, key: str) -> None:
    """ConfigError when ``endpoint`` is an ipc:// path a live process is listening on."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://") :]
    try:
        if not stat.S_ISSOCK(Path(path).stat().st_mode):
            return  # libzmq refuses to bind over a file that is not a socket, with its own error
    except OSError:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return  # a stale socket file from a process that is gone: safe to take over
        raise ConfigError(f"{key}: cannot check {path}: {exc}") from None
    finally:
        s.close()
    raise ConfigError(
        f"{key}: {endpoint!r} is in use by another live process (another afrd on this cell, "
        f"or pub and control on one path?); refusing to take it over"
    )


def listen_error(key: str, where: str, exc: OSError) -> ConfigError:
    """The one-line error for a server that cannot listen on ``where`` (``host:port`` or an
    ipc:// endpoint): what the OS said and the key to change. Exit 2: an edit fixes it."""
    reason = {
        errno.EADDRINUSE: "in use by another process",
        errno.EADDRNOTAVAIL: "not an address of this host",
        errno.EACCES: "permission denied (ports under 1024 need CAP_NET_BIND_SERVICE)",
        errno.ENOENT: "its directory does not exist",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    if exc.errno == errno.ENOENT and where.startswith("ipc://"):
        folder = Path(where[len("ipc://") :]).parent
        reason = f"no directory {folder} (create it; in the unit, RuntimeDirectory= does)"
    return ConfigError(
        f"{key}: cannot listen on {where}: {reason}; change {key} in the cell config"
    )


def bind(sock: Any, endpoint: str, key: str) -> None:
    """``sock.bind(endpoint)`` (a zmq socket) with a ConfigError naming ``key`` on failure."""
    import zmq

    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise listen_error(key, endpoint, OSError(exc.errno, exc.strerror)) from None
