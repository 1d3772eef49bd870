"""`afrd web` against the real daemon on the simulated cell, over real HTTP and ZeroMQ: the live
feed, server-sent events, threshold (applied and persisted), review labels and export, access
rules, and the heartbeat banner's state."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest
from _daemon_helpers import daemon_and_web, wait_for

from afrd.config.cell import load_config
from afrd.data.capture import CaptureDataset
from afrd.sim.launch import Daemon, make_brightness_bundle, write_config
from afrd.web.launch import REPO, WebProcess, recorder_toml

pytest.importorskip("starlette", reason="afrd web needs the web extra")
pytest.importorskip("tomlkit", reason="threshold persistence needs the web extra")


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    d = tmp_path_factory.mktemp("webcell")
    bundle = d / "bundle"
    make_brightness_bundle(bundle, size=64)
    cfg = write_config(d, bundle, extra=recorder_toml(d / "captures"))
    with daemon_and_web(cfg, "--export-dir", str(d / "exports"), "--strip", "10") as (dm, web):
        yield dm, web, d


def trigger(dm: Daemon, web: WebProcess, part_ids: list[str]) -> list[dict]:
    for pid in part_ids:
        assert dm.ctl({"cmd": "trigger", "part_id": pid})["ok"]

    def seen():
        got = {r["part_id"]: r for r in web.get("/api/live")["results"]}
        return [got[p] for p in part_ids] if all(p in got for p in part_ids) else None

    return wait_for(seen, what=f"results for {part_ids}")


def test_live_feed_heatmaps_and_linked_captures(cell) -> None:
    dm, web, _ = cell
    results = trigger(dm, web, ["live-1", "live-2", "live-3"])
    assert [r["verdict"] in ("pass", "fail") for r in results] == [True] * 3
    seq = results[-1]["seq"]
    wait_for(lambda: seq in web.get("/api/live")["heatmap_seqs"], what="the heatmap (after it)")
    png = web.get(f"/api/heatmap/{seq}.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the recorder keeps every part here (pass_sample_rate 1): the page links each to its capture
    # and stores the overlay beside it
    live = wait_for(
        lambda: (lv := web.get("/api/live")) and lv["results"][-1].get("capture") and lv,
        what="the capture link",
    )
    cid = live["results"][-1]["capture"]
    assert cid.endswith("/live-3")
    cap = web.get(f"/api/capture?id={cid}")
    assert cap["score"] == results[-1]["score"] and len(cap["lights"]) == 6
    wait_for(lambda: web.get(f"/api/capture?id={cid}")["heatmap"], what="heatmap.png stored")
    assert web.get(f"/api/capture/file?id={cid}&name=heatmap")[:4] == b"\x89PNG"
    shift = live["shift"]
    assert shift["pass"] + shift["fail"] + shift["error"] == len(live["results"])
    assert live["status"]["state"] == "running"


def _sse_events(
    port: int, until: str, timeout: float = 15.0, hello: threading.Event | None = None
) -> list[tuple[str, dict]]:
    """The page's server-sent events up to one mentioning ``until``; ``hello`` is set once the
    stream's first event (its hello) came, so the caller knows the stream is live."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    buf, events = b"", []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            buf += s.recv(65536)
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                lines = dict(ln.split(": ", 1) for ln in block.decode().splitlines() if ": " in ln)
                if "event" in lines:
                    events.append((lines["event"], json.loads(lines["data"])))
                    if hello is not None:
                        hello.set()
                    if until in json.dumps(events[-1][1]):
                        return events
    finally:
        s.close()
    raise AssertionError(f"no event mentioning {until!r}; got {[e for e, _ in events]}")


