"""The operator's page in a real headless Chromium against the real daemon on the simulated cell.

The live view follows triggered parts (verdict, heatmap, lights, strip), the histogram shows the
recent scores, dragging and applying the threshold changes the next verdicts (and persists it),
a part labelled in review reaches `afrd train`'s dataset reader with that label, and the banner
appears when the heartbeat stops. Screenshots of each view at 1280x800 are taken every run; with
AFRD_UPDATE_SCREENSHOTS=1 they replace docs/screenshots/ (so CI never dirties the tree).

Needs Debian's chromium and chromium-driver (`make test` installs them where apt-get works) and
the selenium package (dev extra); selenium is pointed at /usr/bin/chromedriver, so nothing is
downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _daemon_helpers import daemon_and_web

from afrd.config.cell import load_config
from afrd.data.capture import CaptureDataset
from afrd.sim.launch import Daemon, make_brightness_bundle, write_config
from afrd.web.launch import REPO, WebProcess, recorder_toml

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed "
        "(apt-get install chromium chromium-driver; make test does it where apt works)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) not installed")
pytest.importorskip("starlette", reason="afrd web needs the web extra")
pytest.importorskip("tomlkit", reason="threshold persistence needs the web extra")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = REPO / "docs" / "screenshots"
W, H = 1280, 800


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    d = tmp_path_factory.mktemp("browsercell")
    make_brightness_bundle(d / "bundle", size=64, threshold=0.5)
    cfg = write_config(
        d, d / "bundle", size=64, extra=recorder_toml(d / "captures"), defect_rate=0.5
    )
    web_args = ("--export-dir", str(d / "exports"), "--strip", "20")
    with daemon_and_web(cfg, *web_args, heartbeat=False) as (dm, web):
        yield dm, web, d


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.add_argument(f"--window-size={W},{H}")
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": W, "height": H, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield drv
    finally:
        drv.quit()


def until(drv, fn, timeout: float = 20.0, what: str = ""):
    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(
        lambda d: fn(d), message=f"timed out waiting for {what}"
    )


def js(drv, script: str, *args):
    return drv.execute_script(script, *args)


_PAINTED = (
    "return document.readyState === 'complete' && "
    "[...document.images].every(i => i.complete && (!i.src || i.naturalWidth > 0))"
)


def shot(drv, name: str, tmp: Path) -> Path:
    out = (SHOTS if os.environ.get("AFRD_UPDATE_SCREENSHOTS") == "1" else tmp) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    until(drv, lambda d: js(d, _PAINTED), what="images decoded")
    # two animation frames: whatever the page changed last has been painted
    drv.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
    drv.save_screenshot(str(out))
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (W, H), f"{name}: screenshot {im.size}, expected {(W, H)}"
    return out


def text(drv, element_id: str) -> str:
    """An element's text read in the page (parts of it are rebuilt: no stale references)."""
    return js(
        drv,
        "const e=document.getElementById(arguments[0]); return e ? e.innerText : ''",
        element_id,
    )


def trigger(dm: Daemon, ids: list[str]) -> None:
    for pid in ids:
        assert dm.ctl({"cmd": "trigger", "part_id": pid})["ok"]


