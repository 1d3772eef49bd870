"""The opt-in ``lights.<cell>`` topic ([lights_preview]): the real daemon on the simulated cell
publishes a JPEG mosaic of each part's six lights after its result, the page shows it for parts
the recorder did not keep, and a reload with the key off stops it."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from _daemon_helpers import daemon_and_web, wait_for

from afrd.config.cell import load_config
from afrd.daemon.verdict import parse_message
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import ConfigError
from afrd.sim.launch import Daemon, make_brightness_bundle, wait_subscribed, write_config
from afrd.web.launch import recorder_toml

pytest.importorskip("starlette", reason="afrd web needs the web extra")

PREVIEW = "[lights_preview]\nenabled = true\nmax_px = 32\n"


def _decode(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def _tiles(msg: dict, img: np.ndarray) -> dict[str, np.ndarray]:
    th, tw, c = msg["tile_height"], msg["tile_width"], msg["columns"]
    return {
        n: img[(i // c) * th : (i // c + 1) * th, (i % c) * tw : (i % c + 1) * tw]
        for i, n in enumerate(msg["lights"])
    }


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    d = tmp_path_factory.mktemp("lightscell")
    make_brightness_bundle(d / "bundle", size=64)
    # the recorder keeps every fail and no pass: a passing part has no capture on disk
    rec = recorder_toml(d / "captures", pass_sample_rate=0.0)
    cfg = write_config(d, d / "bundle", extra=PREVIEW + rec)
    with daemon_and_web(cfg) as (dm, web):
        yield dm, web, d


def _part(dm: Daemon, sub, part_id: str, timeout: float = 15.0) -> dict[str, tuple]:
    """Trigger one part; its messages by kind (result, heatmap, lights: whatever came)."""
    assert dm.ctl({"cmd": "trigger", "part_id": part_id})["ok"]
    got: dict[str, tuple] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ("result" in got and "heatmap" in got):
        if sub.poll(200):
            kind, _cell, msg, img = parse_message(sub.recv_multipart())
            if msg.get("part_id") == part_id:
                got[kind] = (msg, img)
    # whatever follows the heatmap (the lights, when on) within a second
    deadline = time.monotonic() + 1.0
    while "lights" not in got and (left := deadline - time.monotonic()) > 0:
        if sub.poll(int(left * 1000) + 1):
            kind, _cell, msg, img = parse_message(sub.recv_multipart())
            if msg.get("part_id") == part_id:
                got[kind] = (msg, img)
    return got


def test_topic_decodes_to_the_parts_six_lights_then_reload_turns_it_off(cell) -> None:
    dm, web, d = cell
    sub = dm.subscriber()
    wait_subscribed(sub)
    assert dm.ctl({"cmd": "set_threshold", "threshold": -1.0})["ok"]  # fails: all recorded
    got = _part(dm, sub, "lp-fail")
    (msg, jpeg), result = got["lights"], got["result"][0]
    assert msg["schema"] == "afrd.lights/1" and msg["seq"] == result["seq"]
    assert msg["lights"] == list(DEFAULT_LIGHTS) and len(msg["lights"]) == 6
    img = _decode(jpeg)
    assert img.shape == (msg["height"], msg["width"], 3) == (64, 96, 3)  # 3 x 2 tiles of 32 px
    # each tile is that light, downscaled: compare with the recorder's full-size copy
    cid = wait_for(lambda: web.get("/api/live")["results"][-1].get("capture"), what="capture")
    small = {
        n: cv2.resize(
            _decode(web.get(f"/api/capture/file?id={cid}&name={n}")),
            (32, 32),
            interpolation=cv2.INTER_AREA,
        ).astype(int)
        for n in msg["lights"]
    }
    for name, tile in _tiles(msg, img).items():
        diffs = {n: np.abs(tile.astype(int) - s).mean() for n, s in small.items()}
        assert min(diffs, key=diffs.get) == name and diffs[name] < 12, (name, diffs)
    # off again by a reload: results and heatmaps go on, lights stop
    cfg = d / "cell.toml"
    cfg.write_text(cfg.read_text().replace("enabled = true\nmax_px", "enabled = false\nmax_px"))
    try:
        assert dm.ctl({"cmd": "reload"})["ok"]
        got = _part(dm, sub, "lp-off")
        assert "result" in got and "heatmap" in got and "lights" not in got
    finally:
        cfg.write_text(cfg.read_text().replace("enabled = false\nmax_px", "enabled = true\nmax_px"))
        assert dm.ctl({"cmd": "reload"})["ok"]
        sub.close()


def test_page_shows_lights_of_a_part_the_recorder_did_not_keep(cell) -> None:
    dm, web, d = cell
    assert dm.ctl({"cmd": "set_threshold", "threshold": 2.0})["ok"]  # passes: none recorded
    assert dm.ctl({"cmd": "trigger", "part_id": "lp-pass"})["ok"]
    r = wait_for(
        lambda: next((r for r in web.get("/api/live")["results"] if r["part_id"] == "lp-pass"), 0),
        what="the result",
    )
    assert r["verdict"] == "pass"
    live = wait_for(
        lambda: (lv := web.get("/api/live")) and str(r["seq"]) in lv["lights"] and lv,
        what="the lights preview",
    )
    tiles = live["lights"][str(r["seq"])]
    assert tiles["lights"] == list(DEFAULT_LIGHTS) and tiles["columns"] == 3
    img = _decode(web.get(f"/api/lights/{r['seq']}.jpg"))
    assert img.shape == (tiles["height"], tiles["width"], 3)
    assert not list((d / "captures").rglob("lp-pass*"))  # the recorder did not keep it


def test_bad_lights_preview_values_are_refused(tmp_path) -> None:
    for bad, key in (("max_px = 4", "max_px"), ("quality = 101", "quality"), ("size = 9", "size")):
        cfg = write_config(tmp_path, tmp_path / "b", extra=f"[lights_preview]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(cfg)


def test_live_view_draws_the_preview_tiles(cell) -> None:
    """In a real browser: the Live view shows the six tiles of a part the recorder did not keep."""
    import os
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.access(chromium, os.X_OK) and os.access(driver, os.X_OK)):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    dm, web, _ = cell
    assert dm.ctl({"cmd": "set_threshold", "threshold": 2.0})["ok"]  # a pass: not recorded
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        drv.get(web.base + "/#live")
        WebDriverWait(drv, 20).until(lambda d: d.execute_script("return !!afrd.info"))
        assert dm.ctl({"cmd": "trigger", "part_id": "lp-browser"})["ok"]
        tiles = WebDriverWait(drv, 20, poll_frequency=0.1).until(
            lambda d: d.execute_script(
                "return document.getElementById('part').innerText.includes('lp-browser') && "
                "[...document.querySelectorAll('#lights .tile')].map(t => t.dataset.light)"
            ),
            message="the preview tiles",
        )
        assert tiles == list(DEFAULT_LIGHTS)
        assert "preview" in drv.execute_script("return $('#lights-note').innerText")
    finally:
        drv.quit()