def test_server_sent_events_carry_results(cell) -> None:
    dm, web, _ = cell
    got: list = []
    hello = threading.Event()
    t = threading.Thread(target=lambda: got.extend(_sse_events(web.port, "sse-part", hello=hello)))
    t.start()
    assert hello.wait(15), "no hello on the event stream"
    assert dm.ctl({"cmd": "trigger", "part_id": "sse-part"})["ok"]
    t.join(20)
    kinds = [e for e, _ in got]
    assert kinds[0] == "hello" and "result" in kinds
    result = next(d["result"] for e, d in got if e == "result")
    assert result["part_id"] == "sse-part" and result["schema"] == "afrd.result/1"


def test_threshold_applied_and_persisted(cell) -> None:
    dm, web, d = cell
    before = (d / "cell.toml").read_text()
    status, reply = web.post("/api/threshold", {"threshold": -1.0})
    assert status == 200 and reply["result"]["threshold"] == -1.0
    assert reply["result"]["persisted"] is False
    (r,) = trigger(dm, web, ["thr-low"])
    assert r["threshold"] == -1.0 and r["verdict"] == "fail"  # every score is > -1
    assert (d / "cell.toml").read_text() == before  # not persisted unless asked
    status, reply = web.post("/api/threshold", {"threshold": 2.0, "persist": True})
    assert status == 200 and reply["result"]["persisted"] is True, reply
    assert load_config(d / "cell.toml").threshold == 2.0
    (r,) = trigger(dm, web, ["thr-high"])
    assert r["threshold"] == 2.0 and r["verdict"] == "pass"
    status, reply = web.post("/api/threshold", {"threshold": "high"})
    assert status == 400 and "finite number" in reply["error"]
    status, reply = web.post("/api/threshold", {"threshold": 5e6})
    assert status == 409 and "set_threshold" in reply["error"]  # the daemon's own refusal


def test_label_in_review_reaches_the_training_reader_and_export(cell) -> None:
    dm, web, d = cell
    trigger(dm, web, ["rev-good", "rev-bad"])
    caps = wait_for(
        lambda: (
            {
                c["part_id"]: c
                for c in web.get("/api/captures")["captures"]
                if "rev-" in c["part_id"]
            }.get("rev-bad")
            and web.get("/api/captures")["captures"]
        ),
        what="the captures to be listed",
    )
    ids = {c["part_id"]: c["id"] for c in caps}
    assert web.post("/api/label", {"id": ids["rev-good"], "label": "good"})[0] == 200
    assert web.post("/api/label", {"id": ids["rev-bad"], "label": "defective"})[0] == 200
    labelled = {s.part_id: s.label for s in CaptureDataset(d / "captures", split="test", size=None)}
    assert labelled == {"rev-good": 0, "rev-bad": 1}
    assert [s.part_id for s in CaptureDataset(d / "captures", split="train")] == ["rev-good"]
    only_bad = web.get("/api/captures?label=defective")
    assert [c["part_id"] for c in only_bad["captures"]] == ["rev-bad"] and only_bad["total"] == 1
    assert only_bad["products"] == ["default"]
    assert web.get("/api/captures?product=other")["captures"] == []
    scored = web.get(f"/api/captures?min_score={only_bad['captures'][0]['score']}")["captures"]
    assert scored and all(c["score"] >= only_bad["captures"][0]["score"] for c in scored)
    status, out = web.post("/api/export", {"ids": list(ids.values()), "name": "review-1"})
    assert status == 200 and out["exported"] == 2 and out["good"] == 1, out
    exported = CaptureDataset(out["path"], split="test")
    assert sorted(zip(exported.labels, [s.part_id for s in exported], strict=True)) == [
        (0, "rev-good"),
        (1, "rev-bad"),
    ]
    assert web.post("/api/export", {"ids": list(ids.values()), "name": "review-1"})[0] == 400
    # the same dataset as a download, for training on another machine
    import io
    import tarfile

    data = web.get("/api/export/download?name=review-1")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "review-1/export.json" in tar.getnames()
        tar.extractall(d / "downloaded", filter="data")
    again = CaptureDataset(d / "downloaded" / "review-1", split="test")
    assert sorted(again.labels) == [0, 1]
    with pytest.raises(urllib.error.HTTPError) as e:
        web.get("/api/export/download?name=../captures")
    assert e.value.code == 404
    for bad in ("../../etc", "default/2026-01-01/../../x", "a/b/c"):
        status, reply = web.post("/api/label", {"id": bad, "label": "good"})
        assert status == 404 and "capture" in reply["error"]