def test_actions_need_the_token(cell, browser, tmp_path: Path) -> None:
    """A page with a token: looking is open on loopback, Pause is refused until the operator
    unlocks the page with the token, then it pauses the daemon."""
    dm, _, d = cell
    token = "line-3-supervisor-token"
    (tmp_path / "token").write_text(token)
    web = WebProcess(d / "cell.toml", "--token-file", str(tmp_path / "token")).start()
    drv = browser
    try:
        drv.get(web.base + "/#live")
        until(drv, lambda d: text(d, "daemon") == "running", what="the page")
        lock = drv.find_element(By.ID, "lock")
        assert lock.is_displayed()
        drv.find_element(By.ID, "pause").click()
        until(drv, lambda d: "needs the page's token" in text(d, "toast"), what="the refusal")
        assert dm.ctl({"cmd": "status"})["result"]["state"] == "running"
        drv.find_element(By.ID, "token").send_keys(token)
        drv.find_element(By.ID, "unlock").click()
        until(drv, lambda d: not lock.is_displayed(), what="unlocked")
        drv.find_element(By.ID, "pause").click()
        until(drv, lambda _: dm.ctl({"cmd": "status"})["result"]["state"] == "paused", what="pause")
        until(drv, lambda d: text(d, "daemon") == "paused", what="the paused pill")
        drv.find_element(By.ID, "resume").click()
        until(drv, lambda _: dm.ctl({"cmd": "status"})["result"]["state"] == "running", what="run")
    finally:
        drv.execute_script("sessionStorage.clear()")
        web.stop()


