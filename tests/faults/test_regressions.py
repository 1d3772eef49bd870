"""Planted bugs that went unnoticed before issue 12, and the test that now catches each one
(each mutation was applied by hand once and the named test failed):

1. only ``model.onnx`` hashed, variant files unchecked (``Bundle.verify``):
   tests/test_export_bundle.py::test_every_listed_file_is_verified_not_only_model_onnx
2. ``>=`` instead of ``>`` for the verdict (``verdict.judge``):
   test_regressions.py::test_a_score_equal_to_the_threshold_passes
3. score parity not enforced at export (``onnx_export.parity_check`` checks only the map):
   test_regressions.py::test_export_parity_checks_the_score_not_only_the_map
4. the anomaly map shifted 5 px: test_regressions.py::test_the_map_localises_the_defect_better_than
   _a_control_that_ignores_it catches a shift in the runtime (engine resize/registration warp);
   a shift inside the model's own anomaly-map code is the model tests' to catch (not covered here)
5. the daemon publishing a hash of the bundle path instead of ``model.onnx``:
   test_daemon_survives.py::test_results_carry_the_sha256_of_model_onnx
6. the calibration's false-accept rate inverted:
   tests/test_threshold.py::test_far_is_the_share_of_defective_sets_accepted
"""

from __future__ import annotations

import numpy as np
import pytest

from afrd.daemon.verdict import Job, judge
from afrd.errors import BundleError


def _job(threshold: float) -> Job:
    job = Job(seq=0, part_id="p", product="x", t_trigger=0.0, wall_trigger=0.0)
    job.threshold = threshold
    return job


def test_a_score_equal_to_the_threshold_passes():
    amap = np.zeros((1, 4, 4), np.float32)
    for score, verdict in (
        (0.5, "pass"),
        (np.nextafter(np.float32(0.5), np.float32(1)), "fail"),
        (0.25, "pass"),
    ):
        job = _job(0.5)
        judge(job, amap, np.array([score], np.float32), "test")
        assert job.verdict == verdict, (score, job.verdict)


def test_export_parity_checks_the_score_not_only_the_map(bundle):
    pytest.importorskip("torch", reason="parity_check compares against PyTorch (train)")
    from afrd.export.onnx_export import parity_check

    def reference(x, score_offset: float):  # a torch.Tensor in, as the model takes
        m = x.float().mean(dim=(1, 4)) / 255.0  # what the brightness graph computes
        return m, m.amax(dim=(1, 2)) + score_offset

    x = np.random.default_rng(0).integers(0, 255, (2, 6, 64, 64, 3), dtype=np.uint8)
    parity_check(bundle / "model.onnx", lambda t: reference(t, 0.0), [("ok", x)], echo=False)
    with pytest.raises(BundleError, match=r"score: max abs error"):
        parity_check(bundle / "model.onnx", lambda t: reference(t, 0.01), [("s", x)], echo=False)


def test_the_map_localises_the_defect_better_than_a_control_that_ignores_it(bundle):
    """The runtime's map (frames resized to the bundle's size, any registration warped back) is
    compared with the defect mask and with a fixed centre disc that ignores the defect: the map
    must find the defect, and the disc must not pass the same test."""
    from afrd.runtime.engines import create_engine

    rng = np.random.default_rng(1)
    frames = rng.integers(20, 60, (6, 128, 128, 3), dtype=np.uint8)  # twice the bundle's 64
    mask = np.zeros((64, 64), bool)
    mask[10:16, 44:50] = True  # off centre
    big = np.kron(mask, np.ones((2, 2), bool))
    frames[:, big] = 250
    with create_engine("onnxruntime", bundle, threads=1) as eng:
        maps, _ = eng.infer(frames)
    amap = maps[0]
    assert amap.shape == mask.shape

    def inside_over_outside(m: np.ndarray) -> float:
        return float(m[mask].mean() - m[~mask].max())

    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 12**2).astype(np.float32)
    assert inside_over_outside(amap) > 0  # every defect pixel above every other pixel
    assert inside_over_outside(disc) <= 0  # the control that ignores the defect fails it
    peak = np.unravel_index(np.argmax(amap), amap.shape)
    assert mask[peak]
