"""One connection of the MQTT link to one broker: paho-mqtt behind four plain callbacks.

paho is driven through its external-loop calls (``socket``, ``loop_read``, ``loop_write``,
``loop_misc``) under one ``select`` that also watches the link's wake-up socket, so the link
needs no second thread. paho-mqtt 1.6 (what pysparkplug allows today) and 2.x differ in how
callbacks are declared and what they are passed; this module is the only place that knows.
Every failure is a :class:`LinkDown` whose message names the broker and the problem (and the
config key that fixes it, where one does).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from afrd.daemon.interfaces.mqtt_topics import Message


class LinkDown(Exception):
    """The connection could not be made or was lost; the message says why, in one line."""


def new_client(client_id: str, clean_session: bool = True) -> paho.Client:
    """A paho client for MQTT 3.1.1 with 2.x's callback API where there is one (callbacks here
    take the arguments both pass first, and the rest as ``*_``)."""
    version = getattr(paho, "CallbackAPIVersion", None)
    if version is None:  # paho-mqtt 1.x: one callback API
        return paho.Client(client_id=client_id, clean_session=clean_session)
    return paho.Client(version.VERSION2, client_id=client_id, clean_session=clean_session)


def _words(rc: Any, connack: bool = False) -> str:
    """A return or reason code in words (an int in paho 1.x, a ReasonCode in 2.x)."""
    if isinstance(rc, int):
        return paho.connack_string(rc) if connack else paho.error_string(rc)
    return str(rc)


class Session:
    """A connection to ``host:port``; ``on_up()``, ``on_down(reason)``, ``on_ack(mid)`` and
    ``on_message(topic, payload)`` are called from ``io`` (the link's thread)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        tls: ssl.SSLContext | None,
        username: str | None,
        password: str | None,
        will: Message,
        max_inflight: int,
        keepalive_s: int,
        connect_timeout_s: float,
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        on_ack: Callable[[int], None],
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self.addr = f"{host}:{port}"
        self.up = False
        self._down = False
        self._leaving = False
        self._handlers = (on_up, on_down, on_ack, on_message)
        self._username = username
        c = self._c = new_client(client_id)
        c.on_connect = self._connected
        c.on_disconnect = self._disconnected
        c.on_publish = lambda _c, _ud, mid, *_: on_ack(mid)
        c.on_message = lambda _c, _ud, m: on_message(m.topic, m.payload)
        if tls is not None:
            c.tls_set_context(tls)
        if username is not None:
            c.username_pw_set(username, password)
        c.will_set(*will)
        c.max_inflight_messages_set(max_inflight)
        if hasattr(type(c), "connect_timeout"):  # paho 2.x
            c.connect_timeout = connect_timeout_s
        else:  # paho 1.6 has the attribute without a setter
            c._connect_timeout = connect_timeout_s
        try:  # TCP and the TLS handshake here; CONNACK later, in io()
            c.connect(host, port, keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or str(exc)
            raise LinkDown(
                f"broker {self.addr}: TLS: the broker's certificate is not trusted: {why} "
                f"(mqtt.tls.ca_file)"
            ) from None
        except ssl.SSLError as exc:
            raise LinkDown(
                f"broker {self.addr}: TLS handshake failed: {exc.reason or exc}"
            ) from None
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LinkDown(
                f"broker {self.addr}: cannot connect: {why or type(exc).__name__}"
            ) from None

    # ------------------------------------------------------------ paho's callbacks
    def _connected(self, _c: Any, _ud: Any, _flags: Any, rc: Any, *_: Any) -> None:
        if rc != 0:
            user = f" of user {self._username!r}" if self._username else ""
            self._lost(
                f"broker {self.addr} refused the login{user}: {_words(rc, connack=True)} "
                f"(mqtt.username, mqtt.password_file)"
            )
            return
        self.up = True
        self._handlers[0]()

    def _disconnected(self, _c: Any, _ud: Any, *args: Any) -> None:
        rc = args[0] if len(args) == 1 else args[1]  # 1.x: (rc); 2.x: (flags, reason, props)
        self._lost(f"connection to broker {self.addr} lost: {_words(rc)}")

    def _lost(self, reason: str) -> None:
        if self._leaving:  # our own DISCONNECT: nothing was lost
            self.close()
        elif not self._down:
            self._down = True
            self.up = False
            self.close()
            self._handlers[1](reason)

    # ------------------------------------------------------------ the link's calls
    def publish(self, msg: Message) -> int | None:
        """Publish; the message id (its PUBACK comes to ``on_ack``), None if not sent."""
        if self._down:
            return None
        info = self._c.publish(*msg)
        return info.mid if info.rc == paho.MQTT_ERR_SUCCESS else None

    def subscribe(self, topic: str) -> None:
        self._c.subscribe(topic, qos=1)

    def busy(self) -> bool:
        """Bytes still waiting for the socket (a slow broker or network)."""
        return self._c.want_write()

    def io(self, wait: float, wake: socket.socket) -> bool:
        """Wait up to ``wait`` s for the socket or ``wake``, then read, write and keep alive.
        True when ``wake`` was poked."""
        sock = None if self._down else self._c.socket()
        if sock is not None and getattr(sock, "pending", lambda: 0)():
            wait = 0.0  # TLS holds decrypted bytes select cannot see
        rlist = [wake] + ([sock] if sock is not None else [])
        wlist = [sock] if sock is not None and self._c.want_write() else []
        readable, writable, _ = select.select(rlist, wlist, [], wait)
        if sock is not None:
            if sock in readable or getattr(sock, "pending", lambda: 0)():
                self._c.loop_read()
            if not self._down and sock in writable:
                self._c.loop_write()
            if not self._down:
                self._c.loop_misc()  # keep-alive; a broker that stopped answering is lost here
        return wake in readable

    def goodbye(self) -> None:
        """A clean DISCONNECT (the broker then drops the last will)."""
        if not self._down:
            self._leaving = True
            self._c.disconnect()

    def close(self) -> None:
        self._down = True
        self.up = False
        c = self._c
        c.on_connect = c.on_disconnect = c.on_publish = c.on_message = None
        sock = c.socket()
        if sock is not None:
            sock.close()
