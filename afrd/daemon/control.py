"""Control socket: a ZeroMQ REP server for PLC gateways, MES software and `afrd ctl`.

Request: one JSON object ``{"cmd": "<name>", ...arguments}``. Reply: ``{"ok": true, "result":
...}`` or ``{"ok": false, "error": "<message>"}``; a request that is not JSON, not an object or
names an unknown command gets an error reply, never a crash. The server dispatches through a
command table (name -> handler(request)); the daemon's is status, trigger {part_id, product},
reload, set_threshold {threshold}, pause, resume.

Bound to loopback (or ipc://) by default. Binding anything wider needs CURVE: the keys
directory holds ``server.key_secret`` (``zmq.auth.create_certificates``) and optionally
``authorized_clients/*.key`` (client public keys; without it any client that knows the server's
public key may connect, traffic still encrypted).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from afrd.errors import AfrdError, ConfigError

log = logging.getLogger("afrd.daemon.control")


class CommandError(AfrdError):
    """A control command was refused; the message goes back to the client."""


def is_local(endpoint: str) -> bool:
    """True when ``endpoint`` is reachable only from this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
        return host in ("localhost", "::1") or host.startswith("127.")
    return False


def curve_server_keys(keys_dir: Path | None, endpoint: str) -> tuple[bytes, bytes] | None:
    """The server key pair for ``endpoint``; None when loopback needs none.
    ConfigError when the endpoint is wider than loopback and no usable keys are configured."""
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

    try:
        public, private = zmq.auth.load_certificate(str(secret))
    except Exception as exc:
        raise ConfigError(f"sockets.curve_keys_dir: cannot read {secret}: {exc}") from None
    if not private:
        raise ConfigError(f"sockets.curve_keys_dir: {secret} holds no secret key")
    return public, private


Handler = Callable[[dict], Any]


class ControlServer:
    """Serves requests on its own thread; ``commands[cmd](request)`` returns the result or
    raises (AfrdError -> its message; anything else -> 'internal error')."""

    def __init__(
        self,
        endpoint: str,
        commands: Mapping[str, Handler],
        keys_dir: Path | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._commands = dict(commands)
        self._auth = None
        keys = curve_server_keys(keys_dir, endpoint)
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            if not zmq.has("curve"):
                raise ConfigError("sockets.curve_keys_dir: this libzmq has no CURVE support")
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            clients = Path(keys_dir) / "authorized_clients"
            location = str(clients) if clients.is_dir() else zmq.auth.CURVE_ALLOW_ANY
            self._auth.configure_curve(domain="*", location=location)
            self._sock.curve_publickey, self._sock.curve_secretkey = keys
            self._sock.curve_server = True
        self._sock.bind(endpoint)
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="afrd-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                raw = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            reply = self.dispatch(raw)
            try:
                self._sock.send(json.dumps(reply, allow_nan=False, default=str).encode())
            except (zmq.ZMQError, ValueError):
                log.exception("control reply failed")
                self._sock.send(b'{"ok":false,"error":"internal error: reply not serializable"}')

    def dispatch(self, raw: bytes) -> dict:
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(req, dict):
            return {
                "ok": False,
                "error": f"request must be a JSON object, got {type(req).__name__}",
            }
        cmd = req.get("cmd")
        handler = self._commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown or missing 'cmd' {cmd!r}; expected one of {list(self._commands)}",
            }
        try:
            return {"ok": True, "result": handler(req)}
        except AfrdError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a handler must not take the socket down
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error in {cmd}: {type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._sock.close()
        if self._auth is not None:
            self._auth.stop()
