"""A shadow run, promote and rollback over OPC UA and the page (issue 25): the simulated cell as
its own process with the real "max" bundle live and the real "mean" one as the candidate, a real
asyncua client logged in as an engineer and as an operator, `afrd web` with an engineer's and
an operator's token. The engineer's run compares parts, promotes and rolls back; the operator
is refused, and each refusal is in the audit log."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("asyncua", reason="the plc extra (asyncua) is not installed")

from asyncua import ua  # noqa: E402
from asyncua.sync import Client  # noqa: E402

from afrd.config.plcusers import user_line  # noqa: E402
from afrd.web.launch import WebProcess  # noqa: E402
from afrd.web.tokens import line as token_line  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import Daemon, wait_for, write_config  # noqa: E402
from _plc_helpers import free_port  # noqa: E402
from _reference_bundle import CAMERA, SIZE, make_reference_bundle  # noqa: E402

NS = "urn:afrd:inspection"
PASSWORD = "line-1-secret"
TOKENS = {
    "alice": ("operator", "alice-operator-token-0123"),
    "bob": ("engineer", "bob-eng-0123456789"),
}
MAX, MEAN = "test-reference-max", "test-reference-mean"
S, B = ua.VariantType.String, ua.VariantType.Boolean


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bundles")
    return {a: make_reference_bundle(d / a, a, n_ref=40, n_cal=60) for a in ("max", "mean")}


def _records(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


@pytest.mark.timeout(120)
def test_shadow_promote_rollback_over_opcua_and_the_page_for_engineers_only(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    users = tmp_path / "opcua-users"
    users.write_text(
        f"{user_line('op', PASSWORD, 'operator', iterations=1000)}\n"
        f"{user_line('eng', PASSWORD, 'engineer', iterations=1000)}\n"
    )
    tokens = tmp_path / "web-tokens"
    tokens.write_text("".join(f"{token_line(n, r, t)}\n" for n, (r, t) in TOKENS.items()))
    audit = tmp_path / "state" / "audit.jsonl"
    audit.parent.mkdir()
    port = free_port()
    extra = (
        f'[models]\ndir = "{tmp_path / "models"}"\n\n[access]\naudit_log = "{audit}"\n\n'
        f'[opcua]\nport = {port}\nusers_file = "{users}"\n'
    )
    cfg = write_config(
        tmp_path, bundles["max"], size=SIZE, camera=CAMERA, extra=extra, heatmaps=False
    )
    dm = Daemon(cfg).start()
    web = WebProcess(cfg, "--tokens-file", str(tokens))
    n_parts = 0

    def parts(n: int) -> None:
        nonlocal n_parts
        for _ in range(n):
            n_parts += 1
            assert dm.ctl({"cmd": "trigger", "part_id": f"p{n_parts}"})["ok"]

    def live_model() -> str:
        return dm.ctl({"cmd": "status"})["result"]["model"]["name"]

    try:
        web.start()
        url = f"opc.tcp://127.0.0.1:{port}/afrd/"

        def session(user: str) -> Client:
            c = Client(url, timeout=30)
            c.set_user(user)
            c.set_password(PASSWORD)
            return c

        def call(c: Client, name: str, *args: ua.Variant) -> dict:
            ns = c.get_namespace_index(NS)
            cell = c.get_node(ua.NodeId("Cell", ns))
            return json.loads(cell.call_method(ua.NodeId(f"Cell.{name}", ns), *args))

        mean = ua.Variant(str(bundles["mean"]), S)
        # OPC UA: an operator may neither start a shadow run nor read its report
        with session("op") as c:
            for name, args in (("ShadowStart", (mean, ua.Variant("", S))), ("ShadowStatus", ())):
                with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                    call(c, name, *args)
        # an engineer: start, stop, start again, compare parts, promote, roll back
        with session("eng") as c:
            started = call(c, "ShadowStart", mean, ua.Variant("", S))
            assert started["active"] and started["model"]["name"] == MEAN, started
            assert call(c, "ShadowStop")["active"] is False
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                call(c, "ShadowStop")  # no run: the daemon's refusal
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                call(c, "ShadowStart", ua.Variant(str(tmp_path / "nothing"), S), ua.Variant("", S))
            call(c, "ShadowStart", mean, ua.Variant("", S))
            parts(4)
            rep = wait_for(
                lambda: (r := call(c, "ShadowStatus"))["compared"] == 4 and r,
                what="4 parts compared, read over OPC UA",
            )
            assert rep["active"] and rep["model"]["name"] == MEAN, rep
            done = call(c, "Promote", ua.Variant(False, B))
            assert (done["model"]["name"], done["previous"]["name"]) == (MEAN, MAX), done
            assert done["persisted"] is False and live_model() == MEAN
            done = call(c, "Rollback", ua.Variant("", S), ua.Variant(False, B))
            assert (done["model"]["name"], done["previous"]["name"]) == (MAX, MEAN), done
            assert live_model() == MAX

        # the page: an operator's token is refused (403), an engineer's runs the same loop
        web.token = TOKENS["alice"][1]
        status, reply = web.post("/api/shadow/start", {"bundle": str(bundles["mean"])})
        assert status == 403 and reply["needs_role"] == "engineer", reply
        with pytest.raises(urllib.error.HTTPError, match="403"):
            web.get("/api/shadow/status")
        web.token = TOKENS["bob"][1]
        status, reply = web.post("/api/shadow/start", {"bundle": 7})
        assert status == 400 and reply["error"].startswith("bundle: expected text"), reply
        evil = urllib.request.Request(
            web.base + "/api/shadow/start",
            json.dumps({"bundle": str(bundles["mean"])}).encode(),
            {"Content-Type": "application/json", "Origin": "http://evil.example",
             "Authorization": f"Bearer {web.token}"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(evil, timeout=10)
        body = {"bundle": str(bundles["mean"]), "reason": "try the mean model"}
        status, reply = web.post("/api/shadow/start", body)
        assert status == 200 and reply["result"]["model"]["name"] == MEAN, reply
        parts(3)
        rep = wait_for(
            lambda: (r := web.get("/api/shadow/status")["result"])["compared"] == 3 and r,
            what="3 parts compared, read on the page",
        )
        assert rep["active"] and rep["offered"] == 3, rep
        status, reply = web.post("/api/promote", {"persist": False})
        assert status == 200 and reply["result"]["model"]["name"] == MEAN, reply
        assert live_model() == MEAN
        status, reply = web.post("/api/rollback", {})
        assert status == 200 and reply["result"]["model"]["name"] == MAX, reply
        assert live_model() == MAX
        status, reply = web.post("/api/shadow/stop", {})
        assert status == 409 and reply["error"].startswith("shadow_stop: no shadow run"), reply
    finally:
        web.stop()
        assert dm.stop() == 0, dm.output()

    recs = _records(audit)

    def one(**want) -> dict:
        hits = [r for r in recs if all(r.get(k) == v for k, v in want.items())]
        assert len(hits) == 1, (want, recs)
        return hits[0]

    # the refusals, with the role they lacked
    for what in ("ShadowStart", "ShadowStatus"):
        r = one(who="op", what=what)
        assert (r["outcome"], r["needs"], r["via"]) == ("refused", "engineer", "opcua"), r
    r = one(who="alice", what="shadow_start")
    assert (r["outcome"], r["needs"], r["via"]) == ("refused", "engineer", "web"), r
    r = one(who="alice", what="shadow_status")
    assert (r["outcome"], r["needs"]) == ("refused", "engineer"), r
    # the changes, who made them and the model before and after
    for who, via in (("eng", "opcua"), ("bob", "web")):
        r = one(who=who, what="promote", via=via)
        assert (r["outcome"], r["old"]["model"], r["new"]["model"]) == ("done", MAX, MEAN), r
        r = one(who=who, what="rollback", via=via)
        assert (r["outcome"], r["old"]["model"], r["new"]["model"]) == ("done", MEAN, MAX), r
    assert one(who="eng", what="promote")["call"] == "Promote"
    assert [r["outcome"] for r in recs if r["who"] == "eng" and r["what"] == "shadow_start"] == [
        "done",
        "failed",
        "done",
    ]
    assert one(who="bob", what="shadow_start", outcome="done")["reason"] == "try the mean model"


@pytest.mark.timeout(90)
def test_the_candidate_model_card_in_chromium(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """The page's Candidate model card (loopback, no tokens: the page acts as the local
    engineer): start a shadow run of "mean", its report after parts, promote."""
    import os
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.access(chromium, os.X_OK) and os.access(driver, os.X_OK)):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = write_config(
        tmp_path,
        bundles["max"],
        size=SIZE,
        camera=CAMERA,
        extra=f'[models]\ndir = "{tmp_path / "models"}"\n',
        heatmaps=False,
    )
    dm = Daemon(cfg).start()
    web = WebProcess(cfg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    drv = None
    try:
        web.start()
        drv = webdriver.Chrome(service=Service(driver), options=opts)
        drv.get(web.base + "/#threshold")

        def result_says(text: str) -> str:
            return WebDriverWait(drv, 20, poll_frequency=0.1).until(
                lambda d: text in (t := d.find_element(By.ID, "model-result").text) and t,
                message=f"the card never said {text!r}",
            )

        assert drv.find_element(By.ID, "model-card").is_displayed()
        drv.find_element(By.ID, "shadow-bundle").send_keys(str(bundles["mean"]))
        drv.find_element(By.ID, "shadow-start").click()
        result_says(f"model {MEAN}")
        for i in range(3):
            assert dm.ctl({"cmd": "trigger", "part_id": f"c{i}"})["ok"]
        wait_for(
            lambda: dm.ctl({"cmd": "shadow_status"})["result"]["compared"] == 3,
            what="3 parts compared",
        )
        drv.find_element(By.ID, "shadow-status").click()
        result_says("3 parts compared")
        drv.find_element(By.ID, "promote").click()
        assert f"model {MEAN} (was {MAX})" in result_says("promoted")
        assert dm.ctl({"cmd": "status"})["result"]["model"]["name"] == MEAN
    finally:
        if drv is not None:
            drv.quit()
        web.stop()
        assert dm.stop() == 0, dm.output()


def test_readme_lists_the_model_methods_and_the_page_routes() -> None:
    from afrd.daemon.interfaces.opcua_models import METHODS
    from afrd.daemon.roles import METHOD_ROLES

    text = (Path(__file__).parents[1] / "README.md").read_text()
    for name, (_cmd, inputs, _code) in METHODS.items():
        args = ", ".join(f"{n}: {'Boolean' if vt == B else 'String'}" for n, _t, vt, _k in inputs)
        assert f"`Cell.{name}({args}) -> (Result: String)`" in text, name
        assert METHOD_ROLES[name] == "engineer", name
    for route in ("/api/shadow/start", "/api/shadow/status", "/api/promote", "/api/rollback"):
        assert route in text, route
