"""Threshold calibration at a target false-reject rate, on generated image sets scored by the
real ONNX graph of a toy bundle (score = brightest pixel's mean over lights and channels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _export_helpers import make_toy_bundle

from afrd.calibration.threshold import calibrate
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import ConfigError, DataError
from afrd.runtime.bundle import Bundle
from afrd.runtime.threshold_stats import (
    expected_frr,
    frr_upper_bound,
    threshold_at_frr,
    threshold_statistics,
)

SIZE = 32


def make_sets(rng: np.random.Generator, n: int, hot: tuple[int, int], label: int | None):
    """Dim random parts with one bright spot; the spot's total level (distinct per part, drawn
    from ``hot`` per entry) sets the score, so scores never tie."""
    totals = rng.choice(np.arange(18 * hot[0], 18 * hot[1]), size=n, replace=False)
    out = []
    for i, total in enumerate(totals):
        x = rng.integers(0, 60, (6, SIZE, SIZE, 3), dtype=np.uint8)
        y, xx = rng.integers(0, SIZE, 2)
        spot = np.full(18, total // 18, dtype=np.int64)
        spot[: total % 18] += 1
        x[:, y, xx, :] = spot.reshape(6, 3).astype(np.uint8)
        out.append(ImageSet(images=x, lights=DEFAULT_LIGHTS, part_id=f"p{i}", label=label))
    return out


@pytest.fixture()
def toy(tmp_path):
    return make_toy_bundle(tmp_path / "bundle", size=SIZE)


def test_threshold_at_frr_counts():
    s = np.arange(100, dtype=float)
    assert threshold_at_frr(s, 0.0) == 99.0  # nothing above
    t = threshold_at_frr(s, 0.05)
    assert (s > t).sum() == 4  # (4+1)/(100+1) <= 0.05 < (5+1)/101: new parts' expected FRR
    assert (s > threshold_at_frr(s, 0.0099)).sum() == 0  # even the highest expects 1/101
    with pytest.raises(ConfigError):
        threshold_at_frr(s, 1.5)
    with pytest.raises(DataError):
        threshold_at_frr([], 0.01)


@pytest.mark.parametrize("frr", [0.01, 0.05, 0.1])
def test_calibration_gives_requested_frr_and_reports_far(toy, frr):
    rng = np.random.default_rng(42)
    normal = make_sets(rng, 200, (120, 230), label=0)
    defective = make_sets(rng, 50, (200, 255), label=1)
    r = calibrate(toy, normal + defective, frr=frr)
    normal_scores = np.array(
        [s.images.astype(np.float32).mean(axis=(0, 3)).max() / 255 for s in normal]
    )
    assert len(np.unique(normal_scores)) == len(normal_scores)  # no ties: FRR is exact
    k = int(np.floor(frr * 201 + 1e-9)) - 1  # the most with (k+1)/(n+1) <= frr
    assert r["achieved_frr"] == pytest.approx(k / 200)
    assert (normal_scores > r["threshold"] + 1e-6).sum() == k
    assert r["expected_frr"] <= frr
    # fresh normal parts from the same process land near the target FRR
    fresh = make_sets(np.random.default_rng(7), 400, (120, 230), label=0)
    fresh_scores = np.array(
        [s.images.astype(np.float32).mean(axis=(0, 3)).max() / 255 for s in fresh]
    )
    three_sigma = 3 * np.sqrt(frr * (1 - frr) * (1 / 200 + 1 / 400)) + 0.005
    assert abs((fresh_scores > r["threshold"]).mean() - frr) < three_sigma
    assert r["far"] is not None and 0.0 <= r["far"] < 1.0
    assert r["defective"]["n"] == 50 and r["normal"]["n"] == 200
    # stored in the bundle with its statistics; the bundle still verifies
    again = Bundle.load(toy.path)
    assert again.threshold == pytest.approx(r["threshold"])
    stats = json.loads((toy.path / "bundle.json").read_text())["threshold"]["statistics"]
    assert stats["target_frr"] == frr and stats["normal"]["p99"] > 0


def test_calibration_without_normal_sets_is_refused(toy):
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="no normal image sets"):
        calibrate(toy, make_sets(rng, 5, (200, 255), label=1), frr=0.01)


def test_small_sets_warn_naming_n_frr_and_the_normals_needed(toy):
    """n x FRR < 5: the threshold rests on the highest normal scores; the warning says so once,
    with n, the FRR and how many normals would do. 1000 normals at 1 %: no warning."""
    r = calibrate(toy, make_sets(np.random.default_rng(1), 20, (120, 230), None), frr=0.01)
    warning = r["warning"]
    assert "\n" not in warning and "only 20 normal sets" in warning
    assert "FRR of 0.01" in warning and "500 normal sets" in warning
    assert r["achieved_frr"] == 0.0 and r["rejected_normals"] == 0
    stored = Bundle.load(toy.path).meta["threshold"]["statistics"]
    assert stored["warning"] == warning
    scores = np.random.default_rng(2).normal(size=1000)
    _, stats = threshold_statistics(scores, np.zeros(1000), 0.01)
    assert "warning" not in stats and stats["rejected_normals"] == 9  # 10/1001 <= 0.01
    _, stats = threshold_statistics(scores[:499], np.zeros(499), 0.01)
    assert "500 normal sets" in stats["warning"]  # 4.99 < 5: still one short


def test_expected_frr_and_its_upper_bound_for_known_k_and_n(toy):
    """(k+1)/(n+1) and the one-sided 95 % Clopper-Pearson bound, against closed forms: k = 0
    gives 1 - 0.05^(1/n), k = n - 1 gives 0.95^(1/n)."""
    assert expected_frr(0, 20) == pytest.approx(1 / 21)
    assert expected_frr(10, 1000) == pytest.approx(11 / 1001)
    for n in (1, 20, 1000):
        assert frr_upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
        assert frr_upper_bound(n - 1, n) == pytest.approx(0.95 ** (1 / n), rel=1e-9)
    assert frr_upper_bound(20, 20) == 1.0
    assert frr_upper_bound(0, 20) == pytest.approx(0.13911, abs=1e-5)
    # stored with the threshold: k = 1 normal above it out of n = 40 (2/41 <= 0.05 < 3/41)
    r = calibrate(toy, make_sets(np.random.default_rng(4), 40, (120, 230), 0), frr=0.05)
    stats = Bundle.load(toy.path).meta["threshold"]["statistics"]
    assert r["rejected_normals"] == stats["rejected_normals"] == 1
    assert stats["expected_frr"] == pytest.approx(2 / 41)
    assert stats["frr_upper_95"] == pytest.approx(frr_upper_bound(1, 40))
    assert 2 / 41 < stats["frr_upper_95"] < 0.2


def test_upper_bound_matches_scipy():
    stats = pytest.importorskip(
        "scipy.stats",
        reason="scipy is not installed (only a test-time cross-check: afrd "
        "computes the bound itself and does not depend on scipy)",
    )
    for k, n in [(0, 1), (0, 20), (3, 100), (10, 1000), (50, 5000), (0, 100000), (19, 20)]:
        want = stats.beta.ppf(0.95, k + 1, n - k)  # Clopper-Pearson upper limit
        assert frr_upper_bound(k, n) == pytest.approx(want, rel=1e-7), (k, n)


def test_cli_on_a_dataset_on_disk(toy, tmp_path, capsys):
    capture = pytest.importorskip("afrd.data.capture", reason="afrd.data.capture not available yet")
    pytest.importorskip("afrd.data.datasets", reason="afrd.data.datasets not available yet")
    from afrd.calibration.cli import main as calibrate_main

    rng = np.random.default_rng(3)
    root = tmp_path / "captures"
    for s in make_sets(rng, 30, (120, 230), label=0):
        capture.write_capture(root, s, {"verdict": "pass", "label": 0})
    for s in make_sets(rng, 5, (200, 255), label=1):
        s.part_id = "d" + s.part_id
        capture.write_capture(root, s, {"verdict": "fail", "label": 1})
    rc = calibrate_main(["threshold", str(toy.path), "--data", str(root), "--frr", "0.1"])
    out = capsys.readouterr().out
    assert rc == 0 and "defective sets 5: false-accept rate" in out
    # 2 of 30 normals above it: 3/31 expected on new parts, within the 0.1 asked for
    assert "achieved FRR 0.06667 " in out and "expected FRR on new parts 0.09677" in out
    b = Bundle.load(toy.path)
    assert b.threshold is not None and b.meta["threshold"]["statistics"]["normal"]["n"] == 30


def test_far_is_the_share_of_defective_sets_accepted(toy):
    """FAR = defective scores <= threshold (accepted as pass), counted independently here."""
    rng = np.random.default_rng(3)
    normal = make_sets(rng, 100, (100, 200), label=0)
    defective = make_sets(rng, 40, (150, 255), label=1)  # overlaps the normal range on purpose
    r = calibrate(toy, normal + defective, frr=0.05)
    d_scores = np.array(
        [s.images.astype(np.float32).mean(axis=(0, 3)).max() / 255 for s in defective]
    )
    accepted = float((d_scores <= r["threshold"] + 1e-7).mean())
    assert 0.0 < accepted < 0.5  # the overlap makes it neither 0 nor the inverted rate
    assert r["far"] == pytest.approx(accepted, abs=1.5 / d_scores.size)


def test_product_threshold_of_a_multi_class_bundle(toy):
    """`--product`: the threshold goes to that product of a multi-class bundle, the bundle's own
    stays unset; the runtime then opens the bundle for products that all have one, and names
    the product that has none."""
    from afrd.errors import BundleError
    from afrd.runtime.bundle_products import new_products, threshold_for
    from afrd.runtime.loader import load_runtime

    toy.meta["products"] = new_products(["a", "b"])
    toy.meta["threshold"] = {"value": None, "source": "none", "statistics": {}}
    toy.save()
    rng = np.random.default_rng(7)
    low = calibrate(toy, make_sets(rng, 60, (60, 120), label=0), frr=0.05, product="a")
    high = calibrate(toy, make_sets(rng, 60, (150, 230), label=0), frr=0.05, product="b")
    assert low["threshold"] < high["threshold"]
    again = Bundle.load(toy.path)
    assert again.threshold is None
    assert [threshold_for(again, p) for p in "ab"] == [low["threshold"], high["threshold"]]
    stats = again.meta["products"]["a"]["threshold"]["statistics"]
    assert stats["target_frr"] == 0.05 and stats["normal"]["n"] == 60
    with pytest.raises(BundleError, match="no product 'c'"):
        calibrate(again, make_sets(rng, 10, (60, 120), label=0), product="c")
    rt = load_runtime(toy.path, "onnxruntime", products=["a", "b"])
    assert rt.threshold is None and rt.product_thresholds["b"] == high["threshold"]
    rt.close()
    with pytest.raises(ConfigError, match=r"without their own: \['c'\]"):
        load_runtime(toy.path, "onnxruntime", products=["a", "c"])
    with pytest.raises(ConfigError, match="no calibrated threshold"):
        load_runtime(toy.path, "onnxruntime")


def test_cli_process_prints_expected_frr_and_the_small_set_warning(toy, tmp_path):
    """`afrd calibrate threshold` as its own process on 20 normal sets at FRR 0.01: it prints
    the expected FRR with its bound and the one-line warning, and stores both."""
    from _daemon_helpers import REPO

    from afrd.data.capture import write_capture

    root = tmp_path / "captures"
    for s in make_sets(np.random.default_rng(3), 20, (120, 230), label=0):
        write_capture(root, s, {"verdict": "pass", "label": 0})
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "afrd", "calibrate", "threshold", str(toy.path)]
    p = subprocess.run(
        [*cmd, "--data", str(root), "--frr", "0.01"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    warn = [ln for ln in lines if ln.startswith("WARNING: ")]
    assert len(warn) == 1 and "only 20 normal sets" in warn[0] and "500 normal sets" in warn[0]
    assert any(
        "expected FRR on new parts 0.04762" in ln and "k = 0 of n = 20" in ln and "0.1391" in ln
        for ln in lines
    ), p.stdout
    stats = Bundle.load(toy.path).meta["threshold"]["statistics"]
    assert stats["expected_frr"] == pytest.approx(1 / 21) and "warning" in stats
