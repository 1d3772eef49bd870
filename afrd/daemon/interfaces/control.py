"""Control socket: a ZeroMQ REP server for PLC gateways, MES software and `afrd ctl`.

Request: one JSON object ``{"cmd": "<name>", ...arguments}``. Reply: ``{"ok": true, "result":
...}`` or ``{"ok": false, "error": "<message>"}``; a request that is not JSON, not an object or
names an unknown command gets an error reply, never a crash. The server dispatches through a
command table (name -> handler(request)); the daemon's is status, trigger {part_id, product},
reload, set_threshold {threshold}, pause, resume.

The socket is a ROUTER (clients use REQ, or DEALER with an empty delimiter frame, as for a REP
server), so a handler may answer later: one that returns a ``concurrent.futures.Future`` (the
daemon's ``reload``, which opens engines for seconds to minutes) gets its reply sent when the
future is done, and meanwhile every other request (``trigger`` included) is served.

Bound to loopback (or ipc://) by default. Binding anything wider needs CURVE: the keys
directory holds ``server.key_secret`` (``zmq.auth.create_certificates``) and
``authorized_clients/*.key`` (client public keys; without that directory the daemon refuses to
start unless ``sockets.allow_any_client = true``), or ``authorized_clients/<role>/*.key``.

Who sent each request (its CURVE key id and role, or the local user: ``control_auth``) is
handed with it to the ``guard`` (the daemon's ``afrd.daemon.guard.Guard``), which refuses a
command the caller's role does not include before its handler runs and records every change;
a refusal's reply carries ``needs_role``. Requests over ``max_request_bytes`` are cut
by libzmq (``ZMQ_MAXMSGSIZE``) while they arrive: the peer is disconnected and gets no reply
(its REQ socket times out), because answering would mean buffering the whole request first,
and memory per peer is what the bound is for. A request of several frames gets an error reply,
and what is logged or echoed of a request is clipped: no input ends the thread, and
``healthy()`` tells the watchdog when it has. Peers that connect and never complete the ZeroMQ
handshake are dropped after ``HANDSHAKE_S`` (libzmq's default is 30 s), so a flood of idle
connections holds descriptors only briefly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq

from afrd.config.endpoints import HANDSHAKE_S, bind, check_ipc_free, curve_server_keys, is_ipv6
from afrd.daemon.interfaces.control_auth import ClientKeys, on_behalf, peer, start_authenticator
from afrd.daemon.roles import Caller
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.control")  # the name the journal has always shown

CLIP = 200  # characters of a request echoed in a reply or a log line
MAX_ID_CHARS = 256  # part ids and product names longer than this are refused


class CommandError(AfrdError):
    """A control command was refused; the message goes back to the client."""


def clip(text: str, n: int = CLIP) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def check_name(value: object, key: str) -> None:
    """A part id or product name a result, a log line and a file name can all carry."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise CommandError(
            f"trigger: {key} must be a non-empty string of at most {MAX_ID_CHARS} characters, "
            f"got {clip(repr(value), 80)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(
            f"trigger: {key} {clip(ascii(value), 80)} is not valid Unicode (a lone surrogate)"
        ) from None
    if not value.isprintable():
        raise CommandError(f"trigger: {key} {clip(ascii(value), 80)} has control characters")


Handler = Callable[[dict], Any]


