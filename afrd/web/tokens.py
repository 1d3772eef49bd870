"""The page's tokens file (``afrd web --tokens-file``): who holds which token, with which role.

One line per person (or system): ``name:role:sha256$<hex>``, the hex being the SHA-256 of the
token; blank lines and ``#`` comments are ignored, a malformed line is a ConfigError naming the
file and line. ``python -m afrd.web.tokens NAME ROLE >> /etc/afrd/web-tokens`` makes a random
token, prints it once on stderr (hand it to NAME) and the line to append on stdout. Tokens are
long random strings, so an unsalted hash keeps them out of a copied file (there is no
dictionary to try) and lets the page find a token's line by its hash.

The role (``operator``, ``engineer``, ``admin``: ``afrd.config.roles``) is what the page asks
the daemon to judge that person's actions with; the daemon records the name. The single token
of ``--token-file`` (from before roles) is the ``shared-token`` with the engineer role: every
action the page had stays open to it (a threshold is an engineer's), and no more: admin would
hand commands added later to a secret that names nobody.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from afrd.config.roles import ROLES
from afrd.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
_LINE = re.compile(r"^([^:]+):([^:]+):sha256\$([0-9a-f]{64})$")
SHARED_NAME, SHARED_ROLE = "shared-token", "engineer"
MIN_CHARS = 16


@dataclass(frozen=True)
class Identity:
    """Who is using the page: a token's ``name`` and ``role``; role None: the page's own at the
    daemon (loopback without tokens: whoever is on this machine)."""

    name: str
    role: str | None


LOCAL = Identity("local", None)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def line(name: str, role: str, token: str) -> str:
    return f"{name}:{role}:sha256${digest(token)}"


def load_tokens(path: Path) -> dict[str, Identity]:
    """hash -> Identity of every line of ``path``; ConfigError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--tokens-file {path}: cannot read it: {exc}") from None
    out: dict[str, Identity] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        text_line = raw.strip()
        if not text_line or text_line.startswith("#"):
            continue
        m = _LINE.match(text_line)
        if m is None or not _NAME.match(m[1]) or m[2] not in ROLES:
            raise ConfigError(
                f"--tokens-file {path} line {i}: expected 'name:role:sha256$<64 hex>' with a "
                f"role of {list(ROLES)} (made by python -m afrd.web.tokens NAME ROLE)"
            )
        if m[3] in out:
            raise ConfigError(f"--tokens-file {path} line {i}: the same token as {out[m[3]].name}")
        out[m[3]] = Identity(m[1], m[2])
    if not out:
        raise ConfigError(f"--tokens-file {path} lists no tokens; nobody could act")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not _NAME.match(args[0]) or args[1] not in ROLES:
        print(f"usage: python -m afrd.web.tokens NAME ROLE  (ROLE: one of {', '.join(ROLES)})")
        return 2
    token = secrets.token_urlsafe(24)
    print(f"token for {args[0]} (shown once, not stored): {token}", file=sys.stderr)
    print(line(args[0], args[1], token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
