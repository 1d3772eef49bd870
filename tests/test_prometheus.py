"""The daemon's /metrics as Prometheus reads it (prometheus_client's own text parser, over real
HTTP from a running `afrd run`), counts that agree with the published verdicts, and the Grafana
dashboards (docs/grafana/: the cell page and the plant page) asking only for series the daemon
exports."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    REPO,
    Daemon,
    collect,
    make_brightness_bundle,
    wait_for,
    wait_subscribed,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

# the cell page and the plant page (every cell one Prometheus scrapes)
DASHBOARDS = {"afrd-cell": "afrd.json", "afrd-plant": "afrd-plant.json"}


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict, name: str, **labels) -> float:
    hits = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_metrics_agree_with_the_published_verdicts_and_feed_the_dashboard(tmp_path):
    make_brightness_bundle(tmp_path / "b", 32, threshold=0.5)
    cfg = write_config(tmp_path, tmp_path / "b", size=32, heatmaps=False)
    recipes = '[[product]]\nname = "a"\nthreshold = 0.3\n[[product]]\nname = "b"\n'
    cfg.write_text(cfg.read_text() + "\n" + recipes)
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber([b"result.", b"status."])
        wait_subscribed(sub)
        for i, product in enumerate(["a", "b", "a", "b", "zz"]):
            dm.ctl({"cmd": "trigger", "part_id": f"m{i}", "product": product})
        results = [json.loads(f[1]) for f in collect(sub, 5) if f[0][:7] == b"result."]
        port = dm.ctl({"cmd": "status"})["result"]["endpoints"]["metrics_port"]

        def scrape() -> tuple[str, str] | None:
            """/metrics once the fifth part is counted: the daemon publishes a result first
            and counts it after (a result never waits for the metrics)"""
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                got = r.headers["Content-Type"], r.read().decode()
            done = _value(_samples(got[1]), "afrd_stage_seconds_count", stage="total", **cell)
            return got if done == 5 else None

        cell = {"cell": "t1"}
        ctype, text = wait_for(scrape, what="the fifth part in /metrics")
    finally:
        assert dm.stop() == 0
    assert ctype.startswith("text/plain; version=0.0.4")
    s = _samples(text)
    for verdict in ("pass", "fail", "error"):
        n = sum(r["verdict"] == verdict for r in results)
        assert _value(s, "afrd_parts_total", verdict=verdict, **cell) == n
    assert _value(s, "afrd_errors_total", code="unknown_product", **cell) == 1
    for product in ("a", "b"):  # per recipe; the unknown product makes no series of its own
        n = sum(r["product"] == product for r in results)
        got = sum(
            s_.value for s_ in s["afrd_product_parts_total"] if s_.labels["product"] == product
        )
        assert n == 2 and got == n
    assert {x.labels["product"] for x in s["afrd_product_parts_total"]} == {"a", "b"}
    assert _value(s, "afrd_stage_seconds_count", stage="total", **cell) == 5
    assert _value(s, "afrd_stage_seconds_count", stage="infer", **cell) == 4  # not the error
    assert _value(s, "afrd_threshold", product="a", **cell) == 0.3
    assert _value(s, "afrd_threshold", product="b", **cell) == 0.5  # the bundle's
    assert _value(s, "afrd_up", **cell) == 1
    assert not any(name.endswith("_created") for name in s)

    # every series a dashboard asks for is one the daemon exports, and its cell selector
    # filters every panel
    for uid, name in DASHBOARDS.items():
        dash = json.loads((REPO / "docs" / "grafana" / name).read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        assert all('cell=~"$cell"' in e for e in exprs), (name, exprs)
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["cell"]["multi"] and variables["cell"]["includeAll"], name
        exprs += [v["query"] for v in variables.values() if v["type"] == "query"]
        wanted = {m for e in exprs for m in re.findall(r"\bafrd_[a-z_]+", e)}
        assert len(wanted) >= 5, (name, wanted)
        missing = sorted(wanted - set(s))
        assert not missing, f"{name} queries series the daemon does not export: {missing}"
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)) and dash["uid"] == uid, name
