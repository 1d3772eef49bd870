"""`afrd web`'s guards, each against the page as its own process on a real daemon (the simulated
cell) with hostile requests over raw sockets: the view token on a wide bind for every kind of
read, capture ids that try to leave the recorder root, the request-body cap, bad JSON, the
``Host`` allow-list (DNS rebinding) and a client that leaves mid-body."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
from pathlib import Path

import pytest
import test_web_api
from _daemon_helpers import wait_for
from test_web_api import trigger

from afrd.web.launch import WebProcess

pytest.importorskip("starlette", reason="afrd web needs the web extra")

cell = test_web_api.cell  # its module fixture: a daemon and page of this module's own
TOKEN = "correct-horse-battery-staple"


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """One request with exactly these headers (``Host`` included when given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def raw(port: int, head: bytes, body=(), timeout: float = 15.0) -> bytes:
    """Send ``head`` and the ``body`` pieces (stopping where the server hangs up), then read
    the answer to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head)
            for piece in body:
                s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: the answer is already on its way
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:  # the reset that ends a refused upload, after the answer
            if not out:
                raise
        return out


def post_head(port: int, path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def a_capture(dm, web, part_id: str) -> dict:
    """Trigger ``part_id`` and return its capture's record once the page lists it."""
    trigger(dm, web, [part_id])
    return wait_for(
        lambda: next(
            (c for c in web.get("/api/captures")["captures"] if c["part_id"] == part_id), None
        ),
        what=f"the capture of {part_id}",
    )


def test_view_token_on_a_wide_bind_guards_every_read(cell, tmp_path: Path) -> None:
    """The page, a live snapshot, a capture's file and an export download: 401 without the
    token, 200 with it (bearer or basic), 200 without it under --open-view."""
    dm, web, d = cell
    cap = a_capture(dm, web, "view-1")
    assert web.post("/api/label", {"id": cap["id"], "label": "good"})[0] == 200
    assert web.post("/api/export", {"ids": [cap["id"]], "name": "view-export"})[0] == 200
    light = web.get(f"/api/capture?id={cap['id']}")["lights"][0]
    reads = [
        "/",
        "/api/live",
        f"/api/capture/file?id={cap['id']}&name={light}",
        "/api/export/download?name=view-export",
    ]
    (tmp_path / "token").write_text(TOKEN + "\n")
    basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    wide = ["--host", "0.0.0.0", "--token-file", str(tmp_path / "token")]
    wide += ["--export-dir", str(d / "exports")]
    for open_view in (False, True):
        page = WebProcess(d / "cell.toml", *wide, *(["--open-view"] if open_view else []))
        page.start()
        try:
            for path in reads:
                status, headers, _ = request(page.port, "GET", path)
                assert status == (200 if open_view else 401), (open_view, path, status)
                if not open_view:
                    assert headers.get("www-authenticate", "").startswith("Basic"), path
                for auth in (f"Bearer {TOKEN}", f"Basic {basic}"):
                    status, _, data = request(
                        page.port, "GET", path, headers={"Authorization": auth}
                    )
                    assert status == 200 and data, (open_view, path, auth[:6], status)
                status, _, _ = request(
                    page.port, "GET", path, headers={"Authorization": "Bearer wrong-" + TOKEN}
                )
                assert status == (200 if open_view else 401), (open_view, path, "wrong token")
        finally:
            page.stop()


def _files(d: Path, root: Path, baits: list[Path]) -> dict[Path, bytes]:
    """Every file outside the recorder root (the page's logs aside) and the baits in it."""
    outside = [p for p in d.rglob("*") if root not in p.parents and p.suffix != ".log"]
    return {p: p.read_bytes() for p in [*outside, *baits] if p.is_file()}


def test_capture_ids_that_leave_the_recorder_root_are_404(cell) -> None:
    """Each id below would, joined onto the root, name a real set.json planted for it (outside
    the root, or inside it but not a capture): all are 404 and no file changes."""
    dm, web, d = cell
    cap = a_capture(dm, web, "trav-1")
    root = d / "captures"
    product, day, part = cap["id"].split("/")
    record = root / cap["id"] / "set.json"
    baits = {
        f"../{day}/{part}": d / day / part,  # outside the root
        f"../{day}/..": d,  # the root's parent
        f"{product}/{day}/..": root / product,  # inside, not a capture
        f"{product}/{day}/.": root / product / day,
        f"./{day}/{part}": root / day / part,
    }
    made = [f for f in (d / day, root / day) if not f.exists()]
    for folder in baits.values():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(record, folder / "set.json")
    planted = [f / "set.json" for f in baits.values()]
    before = _files(d, root, planted)
    ids = [
        *baits,
        f"/{day}/{part}",  # absolute
        str(d / day / part),
        f"%2e%2e/{day}/{part}",  # URL-encoded: taken literally, no such folder
        f"..%2f{day}/{part}",
        f"{product}/{day}/../{part}",
    ]
    try:
        for cid in ids:
            status, reply = web.post("/api/label", {"id": cid, "label": "defective"})
            assert status == 404 and "capture" in reply["error"], (cid, status, reply)
            status, _, _ = request(web.port, "GET", f"/api/capture?id={cid}")
            assert status == 404, (cid, "read", status)
        # JSON-escaped dots decode to "..": the same id, the same refusal
        doc = json.dumps({"id": f"../{day}/{part}", "label": "good"})
        body = doc.replace("../", "\\u002e\\u002e/", 1).encode()
        head = post_head(web.port, "/api/label", f"Content-Length: {len(body)}\r\n")
        assert raw(web.port, head + body).startswith(b"HTTP/1.1 404")
        assert _files(d, root, planted) == before  # nothing written
        assert web.get(f"/api/capture?id={cap['id']}")["label"] is None  # nor the real one
    finally:
        for f in planted:
            f.unlink()
        for f in made:
            shutil.rmtree(f)


def test_an_oversized_body_is_refused_before_it_is_read(cell) -> None:
    """A 200 MB body, declared or chunked, is refused with 413 after at most the cap; the
    page's peak memory does not grow by the body."""
    _, web, _ = cell
    peak = peak_rss_mb(web.proc.pid)
    piece = b"x" * 65536
    head = post_head(web.port, "/api/threshold", f"Content-Length: {200 * 2**20}\r\n")
    reply = raw(web.port, head, [piece])  # the rest is never sent: the answer comes first
    assert reply.startswith(b"HTTP/1.1 413") and b"request body over" in reply, reply[:200]
    head = post_head(web.port, "/api/threshold", "Transfer-Encoding: chunked\r\n")
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    reply = raw(web.port, head, (chunk for _ in range(200 * 16)))  # 200 MB if it were read
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert peak_rss_mb(web.proc.pid) - peak < 50
    assert web.post("/api/threshold", {"threshold": "x" * 1000})[0] == 400  # under: judged


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000, b"nested too deeply"),
        (b'{"threshold": ', b"not JSON"),
        (b"\xff\xfe{}", b"not JSON"),
        (b"[1, 2]", b"must be a JSON object"),
        (b'"pause"', b"must be a JSON object"),
    ],
    ids=["deep", "truncated", "not-utf8", "array", "string"],
)
def test_bad_json_is_400_without_a_traceback(cell, body: bytes, message: bytes) -> None:
    _, web, _ = cell
    head = post_head(web.port, "/api/threshold", f"Content-Length: {len(body)}\r\n")
    reply = raw(web.port, head + body)
    assert reply.startswith(b"HTTP/1.1 400") and message in reply, reply[:300]
    assert "Traceback" not in web.log_path.read_text()


