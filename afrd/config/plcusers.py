"""The OPC UA users file: one ``name:pbkdf2_sha256$iterations$salt$hash`` line per user.

Passwords are never stored in the cell config or in the clear: ``python -m afrd.config.plcusers
NAME >> /etc/afrd/opcua-users`` asks for a password and prints the line to append. Blank lines
and ``#`` comments are ignored; a malformed line is a ConfigError naming the file and line.
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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"opcua.users_file: cannot read {path}: {exc}") from None
    users: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        parts = stored.split("$")
        if (
            not _NAME.match(name)
            or len(parts) != 4
            or parts[0] != "pbkdf2_sha256"
            or not parts[1].isdigit()
        ):
            raise ConfigError(
                f"opcua.users_file: {path} line {i}: expected 'name:pbkdf2_sha256$...' "
                f"(made by python -m afrd.config.plcusers NAME)"
            )
        users[name] = stored
    if not users:
        raise ConfigError(f"opcua.users_file: {path} lists no users; nobody could log in")
    return users


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not _NAME.match(args[0]):
        print("usage: python -m afrd.config.plcusers NAME  (1-64 of A-Z a-z 0-9 _ . @ -)")
        return 2
    pw = getpass.getpass(f"password for {args[0]}: ")
    if len(pw) < 8 or pw != getpass.getpass("again: "):
        print("passwords differ or shorter than 8 characters", file=sys.stderr)
        return 2
    print(f"{args[0]}:{hash_password(pw)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
