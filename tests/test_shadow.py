"""A model's life on the line (issue 25): a shadow run, promote and rollback, on the simulated
cell as its own process with real sockets and `afrd ctl` / `afrd label` as a user types them.

The live model is tests/_reference_bundle.py's "max" (catches some local defects); the
candidate its "mean" (blind to them): a deliberately worse model, judged on the same parts. A
third test shadows a candidate far slower than the live model, with an MQTT broker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    Daemon,
    afrd,
    collect,
    make_brightness_bundle,
    wait_for,
    wait_subscribed,
    write_config,
)
from _mqtt_helpers import ROOT, mes, mqtt_config, needs_mosquitto, start_broker  # noqa: E402
from _reference_bundle import CAMERA, SIZE, make_reference_bundle, truth  # noqa: E402

from afrd.daemon import messages as m  # noqa: E402
from afrd.runtime.bundle import Bundle  # noqa: E402
from afrd.web.launch import recorder_toml  # noqa: E402


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bundles")
    return {a: make_reference_bundle(d / a, a) for a in ("max", "mean")}


def _slow_bundle(out: Path, n: int = 1024, k: int = 6) -> Path:
    """The brightness model plus ``k`` products of an ``n`` x ``n`` matrix that depend on the
    part (so nothing folds them away) and add nothing to the score: a few hundred ms a part
    on one thread, a candidate that cannot keep up with the line."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from afrd.data.lights import DEFAULT_LIGHTS
    from afrd.runtime.bundle import create_bundle

    H = helper.make_node
    nodes = [
        H("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        H("ReduceMean", ["f", "axes_m"], ["m"], keepdims=0),
        H("Div", ["m", "k255"], ["anomaly_map"]),
        H("ReduceMax", ["anomaly_map", "axes_s"], ["peak"], keepdims=0),
        H("ReduceMean", ["f"], ["s"], keepdims=0),
        H("Mul", ["w", "s"], ["x0"]),
        *(H("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]) for i in range(k)),
        H("ReduceSum", [f"x{k}"], ["busy"], keepdims=0),
        H("Mul", ["busy", "zero"], ["nil"]),
        H("Add", ["peak", "nil"], ["score"]),
    ]
    inits = [
        helper.make_tensor("axes_m", TensorProto.INT64, [2], [1, 4]),
        helper.make_tensor("axes_s", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        numpy_helper.from_array(np.eye(n, dtype=np.float32), "w"),
    ]
    u8, f32, size = TensorProto.UINT8, TensorProto.FLOAT, 32
    shape = ["batch", len(DEFAULT_LIGHTS), size, size, 3]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("images", u8, shape)],
        [
            helper.make_tensor_value_info("anomaly_map", f32, ["batch", size, size]),
            helper.make_tensor_value_info("score", f32, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    out.mkdir(parents=True)
    onnx.save(model, str(out / "model.onnx"))
    b = create_bundle(out, lights=DEFAULT_LIGHTS, input_size=(size, size), name="test-slow",
                      model={"kind": "test-slow", "teacher_weights": "none"})  # fmt: skip
    b.set_threshold(0.37, source="test")
    return out


def _model(bundle: Path) -> tuple[str, str, float]:
    """(name, sha256, threshold) a result judged by ``bundle`` names."""
    b = Bundle.load(bundle)
    return b.name, b.sha256, b.threshold


class Feed:
    """What the daemon publishes, read as it comes: results and shadow verdicts (each checked
    against its model and schema file)."""

    def __init__(self, dm: Daemon) -> None:
        self.sub = dm.subscriber((b"result.", b"shadow.", b"status."))
        wait_subscribed(self.sub)
        self.results: list[dict] = []
        self.shadows: list[dict] = []

    def until(self, pred, what: str, timeout: float = 20.0) -> None:
        def step():
            while self.sub.poll(20):
                kind, _cell, msg, _ = m.parse_message(self.sub.recv_multipart())
                {"result": self.results, "shadow": self.shadows}.get(kind, []).append(msg)
            return pred(self)

        wait_for(step, timeout, what)

    def close(self) -> None:
        self.sub.close()


def _ctl(dm: Daemon, *args: str, ok: bool = True) -> dict:
    """`afrd ctl ARGS` on ``dm``: its JSON reply (exit 0), or (``ok=False``) exit 1 and a
    one-line error."""
    p = afrd("ctl", "--connect", dm.control, *args, timeout=60)
    assert p.returncode == (0 if ok else 1), (args, p.returncode, p.stdout, p.stderr)
    reply = json.loads(p.stdout)
    if not ok:
        assert "\n" not in reply["error"] and "Traceback" not in p.stdout + p.stderr, reply
    return reply


def _runs(results: list[dict]) -> list[str]:
    """The models that judged ``results`` in seq order, consecutive repeats folded."""
    out: list[str] = []
    for r in results:
        if not out or out[-1] != r["model"]["name"]:
            out.append(r["model"]["name"])
    return out


def _check_judged_by(results: list[dict], bundles: dict[str, Path]) -> None:
    """seq contiguous, no error, and each result names the model (and its threshold) that
    judged it."""
    seqs = [r["seq"] for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    known = {(n, s): t for n, s, t in map(_model, bundles.values())}
    for r in results:
        assert r["verdict"] in ("pass", "fail"), r
        assert r["threshold"] == pytest.approx(known[(r["model"]["name"], r["model"]["sha256"])])
        # and its score says so: "max" scores a part's largest pixel deviation (0.14 and more
        # on the calibration's normal parts), "mean" its mean deviation (0.01-0.03)
        assert (r["score"] > 0.08) == (r["model"]["name"] == "test-reference-max"), r


@pytest.mark.timeout(90)
def test_shadow_report_shows_disagreements_and_the_candidates_misses(tmp_path, bundles) -> None:
    caps = tmp_path / "captures"
    extra = f'{recorder_toml(caps)}\n[models]\ndir = "{tmp_path / "models"}"\nshadow_queue = 64\n'
    cfg = write_config(
        tmp_path, bundles["max"], size=SIZE, camera=CAMERA, extra=extra, heatmaps=False
    )
    dm = Daemon(cfg).start()
    try:
        feed = Feed(dm)
        assert _ctl(dm, "shadow", "status")["result"] == {"active": False}
        err = _ctl(dm, "shadow", "start", "--bundle", str(tmp_path / "nothing"), ok=False)
        assert err["error"] == f"shadow_start: bundle {tmp_path / 'nothing'}: not a directory"
        err = _ctl(dm, "promote", ok=False)["error"]
        assert err.startswith("promote: no candidate to promote"), err
        assert _ctl(dm, "shadow", "stop", ok=False)["error"].startswith("shadow_stop: no shadow")
        started = _ctl(dm, "shadow", "start", "--bundle", str(bundles["mean"]))["result"]
        assert started["active"] and started["model"]["name"] == "test-reference-mean"

        ids = [f"p{i}" for i in range(30)]
        for k in range(0, len(ids), 10):  # the trigger queue holds 16
            for pid in ids[k : k + 10]:
                assert dm.ctl({"cmd": "trigger", "part_id": pid})["ok"]
            feed.until(lambda f, n=k + 10: len(f.shadows) == n, f"{k + 10} shadow verdicts")
        live = {r["part_id"]: r for r in feed.results}
        cand = {s["part_id"]: s for s in feed.shadows}
        assert list(live) == list(cand) == ids
        for pid in ids:  # the candidate's verdict beside the live one, of the same part
            r, s = live[pid], cand[pid]
            assert s["seq"] == r["seq"] and s["live"]["score"] == r["score"], (r, s)
            assert s["live"]["model"] == r["model"] and s["model"]["name"] == "test-reference-mean"
        differ = {pid for pid in ids if live[pid]["verdict"] != cand[pid]["verdict"]}
        assert differ, "the two models never disagreed: the test shows nothing"

        # each recorded part reviewed as `afrd label` does it, by the simulated truth
        wait_for(lambda: len(list(caps.rglob("set.json"))) == len(ids), what="30 captures")
        labels = dict(zip(ids, truth(ids), strict=True))
        for flag, want in (("--good", 0), ("--defective", 1)):
            parts = [a for pid, y in labels.items() if y == want for a in ("--part", pid)]
            p = afrd("label", str(caps), flag, *parts, "--audit-log", str(tmp_path / "a.jsonl"))
            assert p.returncode == 0, p.stderr

        def report() -> dict | None:
            rep = _ctl(dm, "shadow", "status")["result"]
            return rep if all(d["capture"] for d in rep["disagreements"]) else None

        rep = wait_for(report, what="the disagreements' capture ids")
        assert (rep["offered"], rep["compared"], rep["skipped"], rep["errors"]) == (30, 30, 0, 0)
        assert {d["part_id"] for d in rep["disagreements"]} == differ
        for d in rep["disagreements"]:
            assert (caps / d["capture"] / "set.json").is_file(), d
            assert d["candidate"]["verdict"] == cand[d["part_id"]]["verdict"], d
        assert rep["agreement"] == pytest.approx(1 - len(differ) / 30, abs=1e-6)
        assert rep["correlation"] is not None

        lab = rep["labelled"]
        defective = sum(labels.values())
        assert (lab["parts"], lab["good"], lab["defective"]) == (30, 30 - defective, defective)
        for side, verdicts in (("live", live), ("candidate", cand)):
            misses = sum(labels[p] == 1 and verdicts[p]["verdict"] == "pass" for p in ids)
            rejects = sum(labels[p] == 0 and verdicts[p]["verdict"] == "fail" for p in ids)
            assert (lab[side]["misses"], lab[side]["false_rejects"]) == (misses, rejects), lab
        assert lab["candidate"]["miss_rate"] > lab["live"]["miss_rate"], lab

        status = dm.ctl({"cmd": "status"})["result"]
        assert status["shadow"]["compared"] == 30 and status["shadow"]["active"]
        final = _ctl(dm, "shadow", "stop")["result"]
        assert not final["active"] and final["disagreements"] == rep["disagreements"]
        assert dm.ctl({"cmd": "status"})["result"]["shadow"] is None
        assert _ctl(dm, "shadow", "status")["result"]["labelled"] == lab  # the last run's
        feed.close()
    finally:
        assert dm.stop() == 0, dm.output()


@pytest.mark.timeout(90)
def test_promote_and_rollback_switch_models_between_two_parts_and_survive_a_restart(
    tmp_path, bundles
) -> None:
    models = tmp_path / "models"
    cfg = write_config(
        tmp_path,
        bundles["max"],
        size=SIZE,
        camera=CAMERA,
        trigger='mode = "free-run"\ninterval_s = 0.03',  # parts keep coming through each swap
        extra=f'[models]\ndir = "{models}"\n',
        heatmaps=False,
    )
    names = {a: _model(b)[0] for a, b in bundles.items()}

    def judged_by(f: Feed, name: str, n: int = 5) -> bool:
        return sum(r["model"]["name"] == name for r in f.results) >= n

    (models / "notes").mkdir(parents=True)  # the engineer's, in [models] dir

    # promote: the candidate judges the live parts from one part to the next
    dm = Daemon(cfg).start()
    try:
        feed = Feed(dm)
        _ctl(dm, "shadow", "start", "--bundle", str(bundles["mean"]))
        feed.until(lambda f: len(f.shadows) >= 3 and judged_by(f, names["max"]), "a shadow run")
        done = _ctl(dm, "--reason", "test", "promote", "--persist")["result"]
        assert (done["model"]["name"], done["previous"]["name"]) == (names["mean"], names["max"])
        assert done["persisted"] and Path(done["bundle"]).parent == models, done
        feed.until(lambda f: judged_by(f, names["mean"]), "parts judged by the promoted model")
        assert _runs(feed.results) == [names["max"], names["mean"]]
        _check_judged_by(feed.results, bundles)
        first = next(r["seq"] for r in feed.results if r["model"]["name"] == names["mean"])
        assert all(s["seq"] < first for s in feed.shadows)  # the run ended with the promotion
        assert dm.ctl({"cmd": "status"})["result"]["shadow"] is None
        feed.close()
    finally:
        assert dm.stop() == 0, dm.output()

    # a restart: the persisted promotion runs; rollback finds the kept model and persists it
    dm = Daemon(cfg).start()
    try:
        feed = Feed(dm)
        assert dm.ctl({"cmd": "status"})["result"]["model"]["name"] == names["mean"]
        done = _ctl(dm, "rollback", "--persist")["result"]
        assert (done["model"]["name"], done["previous"]["name"]) == (names["max"], names["mean"])
        feed.until(lambda f: judged_by(f, names["max"]), "parts judged by the model rolled back to")
        assert _runs(feed.results) == [names["mean"], names["max"]]
        _check_judged_by(feed.results, bundles)
        feed.close()
    finally:
        assert dm.stop() == 0, dm.output()

    # and again: the rollback persisted; nothing older is kept. A promotion not persisted...
    dm = Daemon(cfg).start()
    try:
        assert dm.ctl({"cmd": "status"})["result"]["model"]["name"] == names["max"]
        err = _ctl(dm, "rollback", ok=False)["error"]
        assert err.startswith("rollback: no earlier model kept for product 'default'"), err
        _ctl(dm, "shadow", "start", "--bundle", str(bundles["mean"]))
        assert _ctl(dm, "promote")["result"]["persisted"] is False
    finally:
        assert dm.stop() == 0, dm.output()

    # ...ends with a restart: the config's model runs, and it is not "rolled back" to itself
    dm = Daemon(cfg).start()
    try:
        assert dm.ctl({"cmd": "status"})["result"]["model"]["name"] == names["max"]
        err = _ctl(dm, "rollback", ok=False)["error"]
        assert err.startswith("rollback: no earlier model kept for product 'default'"), err
        assert dm.ctl({"cmd": "status"})["result"]["model"]["name"] == names["max"]
    finally:
        assert dm.stop() == 0, dm.output()
    kept = sorted(p.name for p in models.iterdir() if p.is_dir())
    assert kept == sorted([Path(done["bundle"]).name, "notes"]), kept  # not ours: left alone


def test_the_audit_names_the_product_a_promote_or_rollback_changed(tmp_path, bundles) -> None:
    """Two products on two models: promoting a candidate for the second product and rolling it
    back are recorded with that product's models before and after, not the default product's
    (the audit read the default recipe's model for every model command)."""
    audit, models = tmp_path / "audit.jsonl", tmp_path / "models"
    recipes = (
        f'[[product]]\nname = "a"\nbundle = "{bundles["max"]}"\n'
        f'[[product]]\nname = "b"\nbundle = "{bundles["mean"]}"\n'
    )
    cfg = write_config(
        tmp_path,
        bundles["max"],
        size=SIZE,
        camera=CAMERA,
        trigger='mode = "control"\nproduct = "a"',
        extra=f'[models]\ndir = "{models}"\n[access]\naudit_log = "{audit}"\n' + recipes,
        heatmaps=False,
    )
    names = {a: _model(b)[0] for a, b in bundles.items()}
    dm = Daemon(cfg).start()
    try:
        _ctl(dm, "shadow", "start", "--bundle", str(bundles["max"]), "--product", "b")
        assert _ctl(dm, "promote")["result"]["product"] == "b"
        assert _ctl(dm, "rollback", "--product", "b")["result"]["product"] == "b"
    finally:
        assert dm.stop() == 0, dm.output()
    recs = {r["what"]: r for r in map(json.loads, audit.read_text().splitlines())}
    promote, rollback = recs["promote"], recs["rollback"]
    assert (promote["old"]["model"], promote["new"]["model"]) == (names["mean"], names["max"])
    assert (rollback["old"]["model"], rollback["new"]["model"]) == (names["max"], names["mean"])


@needs_mosquitto
@pytest.mark.timeout(90)
def test_a_slow_candidate_holds_no_verdict_up_and_its_verdicts_go_out_on_mqtt(tmp_path) -> None:
    """A candidate a hundred times slower than the live model, a queue of one: a burst of
    parts is all published before the candidate judged its second; the parts it had no time
    for are counted; what it judged goes out on ZeroMQ and, byte for byte, on MQTT. A run
    stopped with a part still queued: every part the recorder chose is recorded all the same,
    once."""
    live = tmp_path / "live"
    make_brightness_bundle(live, 32, threshold=0.37)
    slow = _slow_bundle(tmp_path / "slow")
    br = start_broker(tmp_path / "broker")
    sub = mes(br, [f"{ROOT}/shadow"])
    caps = tmp_path / "captures"
    more = f'{recorder_toml(caps)}\n[models]\ndir = "{tmp_path / "models"}"\nshadow_queue = 1\n'
    dm = Daemon(mqtt_config(tmp_path, live, br, more=more)).start()
    try:
        wait_for(lambda: dm.ctl({"cmd": "status"})["result"]["mqtt"]["connected"], what="broker")
        zs = dm.subscriber((b"result.", b"shadow.", b"status."))
        wait_subscribed(zs)
        assert dm.ctl({"cmd": "shadow_start", "bundle": str(slow)}, 60)["ok"]
        for i in range(10):
            assert dm.ctl({"cmd": "trigger", "part_id": f"b{i}"})["ok"]

        def settled() -> dict | None:
            s = dm.ctl({"cmd": "status"})["result"]["shadow"]
            return s if s["compared"] + s["skipped"] + s["errors"] == 10 else None

        run = wait_for(settled, what="the candidate through the burst")
        assert run["offered"] == 10 and run["errors"] == 0 and run["skipped"] >= 1, run
        frames = [f for f in collect(zs, run["compared"], "shadow") if not f[0].startswith(b"st")]
        kinds = [f[0].split(b".")[0] for f in frames]
        assert kinds.count(b"result") == 10 and kinds.count(b"shadow") == run["compared"], kinds
        if run["compared"] > 1:  # every result out before the candidate's second verdict
            assert kinds.index(b"result") < kinds.index(b"shadow")
            assert (
                kinds[: kinds.index(b"shadow", kinds.index(b"shadow") + 1)].count(b"result") == 10
            )
        zmq = [f[1] for f in frames if f[0] == b"shadow.t1"]
        wait_for(lambda: len(sub.take(f"{ROOT}/shadow")) == len(zmq), what="shadow on MQTT")
        assert [p for _t, p, _r in sub.take(f"{ROOT}/shadow")] == zmq

        for i in range(5):  # the candidate takes the first, one waits, the rest are skipped
            assert dm.ctl({"cmd": "trigger", "part_id": f"c{i}"})["ok"]
        collect(zs, 5, "result")
        final = dm.ctl({"cmd": "shadow_stop"}, 60)["result"]
        unjudged = final["offered"] - final["compared"] - final["skipped"] - final["errors"]
        assert unjudged >= 1 and final["pending"] == unjudged, final
    finally:
        assert dm.stop() == 0, dm.output()
        sub.close()
        br.stop()
    sets = [json.loads(p.read_text()) for p in caps.rglob("set.json")]
    ids = [f"b{i}" for i in range(10)] + [f"c{i}" for i in range(5)]
    assert sorted(d["part_id"] for d in sets) == sorted(ids)
    assert sum("shadow" in d.get("meta", {}) for d in sets) == final["compared"]


def _ppid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


@pytest.mark.timeout(90)
def test_the_candidate_runs_in_an_idle_process_of_its_own_whose_death_loses_no_verdict(
    tmp_path,
) -> None:
    """The candidate's engine is a child of the daemon at the idle CPU class (so it neither
    takes the live path's CPU nor its interpreter lock); killed, it takes no live verdict with
    it: every later part is published, the run counts them as errors and says the process
    ended, and stopping the run still works."""
    import os
    import signal

    live, cand = tmp_path / "live", tmp_path / "cand"
    make_brightness_bundle(live, 32, threshold=0.37)
    make_brightness_bundle(cand, 32, threshold=0.2)
    extra = f'[models]\ndir = "{tmp_path / "models"}"\nshadow_queue = 8\n'
    dm = Daemon(write_config(tmp_path, live, extra=extra)).start()
    feed = Feed(dm)
    try:
        run = dm.ctl({"cmd": "shadow_start", "bundle": str(cand)}, 60)["result"]
        pid = run["process"]["pid"]
        assert run["process"]["running"] and pid != dm.proc.pid and _ppid(pid) == dm.proc.pid
        for tid in map(int, os.listdir(f"/proc/{pid}/task")):  # the engine's own threads too
            assert (
                os.sched_getscheduler(tid) == os.SCHED_IDLE
                or os.getpriority(os.PRIO_PROCESS, tid) == 19
            ), tid
        for i in range(4):
            assert dm.ctl({"cmd": "trigger", "part_id": f"a{i}"})["ok"]
        feed.until(lambda f: len(f.shadows) == 4, "the candidate's four verdicts")
        assert [s["seq"] for s in feed.shadows] == [r["seq"] for r in feed.results]

        os.kill(pid, signal.SIGKILL)
        for i in range(4):
            assert dm.ctl({"cmd": "trigger", "part_id": f"b{i}"})["ok"]
        feed.until(lambda f: len(f.results) == 8, "the live verdicts after the candidate died")
        seqs = [r["seq"] for r in feed.results]
        assert seqs == list(range(seqs[0], seqs[0] + 8))
        assert all(r["verdict"] in ("pass", "fail") for r in feed.results), feed.results

        def counted() -> dict | None:
            s = dm.ctl({"cmd": "status"})["result"]["shadow"]
            return s if s["compared"] + s["skipped"] + s["errors"] == 8 else None

        run = wait_for(counted, what="the parts after the candidate died, counted")
        assert run["compared"] == 4 and run["errors"] >= 1 and not run["process"]["running"]
        final = _ctl(dm, "shadow", "stop")["result"]
        assert final["active"] is False and final["compared"] == 4, final
    finally:
        feed.close()
        assert dm.stop() == 0, dm.output()
