"""Who may see the page and who may act on the cell through it.

- Bound to loopback (127.0.0.0/8, ::1, localhost) with no token: everyone on this machine may
  look and act (as with ``afrd ctl`` on the control socket's loopback default).
- Tokens configured (``--tokens-file``: named, each with a role, :mod:`afrd.web.tokens`; or the
  one ``--token-file``, the engineer ``shared-token``): every action (threshold, pause, resume,
  label, export) needs one, as ``Authorization: Bearer <token>`` or HTTP basic auth with the
  token as password (any user name, so a browser's own login prompt works). Viewing needs one
  too when the page is bound wider than loopback, unless ``open_view``. Whose token it is
  (:meth:`Access.identify`) goes to the daemon with each action, which judges it by that role
  (a 403 when it falls short) and records the name in its audit log.
- Bound wider than loopback without a token: refused at start-up (:func:`check_bind`).

Actions must be JSON POSTs from this page's own origin: a cross-site form cannot send
``application/json`` without a CORS preflight this server never grants, and a request whose
``Origin`` names another host is refused, so a browser holding basic-auth credentials cannot be
made to act by another site.

Every request, GET included, must name an allowed ``Host`` (:meth:`Access.host_allowed`):
loopback names, IP addresses, this machine's name, the bound name and ``--allowed-host``
names. Otherwise a DNS-rebinding page (a site whose name is made to resolve to 127.0.0.1) would
be this page's "own origin" in the line PC's browser and could read it and, tokenless, act.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import Iterable
from pathlib import Path

from afrd.errors import ConfigError
from afrd.web.tokens import LOCAL, MIN_CHARS, SHARED_NAME, SHARED_ROLE, Identity, digest

REALM = 'Basic realm="afrd", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[^\s:/@\[\]]+)(:\d{1,5})?$")
WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header, lower case, port and trailing dot dropped; None when
    there is none or it is malformed."""
    m = _HOST.match((header or "").strip().lower())
    return (m.group(1).rstrip(".") or None) if m else None


def read_token(path: Path | None) -> str | None:
    """The token in ``path`` (first line, stripped); ConfigError when unusable."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {path}: not UTF-8 text") from None
    if not token or len(token[0].strip()) < MIN_CHARS:
        raise ConfigError(
            f"--token-file {path}: expected a token of at least {MIN_CHARS} characters on its "
            "first line "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return token[0].strip()


def check_bind(host: str, tokens: dict | str | None) -> None:
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"--host {host}: the page would be reachable from other machines without a token; "
            "give --tokens-file (or --token-file), or bind 127.0.0.1 and reach it through an "
            "SSH tunnel"
        )


class Access:
    def __init__(
        self,
        token: str | None,
        host: str,
        open_view: bool = False,
        allowed_hosts: Iterable[str] = (),
        tokens: dict[str, Identity] | None = None,
    ) -> None:
        self.tokens = dict(tokens or {})  # SHA-256 of a token -> whose it is
        if token is not None:
            self.tokens.setdefault(digest(token), Identity(SHARED_NAME, SHARED_ROLE))
        check_bind(host, self.tokens)
        self.needs_token = bool(self.tokens)
        self.view_needs_token = self.needs_token and not is_loopback(host) and not open_view
        for name in allowed_hosts:
            if host_name(name) is None:
                raise ConfigError(f"--allowed-host {name!r}: expected a host name (e.g. line-pc)")
        names = [*allowed_hosts, socket.gethostname()]
        if host not in WILDCARDS:
            names.append(host)
        self.hosts = {h for n in names if (h := host_name(n))}

    def host_allowed(self, header: str | None) -> bool:
        """A ``Host`` a rebinding page cannot produce: an IP address (the browser resolved
        nothing), ``localhost`` (browsers resolve it themselves) or a name this page was told."""
        name = host_name(header)
        return name is not None and (name == "localhost" or _ip(name) or name in self.hosts)

    def identify(self, header: str | None) -> Identity | None:
        """Whose token ``header`` carries (``LOCAL`` when the page has none); None: no token
        of this page's."""
        if not self.needs_token:
            return LOCAL
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            given = value.strip()
        elif scheme == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return None
        else:
            return None
        # looked up by its hash: what an attacker's guess costs is a hash, never a comparison
        # with a stored token
        return self.tokens.get(digest(given))

    def authorized(self, header: str | None) -> bool:
        return self.identify(header) is not None

    def may_view(self, header: str | None) -> bool:
        return not self.view_needs_token or self.authorized(header)

    def may_act(self, header: str | None) -> bool:
        return self.authorized(header)


def same_origin(origin: str | None, host: str | None) -> bool:
    """A request without Origin (curl, scripts) or with this server's own host."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host
