"""The page's HTTP side: static files, a JSON API, and server-sent events (Starlette).

Reads go to the :class:`~afrd.web.live.LiveFeed` (in memory) and the recorder's captures
(disk); the daemon is reached only through its control socket, for the actions a person asks
for (the model's: :mod:`afrd.web.model_actions`), each sent ``on_behalf_of`` the token's holder
(its name and role: the daemon judges the action by that role, 403 here when it falls short,
and records it in its audit log with the body's optional ``reason``); a label, which the page
writes itself, is recorded by the daemon first (``audit_label``) and not written when the
daemon does not answer. Every error is a JSON ``{"ok": false, "error": "..."}`` naming the
problem. Before any route, a request must name an allowed ``Host`` (421 otherwise,
:class:`HostGuard`); an action's body is read with a cap (:mod:`afrd.web.body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from afrd import __version__
from afrd.daemon.ctl import request as ctl_request
from afrd.errors import AfrdError, DataError
from afrd.web.auth import REALM, Access, same_origin
from afrd.web.body import DEFAULT_MAX_BODY, BodyRefused, read_object
from afrd.web.captures import Captures, NotFound, export_folder, tar_stream
from afrd.web.live import LiveFeed, sse
from afrd.web.model_actions import model_routes
from afrd.web.tokens import Identity

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("afrd.web")


@dataclass
class Settings:
    """What the page needs to know about the cell (from its config) and itself."""

    cell: str
    pub: str
    control: str
    captures: Path | None = None  # the recorder's directory; None: review is off
    export_dir: Path = Path("afrd-exports")
    server_key: Path | None = None
    client_key: Path | None = None
    ctl_timeout_s: float = 5.0
    history: int = 500
    strip: int = 30
    stale_after_s: float = 3.0
    shifts: tuple[tuple[int, int], ...] = ((6, 0), (14, 0), (22, 0))
    products: list[str] = field(default_factory=list)
    max_body: int = DEFAULT_MAX_BODY  # bytes an action's body may have (413 beyond)
    model_timeout_s: float = 300.0  # shadow start, promote, rollback: they open an engine


def _err(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]
CLOSE = {"Connection": "close"}


class HostGuard:
    """Answers 421 to a request whose ``Host`` the page was not told to answer to (every
    route, reads too: a DNS-rebinding page could read as well as act)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.access.host_allowed(host):
                shown = host[:100] or "none"
                msg = (
                    f"Host {shown!r} is not a name this page answers to; "
                    "start afrd web with --allowed-host NAME to add it"
                )
                await _err(421, msg, **CLOSE)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, access: Access) -> Starlette:
    captures = Captures(settings.captures) if settings.captures is not None else None
    feed = LiveFeed(
        settings.pub,
        settings.cell,
        history=settings.history,
        stale_after_s=settings.stale_after_s,
        shifts=settings.shifts,
        captures=captures,
    )

    def view(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if not access.may_view(request.headers.get("authorization")):
                return _err(401, "this page needs the token", **{"WWW-Authenticate": REALM})
            try:
                return await fn(request)
            except NotFound as exc:
                return _err(404, str(exc))
            except AfrdError as exc:
                return _err(400, str(exc))

        return wrapped

    def act(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            # a refused action's body is not read: close the connection rather than drain it
            if not same_origin(request.headers.get("origin"), request.headers.get("host")):
                return _err(403, "actions are accepted only from this page's own origin", **CLOSE)
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if ctype != "application/json":
                got = ctype or "none"
                return _err(415, f"expected an application/json body, got {got!r}", **CLOSE)
            who = access.identify(request.headers.get("authorization"))
            if who is None:
                return _err(
                    401, "this action needs the page's token (unlock it at the top)", **CLOSE
                )
            request.state.who = who
            try:
                request.state.body = await read_object(request, settings.max_body)
            except BodyRefused as exc:
                return _err(exc.status, str(exc), **CLOSE)
            except ClientDisconnect:
                log.info("%s %s: the client left mid-body", request.method, request.url.path)
                return Response(status_code=400)  # nobody is there to read it
            return await view(fn)(request)

        return wrapped

    def identified(fn: Handler) -> Handler:
        """A read the daemon answers for the token's holder (a GET: no body, no origin rule;
        another site cannot read its answer)."""

        async def wrapped(request: Request) -> Response:
            who = access.identify(request.headers.get("authorization"))
            if who is None:
                return _err(401, "this needs the page's token (unlock it at the top)")
            request.state.who, request.state.body = who, {}
            return await view(fn)(request)

        return wrapped

    def need_captures() -> Captures:
        if captures is None:
            raise NotFound("review is off: the cell config's recorder is not enabled")
        return captures

    async def ask(request: Request, req: dict, timeout_s: float | None = None) -> dict | None:
        """``req`` sent for the action's token holder, with the body's ``reason``; None when
        the daemon did not answer within ``timeout_s`` (default ``ctl_timeout_s``)."""
        who: Identity = request.state.who
        obo = {"name": who.name, "via": "web"}
        if who.role is not None:
            obo["role"] = who.role
        reason = request.state.body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise DataError(f"reason: expected text, got {type(reason).__name__}")
        req = {**req, "on_behalf_of": obo, **({"reason": reason} if reason else {})}
        return await asyncio.to_thread(
            ctl_request,
            settings.control,
            req,
            timeout_s or settings.ctl_timeout_s,
            settings.server_key,
            settings.client_key,
        )

    def refused(reply: dict) -> Response:
        """403 for want of a role (the daemon recorded it), 409 for any other refusal."""
        return JSONResponse(reply, status_code=403 if reply.get("needs_role") else 409)

    async def control(request: Request, req: dict, timeout_s: float | None = None) -> Response:
        reply = await ask(request, req, timeout_s)
        if reply is None:
            return _err(504, f"the daemon's control socket {settings.control} did not answer")
        return JSONResponse(reply) if reply.get("ok") else refused(reply)

    async def index(request: Request) -> Response:
        if not access.may_view(request.headers.get("authorization")):
            return _err(401, "this page needs the token", **{"WWW-Authenticate": REALM})
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @view
    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "version": __version__,
                "cell": settings.cell,
                "pub": settings.pub,
                "control": settings.control,
                "review": captures is not None,
                "actions_need_token": access.needs_token,
                "authorized": access.may_act(request.headers.get("authorization")),
                "role": getattr(
                    access.identify(request.headers.get("authorization")), "role", None
                ),
                "strip": settings.strip,
                "products": settings.products,
            }
        )

    @view
    async def live(request: Request) -> Response:
        return JSONResponse(feed.snapshot())

    @view
    async def events(request: Request) -> Response:
        q = feed.subscribe()

        async def stream():
            try:
                yield sse("hello", feed.snapshot())
                while not request.app.state.stopping():  # the server is shutting down
                    try:
                        event, data = await asyncio.wait_for(q.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        event, data = "tick", feed.liveness()
                    yield sse(event, data)
            finally:
                feed.unsubscribe(q)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def part_image(request: Request, found, what: str, media_type: str) -> Response:
        """A kept per-part image (``found``: the feed's lookup by seq), or 404 naming it."""
        seq = int(request.path_params["seq"])
        got = found(seq)
        if got is None:
            raise NotFound(f"no {what} for part #{seq} (not kept any more)")
        return Response(got[1], media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @view
    async def heatmap(request: Request) -> Response:
        return part_image(request, feed.heatmap, "heatmap", "image/png")

    @view
    async def lights(request: Request) -> Response:
        return part_image(request, feed.lights_mosaic, "lights", "image/jpeg")

    @view
    async def capture_list(request: Request) -> Response:
        q = request.query_params

        def num(key: str) -> float | None:
            v = q.get(key)
            if v in (None, ""):
                return None
            try:
                return float(v)
            except ValueError:
                raise DataError(f"{key}={v!r}: expected a number") from None

        c = need_captures()
        items, total = await asyncio.to_thread(
            c.query,
            q.get("day") or None,
            q.get("verdict") or None,
            q.get("label") or None,
            num("min_score"),
            num("max_score"),
            q.get("product") or None,
        )
        days, products = await asyncio.to_thread(lambda: (c.days(), c.products()))
        return JSONResponse({"days": days, "products": products, "captures": items, "total": total})

    @view
    async def capture_one(request: Request) -> Response:
        return JSONResponse(
            await asyncio.to_thread(need_captures().get, request.query_params.get("id", ""))
        )

    @view
    async def capture_file(request: Request) -> Response:
        q = request.query_params
        path = await asyncio.to_thread(need_captures().file, q.get("id", ""), q.get("name", ""))
        return FileResponse(path, headers={"Cache-Control": "max-age=60"})

    @act
    async def set_threshold(request: Request) -> Response:
        body = request.state.body
        value = body.get("threshold")
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise DataError(f"threshold: expected a finite number, got {value!r}")
        req: dict = {"cmd": "set_threshold", "threshold": float(value)}
        if body.get("persist"):
            req["persist"] = True
        if body.get("product"):
            req["product"] = str(body["product"])
        return await control(request, req)

    def simple(cmd: str) -> Handler:
        @act
        async def handler(request: Request) -> Response:
            return await control(request, {"cmd": cmd})

        return handler

    @act
    async def label(request: Request) -> Response:
        body = request.state.body
        lab = body.get("label")
        names = {"good": 0, "defective": 1, "clear": None}
        if lab not in names:
            raise DataError(f"label {lab!r}: expected good, defective or clear")
        c, cid = need_captures(), body.get("id", "")
        old = (await asyncio.to_thread(c.get, cid))["label"]  # NotFound: 404, nothing recorded
        reply = await ask(request, {"cmd": "audit_label", "id": cid, "old": old, "new": names[lab]})
        if reply is None:  # an unrecorded label would be a hole in the audit log
            return _err(
                503,
                f"not labelled: the daemon keeps the audit log and its control socket "
                f"{settings.control} did not answer",
            )
        if not reply.get("ok"):
            return refused(reply)
        doc = await asyncio.to_thread(c.label, cid, names[lab])
        return JSONResponse({"ok": True, "capture": doc})

    @act
    async def export(request: Request) -> Response:
        body = request.state.body
        result = await asyncio.to_thread(
            need_captures().export, body.get("ids"), settings.export_dir, body.get("name") or None
        )
        return JSONResponse({"ok": True, **result})

    @view
    async def export_download(request: Request) -> Response:
        d = export_folder(settings.export_dir, request.query_params.get("name", ""))
        return StreamingResponse(
            tar_stream(d),
            media_type="application/x-tar",
            headers={"Content-Disposition": f'attachment; filename="{d.name}.tar"'},
        )

    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        task = asyncio.create_task(feed.run(stop))
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(task, 2.0)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/live", live),
        Route("/api/events", events),
        Route("/api/heatmap/{seq:int}.png", heatmap),
        Route("/api/lights/{seq:int}.jpg", lights),
        Route("/api/captures", capture_list),
        Route("/api/capture", capture_one),
        Route("/api/capture/file", capture_file),
        Route("/api/threshold", set_threshold, methods=["POST"]),
        Route("/api/pause", simple("pause"), methods=["POST"]),
        Route("/api/resume", simple("resume"), methods=["POST"]),
        Route("/api/label", label, methods=["POST"]),
        *model_routes(act, identified, control, settings.ctl_timeout_s, settings.model_timeout_s),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/export/download", export_download),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(HostGuard, access)])
    app.state.feed = feed
    app.state.stopping = lambda: False  # afrd web's server replaces it
    return app
