"""Issue 21, item 2: retention after a restart deletes whole captures, never single files, so
the recorder directory stays trainable; a dataset that meets an incomplete set (a copy or an
older recorder cut one short) names it, skips it and trains on the rest."""

from __future__ import annotations

import json

import pytest
from _daemon_helpers import wait_for
from conftest import afrd, inspect

from afrd.data.capture import find_sets
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.sim.launch import Daemon, wait_subscribed, write_config


def _run(cfg, ids: list[str]) -> None:
    dm = Daemon(cfg).start()
    sub = dm.subscriber([b"result.", b"status."])
    try:
        wait_subscribed(sub)
        inspect(dm, sub, ids)
        # the recorder writes after publishing: wait until its queue is through
        wait_for(lambda: dm.ctl({"cmd": "status"})["result"]["recorder"]["recorded"] >= len(ids))
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()


def _whole(set_json) -> bool:
    doc = json.loads(set_json.read_text())
    return all((set_json.parent / f).is_file() for f in doc["files"].values())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_retention_after_a_restart_keeps_every_capture_whole_and_trainable(bundle, tmp_path):
    rec = tmp_path / "captures"
    recorder = f'[recorder]\nenabled = true\ndir = "{rec}"\npass_sample_rate = 1.0'
    cfg = write_config(tmp_path, bundle, size=32, extra=recorder + "\nmin_free_bytes = 0")
    _run(cfg, [f"first-{i}" for i in range(6)])
    sets = find_sets(rec)
    assert len(sets) == 6
    one = max(sum(f.stat().st_size for f in s.parent.iterdir()) for s in sets)
    # restart with room for about five captures: the scanned ones must go whole
    cfg.write_text(
        cfg.read_text().replace(
            "min_free_bytes = 0", f"min_free_bytes = 0\nmax_bytes = {5 * one + one // 2}"
        )
    )
    _run(cfg, [f"second-{i}" for i in range(4)])
    sets = find_sets(rec)
    kept = sorted(json.loads(s.read_text())["part_id"] for s in sets)
    assert all(_whole(s) for s in sets), kept
    assert 4 <= len(sets) <= 5 and {f"second-{i}" for i in range(4)} <= set(kept), kept
    # nothing left behind: no folder without its set.json, no hidden leftovers
    folders = [p for p in rec.glob("*/*/*") if p.is_dir()]
    assert sorted(folders) == sorted(s.parent for s in sets)

    # an incomplete set (as an older recorder left them): named, skipped, the rest trains
    broken = sets[0].parent
    (broken / f"{DEFAULT_LIGHTS[-1]}.png").unlink()
    p = afrd("label", str(rec), "--all", "--good")
    assert p.returncode == 0, p.stderr
    p = afrd(
        "train", "--data", str(rec), "--model", "memory", "--image-size", "32",
        "--threads", "1", "--out", str(tmp_path / "run"), timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    line = next(ln for ln in p.stderr.splitlines() if "incomplete set" in ln)
    assert str(broken) in line and f"{DEFAULT_LIGHTS[-1]}.png" in line
    assert f"split 'train' uses {len(sets) - 1}" in p.stderr