def test_only_allowed_host_names_are_served(cell, tmp_path: Path) -> None:
    """A DNS-rebinding page's requests name its own host (and pass Origin == Host): 421 on
    every route, reads included; loopback names, IP addresses and --allowed-host names work."""
    dm, web, d = cell
    port = web.port
    evil = f"rebind.example:{port}"
    for method, path in (("GET", "/"), ("GET", "/api/live"), ("GET", "/static/common.js")):
        status, _, data = request(port, method, path, headers={"Host": evil})
        assert status == 421 and b"--allowed-host" in data, (path, status)
    status, _, _ = request(
        port,
        "POST",
        "/api/pause",
        b"{}",
        {"Host": evil, "Origin": f"http://{evil}", "Content-Type": "application/json"},
    )
    assert status == 421
    assert dm.ctl({"cmd": "status"})["result"]["state"] == "running"  # not paused
    assert raw(port, b"GET /api/live HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 421")  # no Host
    for host in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"[::1]:{port}",
        "LOCALHOST",
    ):
        assert request(port, "GET", "/api/live", headers={"Host": host})[0] == 200, host
    page = WebProcess(d / "cell.toml", "--allowed-host", "line-pc.example").start()
    try:
        assert (
            request(page.port, "GET", "/api/live", headers={"Host": "line-pc.example:8080"})[0]
            == 200
        )
        assert request(page.port, "GET", "/api/live", headers={"Host": evil})[0] == 421
    finally:
        page.stop()


def test_a_client_leaving_mid_body_logs_one_line(cell) -> None:
    _, web, _ = cell
    head = post_head(web.port, "/api/threshold", "Content-Length: 1000\r\n")
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as s:
        s.sendall(head + b'{"threshold": 0.')  # and leaves, 984 bytes short
    wait_for(lambda: "left mid-body" in web.log_path.read_text(), what="the one-line note")
    log = web.log_path.read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-2000:]
    assert web.get("/api/live")["liveness"]["up"]
