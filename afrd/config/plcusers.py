"""The OPC UA users file: one ``name[:role]:pbkdf2_sha256$iterations$salt$hash`` line per user.

Passwords are never stored in the cell config or in the clear: ``python -m afrd.config.plcusers
NAME [ROLE] >> /etc/afrd/opcua-users`` asks for a password and prints the line to append. The
role (``operator``, ``engineer``, ``admin``: ``afrd.config.roles``) is optional, so files
written before roles existed still load: their users get ``access.opcua_role`` (operator by
default: what an OPC UA client could do before, trigger and the Machine Vision methods). Blank
lines and ``#`` comments are ignored; a malformed line is a ConfigError naming the file and line.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import sys
from pathlib import Path

from afrd.config.roles import ROLES
from afrd.errors import ConfigError

ITERATIONS = 200_000
_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"pbkdf2_sha256${iterations}${b64(salt).decode()}${b64(dk).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, iters, salt, want = stored.split("$")
        dk = hashlib.pbkdf2_hmac(
            "sha256", password.encode("utf-8"), base64.b64decode(salt), int(iters)
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return kind == "pbkdf2_sha256" and hmac.compare_digest(dk, base64.b64decode(want))


def load_users(path: Path) -> dict[str, str]:
    """name -> stored hash; ConfigError naming the file (and line) when it cannot be used."""
    return {name: stored for name, (stored, _role) in load_user_entries(path).items()}


def load_user_entries(path: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (stored hash, role or None when the line names none); ConfigError naming the
    file (and line) when it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"opcua.users_file: cannot read {path}: {exc}") from None
    users: dict[str, tuple[str, str | None]] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        role, sep, rest = stored.partition(":")
        if sep and not role.startswith("pbkdf2_sha256$"):  # name:role:hash
            if role not in ROLES:
                raise ConfigError(
                    f"opcua.users_file: {path} line {i}: role {role!r} is not one of {list(ROLES)}"
                )
            stored = rest
        else:
            role = None
        parts = stored.split("$")
        if (
            not _NAME.match(name)
            or len(parts) != 4
            or parts[0] != "pbkdf2_sha256"
            or not parts[1].isdigit()
        ):
            raise ConfigError(
                f"opcua.users_file: {path} line {i}: expected 'name[:role]:pbkdf2_sha256$...' "
                f"(made by python -m afrd.config.plcusers NAME [ROLE])"
            )
        users[name] = (stored, role)
    if not users:
        raise ConfigError(f"opcua.users_file: {path} lists no users; nobody could log in")
    return users


def user_line(name: str, password: str, role: str | None = None, **kw) -> str:
    """The users file line for ``name`` (with ``role`` when given)."""
    return f"{name}:{role + ':' if role else ''}{hash_password(password, **kw)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if (
        not 1 <= len(args) <= 2
        or not _NAME.match(args[0])
        or args[1:2] not in ([], *[[r] for r in ROLES])
    ):
        print(
            "usage: python -m afrd.config.plcusers NAME [ROLE]  (NAME: 1-64 of A-Z a-z 0-9 _ . @ -;"
            f" ROLE: one of {', '.join(ROLES)}; none: access.opcua_role)"
        )
        return 2
    pw = getpass.getpass(f"password for {args[0]}: ")
    if len(pw) < 8 or pw != getpass.getpass("again: "):
        print("passwords differ or shorter than 8 characters", file=sys.stderr)
        return 2
    print(user_line(args[0], pw, args[1] if len(args) > 1 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
