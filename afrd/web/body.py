"""A JSON action's request body, read with a cap while it streams in.

The page's actions carry a few hundred bytes (an export of 500 long capture ids stays under
200 KiB). A body is never read whole before it is judged: a declared ``Content-Length`` over
the cap is refused before reading, a chunked one as soon as the count passes it, so a hostile
client costs the server at most the cap in memory.
"""

from __future__ import annotations

import json

from starlette.requests import Request

DEFAULT_MAX_BODY = 256 * 1024


class BodyRefused(Exception):
    """A body the action will not take; ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_object(request: Request, limit: int) -> dict:
    """The body as a JSON object; BodyRefused otherwise. A client that leaves mid-body raises
    starlette's ``ClientDisconnect`` (nobody is left to answer)."""
    too_big = f"request body over {limit} bytes (the page's actions send a few hundred)"
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise BodyRefused(400, f"Content-Length {declared!r} is not a number")
    if declared is not None and int(declared) > limit:
        raise BodyRefused(413, too_big)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise BodyRefused(413, too_big)
    try:
        body = json.loads(buf)
    except RecursionError:
        raise BodyRefused(400, "request body is JSON nested too deeply") from None
    except ValueError as exc:  # also bad UTF-8 (UnicodeDecodeError)
        raise BodyRefused(400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BodyRefused(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body
