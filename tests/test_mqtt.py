"""The MQTT link at process level: `afrd run` on the simulated cell against a real mosquitto (TLS,
password file), its results read by a real MQTT client and compared with ZeroMQ's."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    Daemon,
    collect,
    make_brightness_bundle,
    wait_for,
    wait_subscribed,
)
from _mqtt_helpers import (  # noqa: E402
    ROOT,
    first_arrivals,
    mes,
    mqtt_config,
    needs_mosquitto,
    results,
    start_broker,
)

from afrd.daemon.verdict import validate_result, validate_status  # noqa: E402
from afrd.sim.broker import Subscriber, make_ca  # noqa: E402

pytestmark = [needs_mosquitto, pytest.mark.timeout(120)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mqtt-bundle") / "brightness"
    make_brightness_bundle(d, size=32, threshold=0.37)  # a mix of pass and fail at 32 px
    return d


def trigger(dm: Daemon, n: int, prefix: str) -> None:
    for i in range(n):
        r = dm.ctl({"cmd": "trigger", "part_id": f"{prefix}-{i}"})
        assert r["ok"], r


def zmq_results(sub, n: int) -> list[dict]:
    frames = collect(sub, n, timeout=60)
    out = [json.loads(f[1]) for f in frames if f[0] == b"result.t1"]
    assert len(out) == n, f"{len(out)} of {n} results on ZeroMQ"
    return out


def mqtt_status(dm: Daemon) -> dict:
    return dm.ctl({"cmd": "status"})["result"]["mqtt"]


def test_results_on_mqtt_are_zeromqs_with_status_counts_and_heatmaps(tmp_path, bundle):
    br = start_broker(tmp_path / "broker")
    sub = mes(br, [f"{ROOT}/#"])
    cfg = mqtt_config(tmp_path, bundle, br, mqtt='heatmaps = "not-pass"')
    dm = Daemon(cfg).start()
    try:
        zs = dm.subscriber()
        wait_subscribed(zs)
        trigger(dm, 12, "p")
        frames = collect(zs, 12)
        zmq = [f[1] for f in frames if f[0] == b"result.t1"]
        wait_for(lambda: len(sub.take(f"{ROOT}/result")) >= 12, what="12 results on MQTT")
        # the same bytes, in the same order, as ZeroMQ's afrd.result/1
        assert [p for _, p, _ in sub.take(f"{ROOT}/result")] == zmq
        parts = [validate_result(json.loads(b), "t1") for b in zmq]
        verdicts = Counter(p["verdict"] for p in parts)
        assert verdicts["pass"] and verdicts["fail"], verdicts
        # heatmaps = "not-pass": a PNG for each fail, none for a pass
        fails = {p["seq"] for p in parts if p["verdict"] != "pass"}
        wait_for(lambda: len(sub.take(f"{ROOT}/heatmap/")) >= len(fails), what="heatmaps")
        hm = sub.take(f"{ROOT}/heatmap/")
        assert {t.rsplit("/", 1)[1] for t, _, _ in hm} == {str(s) for s in fails}
        assert all(p.startswith(PNG_MAGIC) for _, p, _ in hm)

        def last(topic: str, ok) -> dict | None:
            msgs = [json.loads(p) for t, p, _ in sub.take(topic) if t == topic]
            return msgs[-1] if msgs and ok(msgs[-1]) else None

        st = wait_for(
            lambda: last(f"{ROOT}/status", lambda m: sum(m["parts"].values()) == 12),
            what="a status counting the 12 parts",
        )
        validate_status(st, "t1")
        assert st["state"] == "running" and st["mqtt"]["connected"], st
        counts = wait_for(
            lambda: last(f"{ROOT}/counts", lambda m: sum(m["products"]["default"].values()) == 12),
            what="counts of the 12 parts",
        )
        assert counts["schema"] == "afrd.counts/1" and counts["cell"] == "t1"
        assert counts["products"]["default"] == {v: verdicts[v] for v in ("pass", "fail", "error")}
        # [mqtt] is opened once at start: a reload refuses to change it
        cfg.write_text(cfg.read_text().replace("status_interval_s = 0.5", "status_interval_s = 1"))
        r = dm.ctl({"cmd": "reload"}, timeout_s=30)
        assert not r["ok"] and "['mqtt']" in r["error"], r
        assert mqtt_status(dm)["sent"] == 12
    finally:
        assert dm.stop() == 0, dm.output()
        sub.close()
    # a clean stop leaves the retained status "offline" (reason: stopped)
    late = Subscriber(br, "mes", "mes-secret", [f"{ROOT}/status"], "late", persistent=False)
    try:
        st = wait_for(lambda: [json.loads(p) for _, p, r in late.take() if r], what="retained")
        assert st[-1]["state"] == "offline" and st[-1]["reason"] == "stopped", st
    finally:
        late.close()
        br.stop()


@pytest.mark.timeout(180)
def test_broker_down_then_daemon_restarted_every_result_arrives_once_in_order(tmp_path, bundle):
    br = start_broker(tmp_path / "broker")
    sub = mes(br, [f"{ROOT}/result"])
    cfg = mqtt_config(tmp_path, bundle, br, more="[queues]\ntriggers = 512")
    dm = Daemon(cfg).start()
    published: list[dict] = []
    try:
        zs = dm.subscriber()
        wait_subscribed(zs)
        wait_for(lambda: mqtt_status(dm)["connected"], what="the link connected")
        # 1. the broker is stopped for 200 parts, then started again
        br.stop()
        wait_for(lambda: not mqtt_status(dm)["connected"], what="the link to notice")
        trigger(dm, 200, "out")
        published += zmq_results(zs, 200)
        st = wait_for(lambda: (s := mqtt_status(dm))["queued"] == 200 and s, what="200 queued")
        assert "cannot connect" in st["error"] or "lost" in st["error"], st
        br.start()
        wait_for(lambda: len(first_arrivals(results(sub))) >= 200, 60, what="the backlog")
        # 2. stopped again for 200 parts; the daemon restarts while it is away, 100 before, 100
        # after
        br.stop()
        wait_for(lambda: not mqtt_status(dm)["connected"], what="the link to notice")
        trigger(dm, 100, "before")
        published += zmq_results(zs, 100)
        wait_for(lambda: mqtt_status(dm)["queued"] == 100, what="100 queued")
        zs.close()
        assert dm.stop() == 0, dm.output()
        dm = Daemon(cfg).start()
        assert mqtt_status(dm)["queued"] == 100  # on disk across the restart
        zs = dm.subscriber()
        wait_subscribed(zs)
        trigger(dm, 100, "after")
        after = zmq_results(zs, 100)
        assert min(r["seq"] for r in after) > max(r["seq"] for r in published)  # seq goes on
        published += after
        br.start()
        wait_for(lambda: len(first_arrivals(results(sub))) >= 400, 60, what="all 400 results")
        wait_for(lambda: mqtt_status(dm)["queued"] == 0, what="the queue emptied")
    finally:
        assert dm.stop() == 0, dm.output()
        sub.close()
        br.stop()
    got = first_arrivals(results(sub))
    # exactly the published results, each once after de-duplication, in seq order
    assert [m["seq"] for m in got] == sorted(m["seq"] for m in published)
    assert got == sorted(published, key=lambda m: m["seq"])


def test_wrong_password_and_untrusted_certificate_refused_while_results_queue(tmp_path, bundle):
    br = start_broker(tmp_path / "broker")
    other_ca = make_ca(tmp_path / "other-ca", "some other CA")[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = mqtt_config(tmp_path / "a", bundle, br, password="wrong", mqtt="max_queued = 3")
    cfg_b = mqtt_config(tmp_path / "b", bundle, br, ca_file=other_ca)
    a, b = Daemon(cfg_a).start(), Daemon(cfg_b).start()
    try:
        for dm in (a, b):
            zs = dm.subscriber()
            wait_subscribed(zs)
            trigger(dm, 5 if dm is a else 1, "q")
            zmq_results(zs, 5 if dm is a else 1)  # the daemon runs on, every part published
            zs.close()
        err_a = wait_for(lambda: mqtt_status(a)["error"], what="the login refusal")
        assert "refused the login of user 'cell-t1'" in err_a, err_a
        assert "mqtt.password_file" in err_a, err_a
        err_b = wait_for(lambda: mqtt_status(b)["error"], what="the TLS refusal")
        assert "certificate is not trusted" in err_b and "mqtt.tls.ca_file" in err_b, err_b
        # queued, bounded: max_queued = 3 kept the 3 newest of 5 and counted the 2 it dropped
        sa, sb = mqtt_status(a), mqtt_status(b)
        assert (sa["queued"], sa["dropped"], sa["connected"]) == (3, 2, False), sa
        assert (sb["queued"], sb["dropped"], sb["connected"]) == (1, 0, False), sb
        port = a.ctl({"cmd": "status"})["result"]["endpoints"]["metrics_port"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'afrd_mqtt_dropped_total{cell="t1"} 2.0' in text
        assert b'afrd_mqtt_queued{cell="t1"} 3.0' in text
        # the broker saw several attempts; the daemon said it once, in one line
        wait_for(lambda: br.log().count("disconnected, not authorised") >= 3, what="3 logins")
        wait_for(lambda: br.log().count("alert unknown ca") >= 3, what="3 TLS handshakes")
        for dm, words in ((a, "refused the login"), (b, "certificate is not trusted")):
            lines = [ln for ln in dm.output().splitlines() if words in ln]
            assert len(lines) == 1, dm.output()
            assert "Traceback" not in dm.output()
    finally:
        for dm in (a, b):
            assert dm.stop() == 0, dm.output()
        br.stop()


def test_last_will_marks_the_cell_offline_when_the_daemon_is_killed(tmp_path, bundle):
    br = start_broker(tmp_path / "broker")
    sub = mes(br, [f"{ROOT}/status"], client_id="mes-will")
    dm = Daemon(mqtt_config(tmp_path, bundle, br)).start()

    def states() -> list[str]:
        return [json.loads(p)["state"] for _, p, _ in sub.take()]

    try:
        wait_for(lambda: "running" in states(), what="the retained status")
        dm.proc.send_signal(signal.SIGKILL)
        dm.proc.wait(10)
        wait_for(lambda: states()[-1] == "offline", what="the last will")
        will = json.loads(sub.take()[-1][1])
        assert will["cell"] == "t1" and will["reason"] == "connection lost", will
    finally:
        dm.stop()
        sub.close()
        br.stop()


def test_sparkplug_mode_round_trips_parts_through_a_sparkplug_decoder(tmp_path, bundle):
    sp = pytest.importorskip("pysparkplug", reason="the mqtt extra (pysparkplug) is not installed")
    br = start_broker(tmp_path / "broker")
    host = mes(br, ["spBv1.0/plant/#"], client_id="scada")
    tables = '[mqtt.sparkplug]\nenabled = true\ngroup_id = "plant"'
    dm = Daemon(mqtt_config(tmp_path, bundle, br, tables=tables)).start()

    def of(kind: str, device: str = "") -> list[bytes]:
        topic = f"spBv1.0/plant/{kind}/t1" + (f"/{device}" if device else "")
        return [p for t, p, _ in host.take(topic) if t == topic]

    try:
        zs = dm.subscriber()
        wait_subscribed(zs)
        wait_for(lambda: of("DBIRTH", "default"), what="NBIRTH and DBIRTH")
        trigger(dm, 3, "sp")
        zmq = zmq_results(zs, 3)
        wait_for(lambda: len(of("DDATA", "default")) >= 3, what="3 DDATA")
        nbirth = sp.NBirth.decode(of("NBIRTH")[0])
        bd_seq = {m.name: m.value for m in nbirth.metrics}["bdSeq"]
        dbirth = sp.DBirth.decode(of("DBIRTH", "default")[0])
        assert {m.name for m in dbirth.metrics} >= {"part_id", "seq", "verdict", "score"}
        for raw, r in zip(of("DDATA", "default"), zmq, strict=True):
            ddata = sp.DData.decode(raw, birth=dbirth)
            v = {m.name: m.value for m in ddata.metrics}
            assert (v["part_id"], v["seq"], v["verdict"]) == (r["part_id"], r["seq"], r["verdict"])
            assert (v["score"], v["threshold"]) == (r["score"], r["threshold"])
            lat = r["latency_ms"]
            assert [v[f"latency_ms/{k}"] for k in lat] == list(lat.values())
            assert (v["model/name"], v["model/sha256"]) == (
                r["model"]["name"],
                r["model"]["sha256"],
            )
            assert v["error/code"] is None and not any(m.is_historical for m in ddata.metrics)
        # Sparkplug's seq counts the node's messages 0, 1, 2, ... from NBIRTH on
        kinds = {"NBIRTH": (sp.NBirth, None), "DBIRTH": (sp.DBirth, None)}
        kinds.update(NDATA=(sp.NData, nbirth), DDATA=(sp.DData, dbirth))
        seqs = []
        for t, p, _ in host.take():
            cls, birth = kinds[t.split("/")[2]]
            seqs.append(cls.decode(p, birth=birth).seq)
        assert seqs == list(range(len(seqs))), seqs
        # a host asks for a rebirth: NBIRTH (same bdSeq) and the device's DBIRTH again
        rebirth = sp.Metric(
            timestamp=1, name="Node Control/Rebirth", datatype=sp.DataType.BOOLEAN, value=True
        )
        host.client.publish("spBv1.0/plant/NCMD/t1", sp.NCmd(1, (rebirth,)).encode(), qos=1)
        wait_for(lambda: len(of("DBIRTH", "default")) == 2, what="the rebirth")
        again = {m.name: m.value for m in sp.NBirth.decode(of("NBIRTH")[1]).metrics}
        assert again["bdSeq"] == bd_seq
    finally:
        assert dm.stop() == 0, dm.output()
    # a clean stop sends the NDEATH of this session (its bdSeq), as the will would
    try:
        wait_for(lambda: of("NDEATH"), what="NDEATH")
        death = sp.NDeath.decode(of("NDEATH")[0])
        assert death.bd_seq_metric.value == bd_seq
    finally:
        host.close()
        br.stop()
