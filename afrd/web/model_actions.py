"""The page's engineer actions on the model: a shadow run, promote, rollback.

Each is the control command of the same name (``afrd.daemon.model_commands``) sent for the
token's holder, as the threshold action is: actions are JSON POSTs from the page's own origin
(``act``), the shadow run's report a GET that still names the token's holder (``identified``:
the daemon judges it by that role). The daemon decides who may: an operator's token gets 403
and a refusal in the audit log. ``shadow/start``, ``promote`` and ``rollback`` open an engine,
so they wait for the daemon's answer up to ``Settings.model_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from afrd.errors import DataError

Handler = Callable[[Request], Awaitable[Response]]
# (request, control request, seconds to wait for the daemon) -> the page's response
Control = Callable[[Request, dict, float], Awaitable[Response]]
Wrap = Callable[[Handler], Handler]


def _text(body: dict, key: str, required: bool = False) -> str | None:
    v = body.get(key)
    if v in (None, "") and not required:
        return None
    if not isinstance(v, str) or not v:
        raise DataError(f"{key}: expected text, got {v!r}"[:200])
    return v


def _flag(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool):
        raise DataError(f"{key}: expected true or false, got {v!r}"[:200])
    return v


def model_routes(
    act: Wrap, identified: Wrap, control: Control, quick_s: float, slow_s: float
) -> list[Route]:
    """The routes under ``/api/shadow/``, ``/api/promote`` and ``/api/rollback``."""

    def body(request: Request) -> dict[str, Any]:
        return request.state.body

    @act
    async def shadow_start(request: Request) -> Response:
        req: dict = {"cmd": "shadow_start", "bundle": _text(body(request), "bundle", True)}
        if (product := _text(body(request), "product")) is not None:
            req["product"] = product
        return await control(request, req, slow_s)

    @act
    async def shadow_stop(request: Request) -> Response:
        return await control(request, {"cmd": "shadow_stop"}, quick_s)

    @identified
    async def shadow_status(request: Request) -> Response:
        return await control(request, {"cmd": "shadow_status"}, quick_s)

    @act
    async def promote(request: Request) -> Response:
        return await control(
            request, {"cmd": "promote", "persist": _flag(body(request), "persist")}, slow_s
        )

    @act
    async def rollback(request: Request) -> Response:
        req: dict = {"cmd": "rollback", "persist": _flag(body(request), "persist")}
        if (product := _text(body(request), "product")) is not None:
            req["product"] = product
        return await control(request, req, slow_s)

    return [
        Route("/api/shadow/start", shadow_start, methods=["POST"]),
        Route("/api/shadow/stop", shadow_stop, methods=["POST"]),
        Route("/api/shadow/status", shadow_status),
        Route("/api/promote", promote, methods=["POST"]),
        Route("/api/rollback", rollback, methods=["POST"]),
    ]