class ControlServer:
    """Serves requests on its own thread; ``commands[cmd](request)`` returns the result (or a
    Future of it) or raises (AfrdError -> its message; anything else -> 'internal error')."""

    def __init__(
        self,
        endpoint: str,
        commands: Mapping[str, Handler],
        keys_dir: Path | None = None,
        context: zmq.Context | None = None,
        *,
        allow_any_client: bool = False,
        max_request_bytes: int = 65536,
        guard: Any = None,
        key_role: str = "engineer",
        local_role: str = "engineer",
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._commands = dict(commands)
        self._guard = guard  # None: handlers run as they are (no roles, no audit)
        self._local_role = local_role
        self._auth = None
        self._clients: ClientKeys | None = None
        self._endpoint = endpoint
        self._max_bytes = max_request_bytes
        self._keys = curve_server_keys(keys_dir, endpoint, allow_any_client)
        check_ipc_free(endpoint, "sockets.control")
        if self._keys is not None:
            self._clients = ClientKeys.load(Path(keys_dir), key_role)
            self._auth = start_authenticator(self._ctx, self._clients)
        try:
            self._sock = self._open()
        except BaseException:
            if self._auth is not None:
                self._auth.stop()
            raise
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._beat = time.monotonic()
        self._pending: list[tuple[list[bytes], str, Future]] = []  # (envelope, cmd, future)
        self._thread = threading.Thread(target=self._loop, name="afrd-control", daemon=True)

    def _open(self, endpoint: str | None = None) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_bytes)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        if is_ipv6(self._endpoint):
            sock.setsockopt(zmq.IPV6, 1)
        if self._keys is not None:
            sock.curve_publickey, sock.curve_secretkey = self._keys
            sock.curve_server = True
        if endpoint is None:
            bind(sock, self._endpoint, "sockets.control")
        else:  # re-opening on the port it had: a failure there is for _reopen to handle
            sock.bind(endpoint)
        return sock

    def start(self) -> None:
        self._thread.start()

    def healthy(self, max_age_s: float = 30.0) -> bool:
        """The serving thread is alive and looped within ``max_age_s`` (watchdog)."""
        return self._thread.is_alive() and time.monotonic() - self._beat < max_age_s

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._beat = time.monotonic()
            try:
                self._serve_one()
            except Exception:  # never let one request end the thread: start a fresh socket
                log.exception("control socket failed; re-opening it")
                self._reopen()

    def _serve_one(self) -> None:
        self._send_finished()
        if not self._sock.poll(20 if self._pending else 100):
            return
        try:
            msg = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        frames = [f.bytes for f in msg]
        # ROUTER: [peer identity, b"" (REQ's delimiter), request frames...]
        n = 2 if len(frames) > 1 and frames[1] == b"" else 1
        envelope, body = frames[:n], frames[n:]
        if len(body) != 1:
            reply = {"ok": False, "error": f"request has {len(body)} frames, expected 1"}
        else:
            reply = self.dispatch(body[0], peer(msg[-1], self._clients, self._local_role))
            if isinstance(reply, tuple):  # (cmd, future): answered when the future is done
                self._pending.append((envelope, *reply))
                return
        self._reply(envelope, reply)

    def _send_finished(self) -> None:
        """Reply to the deferred requests whose futures are done."""
        if not self._pending:
            return
        waiting = []
        for envelope, cmd, fut in self._pending:
            if fut.done():
                exc = fut.exception()
                self._reply(envelope, self._outcome(cmd, None if exc else fut.result(), exc))
            else:
                waiting.append((envelope, cmd, fut))
        self._pending = waiting

    def _reply(self, envelope: list[bytes], reply: dict) -> None:
        try:
            data = json.dumps(reply, allow_nan=False, default=str).encode()
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            log.error("control reply not serializable: %s", clip(str(exc)))
            data = b'{"ok":false,"error":"internal error: reply not serializable"}'
        self._sock.send_multipart([*envelope, data])  # a peer gone meanwhile: dropped

    def _reopen(self) -> None:
        """Replace a socket that failed on its endpoint (deferred replies are lost with it)."""
        self._pending = []
        bound = self.bound
        self._sock.close(linger=0)
        try:
            self._sock = self._open(bound)
        except zmq.ZMQError:
            log.exception("control socket could not be re-opened on %s", bound)
            self._stop.wait(1.0)
            self._sock = self._open(bound)  # a second failure ends the thread: unhealthy

    def dispatch(self, raw: bytes, caller: Caller | None = None) -> dict | tuple[str, Future]:
        """The reply to one request from ``caller``, or ``(cmd, future)`` when its handler
        answers later."""
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return {"ok": False, "error": f"request is not JSON: {clip(str(exc))}"}
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
                "error": f"unknown or missing 'cmd' {clip(repr(cmd), 80)}; "
                f"expected one of {list(self._commands)}",
            }
        try:
            if self._guard is None:
                out = handler(req)
            else:
                who = on_behalf(caller or Caller("local", self._local_role, "ctl"), req)
                out = self._guard.run(cmd, handler, req, who)
        except Exception as exc:
            return self._outcome(cmd, None, exc)
        if isinstance(out, Future):
            return cmd, out
        return {"ok": True, "result": out}

    @staticmethod
    def _outcome(cmd: str, result: Any, exc: BaseException | None) -> dict:
        """The reply for a handler's result, or for the exception it raised."""
        if exc is None:
            return {"ok": True, "result": result}
        if isinstance(exc, AfrdError):
            reply = {"ok": False, "error": clip(str(exc), 1000)}
            if getattr(exc, "needs_role", None):  # afrd.daemon.roles.Forbidden
                reply["needs_role"] = exc.needs_role
            return reply
        # a bug in a handler must not take the socket down
        log.error("control command %s failed", cmd, exc_info=exc)
        return {
            "ok": False,
            "error": f"internal error in {cmd}: {type(exc).__name__}: {clip(str(exc))}",
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._sock.close()
        if self._auth is not None:
            self._auth.stop()