def test_the_page_in_chromium(cell, browser, tmp_path: Path) -> None:
    dm, web, d = cell
    drv = browser
    drv.get(web.base + "/#live")
    until(drv, lambda d: d.find_element(By.ID, "daemon").text == "running", what="daemon state")

    # -- live: the view follows parts as a PLC triggers them ----------------------------------
    ids = [f"SN-{i:04d}" for i in range(12)]
    trigger(dm, ids)
    until(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip .chip")) == 12, what="strip")
    results = {r["part_id"]: r for r in web.get("/api/live")["results"]}
    last = results[ids[-1]]
    verdict = until(drv, lambda d: d.find_element(By.ID, "verdict"), what="verdict")
    until(drv, lambda d: verdict.get_attribute("data-seq") == str(last["seq"]), what="last part")
    assert verdict.text == last["verdict"].upper()
    assert f"{last['score']:.4f}" in drv.find_element(By.ID, "score").text
    until(
        drv,
        lambda d: (
            js(
                d,
                "const i=document.getElementById('heatmap'); return i.complete && "
                "i.naturalWidth > 0 && i.dataset.seq",
            )
            == str(last["seq"])
        ),
        what="the heatmap of the last part",
    )
    until(
        drv,
        lambda d: (
            js(
                d,
                "return [...document.querySelectorAll('#lights img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length",
            )
            == 6
        ),
        what="the six lights of the last part",
    )
    shift_total = sum(int(drv.find_element(By.ID, k).text) for k in ("n-pass", "n-fail", "n-error"))
    assert shift_total == 12
    shot(drv, "live", tmp_path)

    # -- threshold: the histogram has the recent scores; drag, see the effect, apply ----------
    drv.find_element(By.CSS_SELECTOR, "nav a[data-view=threshold]").click()
    until(drv, lambda d: d.find_element(By.ID, "hist-n").text == "12", what="histogram count")
    coloured = js(
        drv,
        "const c=document.getElementById('hist'), x=c.getContext('2d')"
        ".getImageData(0,0,c.width,c.height).data; let g=0, r=0;"
        "for (let i=0;i<x.length;i+=4){ if(x[i]==0x2e&&x[i+1]==0x9d&&x[i+2]==0x57) g++;"
        " if(x[i]==0xd0&&x[i+1]==0x34&&x[i+2]==0x2c) r++; } return [g, r];",
    )
    n_pass = sum(r["verdict"] == "pass" for r in results.values())
    assert n_pass > 0 and coloured[0] > 0  # pass bars drawn
    assert (coloured[1] > 0) == (n_pass < 12)  # fail bars exactly when there are fails
    canvas = drv.find_element(By.ID, "hist")
    width = canvas.rect["width"]
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    grab = -width / 2 + 60  # from the element's centre: just inside the plot's left edge
    chain = ActionChains(drv).move_to_element_with_offset(canvas, grab, 0).click_and_hold()
    chain.move_by_offset(-10, 0).move_by_offset(-8, 0).release().perform()
    new = float(drv.find_element(By.ID, "thr-input").get_attribute("value"))
    lowest = min(r["score"] for r in results.values())
    assert new < lowest, (new, lowest)  # dragged left of every recent score
    changes = drv.find_element(By.ID, "thr-effect")
    assert changes.get_attribute("data-changes") == str(n_pass)  # every pass would fail
    assert f"{n_pass} of 12 recent parts would change verdict" in changes.text
    drv.find_element(By.ID, "persist").click()
    shot(drv, "threshold", tmp_path)
    drv.find_element(By.ID, "apply").click()
    applied = until(
        drv,
        lambda d: d.find_element(By.ID, "apply-result").get_attribute("data-applied"),
        what="the daemon's answer",
    )
    assert float(applied) == pytest.approx(new, rel=1e-6, abs=1e-9)
    assert load_config(d / "cell.toml").threshold == pytest.approx(float(applied))
    after = [f"AFTER-{i}" for i in range(4)]
    trigger(dm, after)
    drv.find_element(By.CSS_SELECTOR, "nav a[data-view=live]").click()
    until(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip .chip")) == 16, what="more")
    now = {r["part_id"]: r for r in web.get("/api/live")["results"]}
    got = [(now[p]["verdict"], now[p]["threshold"], now[p]["score"]) for p in after]
    thr = float(applied)
    assert all(t == thr and v == ("fail" if s > thr else "pass") for v, t, s in got), got
    changed = [s for v, _, s in got if v == "fail" and s <= 0.5]  # passes at the old 0.5
    assert changed, f"no verdict changed by the new threshold: {got}"
    assert drv.find_element(By.ID, "verdict").text == got[-1][0].upper()

    # -- review: open a part, label it, and `afrd train`'s reader sees the label -------------
    drv.find_element(By.CSS_SELECTOR, "nav a[data-view=review]").click()

    def click_row(d) -> bool:  # the list may be redrawn under us (the view loads on entry)
        try:
            for r in d.find_elements(By.CSS_SELECTOR, "#review-list tbody tr"):
                if r.find_elements(By.XPATH, f"td[text()='{ids[3]}']"):
                    r.click()
                    return True
        except StaleElementReferenceException:
            pass
        return False

    until(drv, click_row, what="the part in the review list")
    until(drv, lambda d: d.find_elements(By.ID, "label-defective"), what="the part's detail")
    until(
        drv,
        lambda d: (
            js(
                d,
                "return [...document.querySelectorAll('#detail img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length",
            )
            == 7
        ),
        what="six lights and the heatmap in review",
    )
    js(drv, "document.getElementById('label-defective').click()")  # the detail may be redrawn
    until(drv, lambda d: text(d, "meta-label") == "defective", what="the label in the detail")
    reviewed = CaptureDataset(d / "captures", split="test")
    assert [(s.part_id, s.label) for s in reviewed] == [(ids[3], 1)]
    # labelling by keyboard: the next part down the list (newest first: SN-0002) is good
    body = drv.find_element(By.TAG_NAME, "body")
    body.send_keys("j")
    until(drv, lambda d: text(d, "meta-part") == ids[2], what="the next part")
    body.send_keys("g")
    until(drv, lambda d: text(d, "meta-label") == "good", what="the keyboard label")
    reviewed = CaptureDataset(d / "captures", split="test")
    assert sorted((s.part_id, s.label) for s in reviewed) == [(ids[2], 0), (ids[3], 1)]
    body.send_keys("k")  # back to the defective one for the screenshot
    until(drv, lambda d: text(d, "meta-part") == ids[3], what="the previous part")
    shot(drv, "review", tmp_path)

    # -- the heartbeat stops: a banner says so ------------------------------------------------
    dm.stop()
    banner = drv.find_element(By.ID, "banner")
    until(drv, lambda d: banner.is_displayed() and "NO HEARTBEAT" in banner.text, what="banner")
    drv.find_element(By.CSS_SELECTOR, "nav a[data-view=live]").click()
    shot(drv, "heartbeat-lost", tmp_path)
