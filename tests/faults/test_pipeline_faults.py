"""Issue 21, items 1 and 13: an engine that raises or answers with an empty batch makes that
part an ``error`` result and the next part is judged (item 1, the real daemon on a real ONNX
graph); ``trigger()`` never blocks the control and PLC threads on a stuck output, and
``stop()`` never closes an engine under a running inference (item 13, in-process on the real
pipeline, where the stuck publisher and the hung engine can be held deterministically)."""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import pytest
from _bundles import make_faulty_bundle
from conftest import results_for

from afrd.daemon.pipeline import Pipeline
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.runtime.engines.null import NullEngine
from afrd.runtime.loader import load_runtime
from afrd.sim.launch import Daemon, wait_subscribed, write_config


@pytest.mark.timeout(180)
def test_engine_faults_become_error_results_and_the_next_part_is_judged(tmp_path):
    bundle = make_faulty_bundle(tmp_path / "faulty")
    cfg = write_config(tmp_path, bundle, heatmaps=False, extra="[queues]\ntriggers = 64")
    dm = Daemon(cfg).start()
    sub = dm.subscriber([b"result.", b"status."])
    try:
        wait_subscribed(sub)
        ids = [f"part-{i}" for i in range(40)]
        for pid in ids:
            r = dm.ctl({"cmd": "trigger", "part_id": pid})
            assert r["ok"], r
        results = results_for(sub, ids, timeout=90)
        assert dm.ctl({"cmd": "status"})["ok"]
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
    assert sorted(r["seq"] for r in results) == list(range(results[0]["seq"], len(ids)))
    errors = [r["error"] for r in results if r["verdict"] == "error"]
    assert {e["code"] for e in errors} == {"infer"}, errors
    raised = [e for e in errors if "cannot be reshaped" in e["message"]]
    empty = [e for e in errors if "returned 0 score(s)" in e["message"]]
    assert raised and empty and len(raised) + len(empty) == len(errors), errors
    # judged after each fault: the last part of every run of errors is followed by a verdict
    verdicts = [r["verdict"] for r in sorted(results, key=lambda r: r["seq"])]
    assert verdicts.count("error") < len(verdicts) - 10
    assert verdicts[-1] != "error" or verdicts[-2] != "error", verdicts
    log = (dm.dir / "daemon.log").read_text()
    assert "Traceback" not in log and "\x1b[" not in log  # ONNX Runtime's dumps stay out too


class _HeldEngine(NullEngine):
    """The null engine, held inside ``_run`` until released: a hung backend."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.inside = threading.Event()
        self.release = threading.Event()
        self.closed_while_running = False
        self.running = False

    def _run(self, batch: np.ndarray):
        self.running = True
        self.inside.set()
        self.release.wait(30)
        self.running = False
        return super()._run(batch)

    def close(self) -> None:
        self.closed_while_running |= self.running
        super().close()


def _imageset(part_id: str, product: str, *setup) -> ImageSet:
    return ImageSet(np.zeros((6, 16, 16, 3), np.uint8), DEFAULT_LIGHTS, part_id, product)


@pytest.mark.timeout(60)
def test_stop_never_closes_an_engine_under_a_running_inference(bundle, caplog):
    rt = load_runtime(bundle, "null")
    engine = _HeldEngine(rt.engine.bundle)
    held = dataclasses.replace(rt, engine=engine)
    published: list[dict] = []
    p = Pipeline("u1", _imageset, held, lambda job, msg: published.append(msg))
    p.start()
    p.trigger("hung", "x")
    assert engine.inside.wait(10)
    with caplog.at_level(logging.ERROR, logger="afrd.daemon.pipeline"):
        p.stop(timeout_s=0.5)
    assert not engine.closed_while_running
    assert "still busy" in caplog.text and "afrd-infer" in caplog.text
    engine.release.set()  # the inference ends after all: its part is still published
    for t in p._threads:
        t.join(10)
    assert [m["part_id"] for m in published] == ["hung"]


@pytest.mark.timeout(60)
def test_trigger_never_blocks_on_a_stuck_output(bundle):
    """The output thread is stuck in its sink (a publisher that hangs) and the results bound
    is full: refused triggers (pause, overrun) still return at once, and every part is
    published once the output moves again."""
    rt = load_runtime(bundle, "null")
    unstick = threading.Event()
    published: list[int] = []

    def sink(job, msg) -> None:
        unstick.wait(30)
        published.append(msg["seq"])

    p = Pipeline("u1", _imageset, rt, sink, triggers=1, acquired=1, results=1)
    p.start()
    for i in range(4):  # fills output (stuck), results slot, acquired and triggers
        p.trigger(f"fill-{i}", "x")
    p.pause()
    returned = threading.Event()
    errors: list = []

    def refused_triggers() -> None:
        errors.extend(p.trigger(f"paused-{i}", "x").error for i in range(20))
        p.resume()
        errors.append(p.trigger("after-resume", "x").error)  # queued, or overrun
        returned.set()

    t = threading.Thread(target=refused_triggers, daemon=True)
    t.start()
    assert returned.wait(5), "trigger() blocked behind the stuck output"
    assert [e[0] for e in errors[:20]] == ["paused"] * 20
    unstick.set()
    p.stop(timeout_s=20)
    assert sorted(published) == list(range(25))


@pytest.mark.timeout(60)
def test_a_bug_outside_any_stage_handling_is_that_parts_internal_error(bundle, caplog):
    """An exception no stage's own handling expects (a bug planted in the infer stage for one
    part, outside the engine call's try) becomes that part's ``error``/``internal`` result
    naming the stage, and the same thread judges the parts after it."""
    rt = load_runtime(bundle, "null")
    published: list[dict] = []
    done = threading.Event()

    def sink(job, msg) -> None:
        published.append(msg)
        if len(published) == 3:
            done.set()

    p = Pipeline("u1", _imageset, rt, sink)
    real = p._infer

    def planted(job) -> None:
        if job.part_id == "bug":
            raise KeyError("planted")
        real(job)

    p._infer = planted
    p.start()
    with caplog.at_level(logging.ERROR, logger="afrd.daemon.pipeline"):
        for pid in ("before", "bug", "after"):
            assert p.trigger(pid, "x").error is None
        assert done.wait(20), published
    p.stop(timeout_s=20)
    by_id = {m["part_id"]: m for m in published}
    assert [m["seq"] for m in published] == [0, 1, 2]
    assert by_id["bug"]["verdict"] == "error", by_id["bug"]
    assert by_id["bug"]["error"]["code"] == "internal"
    assert "afrd-infer" in by_id["bug"]["error"]["message"]
    assert "planted" in by_id["bug"]["error"]["message"]
    assert by_id["before"]["verdict"] in ("pass", "fail")
    assert by_id["after"]["verdict"] in ("pass", "fail")
    assert "afrd-infer failed" in caplog.text