def test_actions_only_from_this_origin_as_json(cell) -> None:
    _, web, _ = cell
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        web.base + "/api/pause",
        b"{}",
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    req = urllib.request.Request(
        web.base + "/api/pause", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 415


def test_token_guards_actions_and_wide_binds(cell, tmp_path: Path) -> None:
    dm, _, d = cell
    token = "correct-horse-battery-staple"
    (tmp_path / "token").write_text(token + "\n")
    web = WebProcess(d / "cell.toml", "--token-file", str(tmp_path / "token"), token=token)
    web.start()
    try:
        assert web.get("/api/info", auth=False)["actions_need_token"] is True  # loopback: view
        status, reply = web.post("/api/pause", {}, auth=False)
        assert status == 401 and "token" in reply["error"]
        web.token = "wrong-token-wrong-token"
        assert web.post("/api/pause", {})[0] == 401
        web.token = token
        status, reply = web.post("/api/pause", {})
        assert status == 200 and reply["result"] == {"paused": True}
        assert web.post("/api/resume", {})[0] == 200
    finally:
        web.stop()
    run = subprocess.run(
        [sys.executable, "-m", "afrd", "web", "--config", str(d / "cell.toml")]
        + ["--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 2 and "--token-file" in run.stderr and "0.0.0.0" in run.stderr


def test_a_browser_that_falls_behind_is_resynced_not_waited_for(cell) -> None:
    """The fan-out on the daemon's real messages: a queue nobody drains stays bounded and ends
    in one ``resync``; a browser that reads gets every result."""
    import asyncio

    from afrd.sim.launch import collect, wait_subscribed
    from afrd.web.live import CLIENT_QUEUE, LiveFeed

    dm, web, _ = cell
    sub = dm.subscriber()
    try:
        wait_subscribed(sub)
        ids = [f"fan-{i}" for i in range(8)]
        for pid in ids:
            assert dm.ctl({"cmd": "trigger", "part_id": pid})["ok"]
        frames = collect(sub, len(ids))
    finally:
        sub.close()

    async def replay() -> tuple[list, list]:
        feed = LiveFeed("ipc:///nonexistent")
        stuck, reader = feed.subscribe(), feed.subscribe()
        got = []
        for _ in range(12):  # ~100+ events: more than one queue holds
            for f in frames:
                feed.handle(f)
                while not reader.empty():
                    got.append(reader.get_nowait())
        left = [stuck.get_nowait() for _ in range(stuck.qsize())]
        return got, left

    got, left = asyncio.run(replay())
    assert sum(e == "result" for e, _ in got) == 12 * len(ids)
    assert 0 < len(left) <= CLIENT_QUEUE and ("resync", {}) in left


def test_browsers_that_leave_are_forgotten(cell) -> None:
    _, web, _ = cell
    base = web.get("/api/live")["browsers"]
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", web.port), timeout=5)
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.recv(1024)  # the stream has started
        socks.append(s)
    assert wait_for(lambda: web.get("/api/live")["browsers"] == base + 3, what="3 browsers")
    for s in socks:
        s.close()
    assert wait_for(lambda: web.get("/api/live")["browsers"] == base, what="browsers gone")


def test_a_products_threshold_from_the_page(tmp_path: Path) -> None:
    """With [[product]] recipes the page sets (and saves) one product's threshold; the other
    product's parts keep theirs."""
    make_brightness_bundle(tmp_path / "bundle", size=64)
    recipes = '\n[[product]]\nname = "blue"\n\n[[product]]\nname = "red"\nthreshold = 0.9\n'
    cfg = write_config(tmp_path, tmp_path / "bundle")
    cfg.write_text(cfg.read_text() + recipes)
    dm = Daemon(cfg).start()
    web = WebProcess(cfg).start()
    try:
        wait_for(lambda: web.get("/api/live")["status"], what="a heartbeat")
        assert set(web.get("/api/live")["status"]["recipes"]) == {"blue", "red"}
        status, reply = web.post("/api/threshold", {"threshold": -1.0, "product": "blue"})
        assert status == 200 and reply["result"]["product"] == "blue", reply
        status, reply = web.post(
            "/api/threshold", {"threshold": 1.5, "product": "red", "persist": True}
        )
        assert reply["result"]["persisted"] is True, reply
        saved = {p.name: p.threshold for p in load_config(cfg).product}
        assert saved == {"blue": None, "red": 1.5}  # blue was applied, not saved
        for pid, prod in (("b1", "blue"), ("r1", "red")):
            assert dm.ctl({"cmd": "trigger", "part_id": pid, "product": prod})["ok"]
        got = wait_for(
            lambda: (
                (r := {x["part_id"]: x for x in web.get("/api/live")["results"]})
                and {"b1", "r1"} <= set(r)
                and r
            ),
            what="both products' results",
        )
        assert (got["b1"]["threshold"], got["b1"]["verdict"]) == (-1.0, "fail")
        assert (got["r1"]["threshold"], got["r1"]["verdict"]) == (1.5, "pass")
        status, reply = web.post("/api/threshold", {"threshold": 0.5, "product": "green"})
        assert status == 409 and "green" in reply["error"]
    finally:
        web.stop()
        dm.stop()


def test_heartbeat_loss_and_a_daemon_restart(cell) -> None:
    """Last of the module's daemon tests: stops it (the page reports it down), starts it again
    (seqs start from 0 again: each result keeps its own capture, never another part's)."""
    dm, web, _ = cell
    assert web.get("/api/live")["liveness"]["up"] is True
    dm.stop()
    lv = wait_for(
        lambda: (x := web.get("/api/live")["liveness"]) and not x["up"] and x, what="stale"
    )
    assert lv["heartbeat_age_s"] >= 3.0
    dm.start()
    wait_for(lambda: web.get("/api/live")["liveness"]["up"], what="the heartbeat again")
    (new,) = trigger(dm, web, ["after-restart"])
    assert new["seq"] == 0
    live = wait_for(
        lambda: (lv := web.get("/api/live")) and lv["results"][-1].get("capture") and lv,
        what="the new part's capture",
    )
    for r in live["results"]:
        if r.get("capture"):
            assert r["capture"].endswith("/" + r["part_id"]), r
    first = next(r for r in live["results"] if r["part_id"] == "live-1")
    assert first["seq"] == 0 and first["capture"].endswith("/live-1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{d}/missing.toml"], "missing.toml: config file not found"),
        (["--config", "{cfg}", "--token-file", "{d}/short"], "at least 16 characters"),
        (["--config", "{cfg}", "--token-file", "{d}/none"], "none: cannot read it"),
        (["--config", "{cfg}", "--shifts", "6am"], "'6am' is not HH:MM"),
        (["--config", "{cfg}", "--port", "0"], "--port 0: expected 1-65535"),
        (["--config", "{cfg}", "--max-body-kib", "0"], "--max-body-kib 0: expected 1-65536"),
        (["--config", "{cfg}", "--allowed-host", "a b:x"], "--allowed-host 'a b:x': expected"),
    ],
)
def test_bad_command_lines_name_the_problem(tmp_path: Path, capsys, args, message) -> None:
    from afrd.cli import main

    cfg = write_config(tmp_path, tmp_path / "bundle")
    (tmp_path / "short").write_text("abc\n")
    argv = ["web"] + [a.format(d=tmp_path, cfg=cfg) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
