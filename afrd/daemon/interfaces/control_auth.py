"""Who sent a control request, and with which role.

With CURVE (``sockets.curve_keys_dir``) every client key is a file: ``authorized_clients/
<name>.key`` has ``access.key_role`` (engineer by default: what such a key could do before
roles), ``authorized_clients/<role>/<name>.key`` (``operator``, ``engineer``, ``admin``) has
that role. The key id is the file's name without ``.key``. pyzmq's ZAP authenticator is asked
to accept exactly those keys (a credentials callback) and to hand the key id to libzmq as the
connection's User-Id (``curve_user_id``), which libzmq attaches to every frame the client
sends: the server reads it with ``frame.get("User-Id")``, so the id comes from the key that
completed the handshake, never from the request. With ``allow_any_client`` any key is
accepted; its id is ``curve:`` and the first 12 characters of its Z85 public key.

Without CURVE (loopback tcp, ipc://) the caller is the local user with ``access.local_role``:
over ipc:// libzmq gives the peer's uid (SO_PEERCRED, in ``Peer-Address``), named as
``local:<user>``; over loopback tcp nobody can tell, and the caller is ``local``.

A request may speak for someone else (the page, for the person holding a token):
``on_behalf_of {name, role, via}``. The record names them, keeps the connection as ``peer``,
and the request is judged with the lower of the two roles: a client can hand on less than
it has, never more.
"""

from __future__ import annotations

import pwd
import re
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from afrd.config.roles import ROLES, lower
from afrd.daemon.roles import BadRequest, Caller
from afrd.errors import ConfigError

_NAME = re.compile(r"^[^\s:]{1,64}$")
_VIA = re.compile(r"^[a-z]{1,16}$")


class ClientKeys:
    """The accepted client keys: Z85 public key -> (key id, role); ``allow_any`` accepts
    every key (``default_role``)."""

    def __init__(self, keys: dict[bytes, tuple[str, str]], default_role: str, allow_any: bool):
        self.keys, self.default_role, self.allow_any = keys, default_role, allow_any
        self.roles = dict(keys.values())

    @classmethod
    def load(cls, keys_dir: Path, default_role: str) -> ClientKeys:
        """The keys under ``keys_dir/authorized_clients`` (none there: any key is accepted,
        which ``curve_server_keys`` allowed only with ``allow_any_client``). ConfigError for a
        key that does not read, or one id or key twice."""
        root = Path(keys_dir) / "authorized_clients"
        if not root.is_dir():
            return cls({}, default_role, allow_any=True)
        keys: dict[bytes, tuple[str, str]] = {}
        ids: dict[str, Path] = {}
        places = [(root, default_role)] + [(root / r, r) for r in ROLES if (root / r).is_dir()]
        for folder, role in places:
            for path in sorted(folder.glob("*.key")):
                try:
                    public, _ = zmq.auth.load_certificate(str(path))
                except Exception as exc:
                    raise ConfigError(
                        f"sockets.curve_keys_dir: {path}: not a CURVE public key ({exc})"
                    ) from None
                name = path.stem
                twin = ids.get(name) or (ids[keys[public][0]] if public in keys else None)
                if twin is not None:
                    raise ConfigError(
                        f"sockets.curve_keys_dir: {path} and {twin} have the same key id or "
                        "public key; list a client key once, under one role"
                    )
                keys[public], ids[name] = (name, role), path
        return cls(keys, default_role, allow_any=False)

    def callback(self, _domain: str, z85_key: bytes) -> bool:
        """pyzmq's credentials provider: is this client key accepted?"""
        return self.allow_any or z85_key in self.keys

    def key_id(self, public: bytes) -> str:
        z = z85.encode(public)
        if z in self.keys:
            return self.keys[z][0]
        return f"curve:{z[:12].decode()}"

    def role_of(self, key_id: str) -> str:
        return self.roles.get(key_id, self.default_role)


class KeyAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler thread, with the key id as the User-Id libzmq attaches to frames."""

    def __init__(self, context: zmq.Context, keys: ClientKeys) -> None:
        super().__init__(context)
        self.keys = keys

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.keys.key_id(client_public_key)


def start_authenticator(context: zmq.Context, keys: ClientKeys) -> KeyAuthenticator:
    auth = KeyAuthenticator(context, keys)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=keys)
    return auth


def _property(frame: Any, name: str) -> str | None:
    try:
        return frame.get(name)
    except (zmq.ZMQError, AttributeError):  # not set on this connection (no ZAP, no ipc)
        return None


def _local_user(peer_address: str | None) -> str:
    """``local:<user>`` from libzmq's ipc Peer-Address (``host:uid:gid:pid``), else ``local``."""
    parts = (peer_address or "").rsplit(":", 3)
    if len(parts) == 4 and parts[1].isdigit():
        try:
            return f"local:{pwd.getpwuid(int(parts[1])).pw_name}"
        except KeyError:
            return f"local:uid{parts[1]}"
    return "local"


def peer(frame: Any, keys: ClientKeys | None, local_role: str) -> Caller:
    """The connection that sent ``frame``: its CURVE key id and role, or the local user."""
    if keys is not None:
        key_id = _property(frame, "User-Id") or "curve:?"
        return Caller(key_id, keys.role_of(key_id), "ctl")
    return Caller(_local_user(_property(frame, "Peer-Address")), local_role, "ctl")


def on_behalf(caller: Caller, req: dict) -> Caller:
    """``caller``, or whom the request speaks for (``on_behalf_of``) at no more than its role."""
    obo = req.get("on_behalf_of")
    if obo is None:
        return caller
    if not isinstance(obo, dict) or set(obo) - {"name", "role", "via"}:
        raise BadRequest("on_behalf_of: expected an object with name, and optionally role, via")
    name, role, via = obo.get("name"), obo.get("role", caller.role), obo.get("via", caller.via)
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest("on_behalf_of.name: expected 1-64 characters without spaces or ':'")
    if role not in ROLES:
        raise BadRequest(f"on_behalf_of.role: expected one of {list(ROLES)}")
    if not isinstance(via, str) or not _VIA.match(via):
        raise BadRequest("on_behalf_of.via: expected 1-16 lower-case letters (e.g. web)")
    return Caller(name, lower(caller.role, role), via, peer=caller.who)
