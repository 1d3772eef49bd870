"""Precision variants (model.fp16.onnx, model.int8.onnx): checked against model.onnx on held-out
image sets on disk, given their own threshold, and refused by every loader until they are.

Real graphs in ONNX Runtime: the toy and brightness bundles (mean brightness over lights and
channels; score its maximum), their fp16 conversion, and a deliberately wrong "variant" (the
same graph scaled by 1.4); the last test runs `afrd config check`, `afrd run` and `afrd export
check` as processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _daemon_helpers import REPO, Daemon, make_brightness_bundle, write_config
from _export_helpers import make_toy_bundle, toy_onnx

from afrd.data.capture import write_capture
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import BundleError, ConfigError
from afrd.export.cli import main as export_main
from afrd.runtime.bundle import Bundle
from afrd.runtime.engines import create_engine
from afrd.runtime.loader import load_runtime, source_graph
from afrd.runtime.threshold_stats import score_sets, threshold_at_frr

FP16, INT8 = "model.fp16.onnx", "model.int8.onnx"


def _sets(rng: np.random.Generator, n: int, size: int, label: int) -> list[ImageSet]:
    """Dim parts with one bright spot whose level (distinct per part) sets the score;
    defective parts (label 1) have brighter spots than normal ones, overlapping a little."""
    lo, hi = (150, 230) if label else (110, 180)
    levels = rng.choice(np.arange(lo, hi), size=n, replace=False)
    out = []
    for i, level in enumerate(levels):
        x = rng.integers(0, 60, (6, size, size, 3), dtype=np.uint8)
        y, xx = rng.integers(0, size, 2)
        x[:, y, xx, :] = level
        out.append(ImageSet(x, DEFAULT_LIGHTS, f"{'d' if label else 'n'}{i}", label=label))
    return out


def _capture(root: Path, size: int, normal: int = 40, defective: int = 10) -> Path:
    """A capture root whose reviewed sets (its ``val`` split) are labelled normal/defective."""
    rng = np.random.default_rng(size)
    for s in _sets(rng, normal, size, 0) + _sets(rng, defective, size, 1):
        write_capture(root, s, {"verdict": "fail" if s.label else "pass", "label": s.label})
    return root


def _add_variant(bundle: Bundle, name: str, scale: float = 1.0) -> None:
    """``name``: the toy graph, its scale multiplied by ``scale``, registered as a variant."""
    import onnx
    from onnx import numpy_helper

    h, _ = bundle.input_size
    toy_onnx(bundle.path / name, len(bundle.lights), h)
    model = onnx.load(str(bundle.path / name))
    for t in model.graph.initializer:
        if t.name == "scale":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * scale, "scale"))
    onnx.save(model, str(bundle.path / name))
    bundle.add_file(name, role="onnx-variant", precision="fp16")


@pytest.fixture()
def toy(tmp_path) -> Bundle:
    b = make_toy_bundle(tmp_path / "bundle", size=32)
    b.set_threshold(0.9, source="test")  # model.onnx's: deliberately not the variant's
    return b


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _capture(tmp_path_factory.mktemp("variants") / "captures", 32)


def test_checked_variant_gets_its_own_threshold_and_the_runtime_judges_by_it(toy, data):
    assert export_main(["fp16", str(toy.path), "--data", str(data), "--frr", "0.05"]) == 0
    b = Bundle.load(toy.path)
    rec = b.meta["variants"][FP16]
    assert rec["onnx_sha256"] == b.meta["files"][FP16]["sha256"]
    parity = rec["parity"]
    assert parity["sets"] == 50 and parity["normal"] == 40 and parity["defective"] == 10
    assert parity["score"]["max_abs_in_std"] <= 0.25 and parity["map"]["max_abs_in_range"] <= 0.05
    assert parity["verdicts"]["agreement"] >= 0.95
    # the threshold is the variant's own: its scores on the held-out normals at FRR 0.05
    sets = list(_sets(np.random.default_rng(32), 40, 32, 0))
    with create_engine("onnxruntime", b, threads=1, onnx_file=FP16) as eng:
        own = threshold_at_frr(score_sets(eng, sets)[0], 0.05)
    stats = rec["threshold"]["statistics"]
    assert rec["threshold"]["value"] == pytest.approx(own, abs=1e-7)
    assert stats["onnx_file"] == FP16 and stats["target_frr"] == 0.05
    assert stats["expected_frr"] == pytest.approx(2 / 41)  # k = 1 of 40 above it
    assert b.threshold == 0.9  # model.onnx's is untouched
    rt = load_runtime(toy.path, "onnxruntime", {"onnx_file": FP16, "threads": 1})
    assert rt.threshold == pytest.approx(own, abs=1e-7) and abs(own - 0.9) > 0.1
    rt.close()
    rt = load_runtime(toy.path, "onnxruntime", {"threads": 1})
    assert rt.threshold == 0.9
    rt.close()
    rt = load_runtime(toy.path, "onnxruntime", {"onnx_file": FP16}, threshold=0.7)
    assert rt.threshold == 0.7  # the config's threshold still overrides
    rt.close()


def test_unchecked_or_remade_variant_is_refused_by_name(toy, data):
    js = toy.path / "bundle.json"
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "variants": {INT8: {"threshold": {"value": "high"}}}}))
    with pytest.raises(BundleError, match=r"'variants\.model\.int8\.onnx\.threshold\.value'"):
        Bundle.load(toy.path)
    js.write_text(json.dumps(meta))
    _add_variant(toy, INT8)  # as an older afrd wrote it: hashed, never checked
    with pytest.raises(
        BundleError,
        match=r"variant model\.int8\.onnx \(run by engine onnxruntime\) has no parity check",
    ) as e:
        load_runtime(toy.path, "onnxruntime", {"onnx_file": INT8})
    assert f"afrd-export check {toy.path} model.int8.onnx" in str(e.value)
    assert "\n" not in str(e.value)
    assert export_main(["check", str(toy.path), INT8, "--data", str(data)]) == 0
    load_runtime(toy.path, "onnxruntime", {"onnx_file": INT8}).close()
    _add_variant(Bundle.load(toy.path), INT8, scale=1.001)  # re-made: another sha256
    with pytest.raises(
        BundleError, match=r"model\.int8\.onnx .*was re-made since its parity check"
    ):
        load_runtime(toy.path, "onnxruntime", {"onnx_file": INT8})
    with pytest.raises(BundleError, match=r"model\.int8\.onnx was re-made since"):
        from afrd.calibration.threshold import calibrate

        calibrate(Bundle.load(toy.path), _sets(np.random.default_rng(0), 8, 32, 0), variant=INT8)


def test_a_variant_that_strays_fails_its_parity_check(toy, data, capsys):
    from afrd.cli import main as afrd_main
    from afrd.export.variant_check import check_variant

    _add_variant(toy, FP16, scale=1.4)
    assert afrd_main(["export", "check", str(toy.path), FP16, "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.fp16.onnx fails its parity check against model.onnx" in err[0]
    assert "score max |diff|" in err[0] and "(limit 0.25)" in err[0]
    with pytest.raises(BundleError, match="has no parity check"):
        load_runtime(toy.path, "onnxruntime", {"onnx_file": FP16})
    assert (toy.path / FP16).is_file()  # checked as found: the file stays
    # the limits are the user's: a loose enough one lets it through, with its own threshold
    loose = ["--max-score-diff", "100", "--max-map-diff", "100", "--min-agreement", "0.5"]
    assert export_main(["check", str(toy.path), FP16, "--data", str(data), *loose]) == 0
    # a variant just written that fails is removed from the bundle altogether
    sets = _sets(np.random.default_rng(1), 10, 32, 0)
    _add_variant(Bundle.load(toy.path), INT8, scale=1.4)
    with pytest.raises(BundleError, match="removed from the bundle"):
        check_variant(Bundle.load(toy.path), INT8, sets, 0.05, made_here=True)
    b = Bundle.load(toy.path)
    assert INT8 not in b.meta["files"] and not (toy.path / INT8).exists()
    assert INT8 not in b.meta["variants"]


def test_calibrate_threshold_sets_every_checked_graph_from_its_own_scores(toy, data, capsys):
    """`afrd calibrate threshold` recalibrates model.onnx and each checked variant (each by its
    own scores), names an unchecked one instead, and stores a product's variant threshold,
    which a multi-class recipe then needs (no fallback to the variant's bundle-wide one)."""
    from afrd.calibration.cli import main as calibrate_main
    from afrd.calibration.threshold import calibrate
    from afrd.runtime.bundle_products import new_products

    assert export_main(["fp16", str(toy.path), "--data", str(data)]) == 0
    _add_variant(Bundle.load(toy.path), INT8)  # unchecked
    capsys.readouterr()
    assert calibrate_main(["threshold", str(toy.path), "--data", str(data), "--frr", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx: normal sets 40" in out and "model.fp16.onnx: normal sets 40" in out
    assert f"note: {INT8} is not checked" in out and f"afrd-export check {toy.path} {INT8}" in out
    b = Bundle.load(toy.path)
    for rec in (b.meta["threshold"], b.meta["variants"][FP16]["threshold"]):
        assert rec["statistics"]["target_frr"] == 0.1 and rec["statistics"]["rejected_normals"] == 3
    assert b.meta["variants"][FP16]["threshold"]["statistics"]["onnx_file"] == FP16
    assert INT8 not in b.meta.get("variants", {})
    # multi-class: product "a" has its own threshold for model.onnx, so needs one for the variant
    b.meta["products"] = new_products(["a"])
    b.save()
    sets = _sets(np.random.default_rng(8), 30, 32, 0)
    calibrate(b, sets, frr=0.1, product="a")
    with pytest.raises(BundleError, match=r"no threshold of its own for products \['a'\]"):
        load_runtime(toy.path, "onnxruntime", {"onnx_file": FP16}, products=["a"])
    r = calibrate(Bundle.load(toy.path), sets, frr=0.1, product="a", variant=FP16)
    rt = load_runtime(toy.path, "onnxruntime", {"onnx_file": FP16}, products=["a"])
    assert rt.product_thresholds == {"a": r["threshold"]}
    rt.close()


def test_check_arguments_are_validated_before_any_conversion(toy, tmp_path):
    bare = make_toy_bundle(tmp_path / "bare", size=32)
    with pytest.raises(ConfigError, match="records none it was calibrated on: pass --data"):
        export_main(["fp16", str(bare.path)])
    assert not (bare.path / FP16).exists()
    with pytest.raises(ConfigError, match="--data .* is not a directory"):
        export_main(["fp16", str(bare.path), "--data", str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="reference, not a precision variant"):
        export_main(["check", str(toy.path), "model.onnx", "--data", str(tmp_path)])


def test_the_graph_an_engine_runs():
    """The variant an engine computes: ONNX Runtime's onnx_file, a TensorRT engine's sidecar
    (the file it was built from; the real class, without a GPU to open it on)."""
    from afrd.runtime.engines.onnxruntime import OnnxRuntimeEngine
    from afrd.runtime.engines.tensorrt import TensorRTEngine

    trt = TensorRTEngine.__new__(TensorRTEngine)
    trt.sidecar = {"onnx_file": INT8, "precision": "int8"}
    assert source_graph(trt) == INT8
    ort_eng = OnnxRuntimeEngine.__new__(OnnxRuntimeEngine)
    ort_eng.onnx_file = FP16
    assert source_graph(ort_eng) == FP16


def _afrd(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "afrd", *args]
    return subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(240)
def test_cell_on_an_unchecked_variant_is_refused_then_runs_by_its_threshold(tmp_path):
    """`afrd config check` and `afrd run` on a config selecting an unchecked variant: exit 2,
    one line naming it and the command; after `afrd export check` the daemon judges by the
    variant's own threshold."""
    bundle = tmp_path / "brightness"
    make_brightness_bundle(bundle, size=64, threshold=0.45)
    shutil.copy(bundle / "model.onnx", bundle / FP16)
    Bundle.load(bundle).add_file(FP16, role="onnx-variant", precision="fp16")
    opts = f'threads = 1, onnx_file = "{FP16}"'
    cfg = write_config(tmp_path, bundle, size=64, engine_options=opts)
    for args in (("config", "check", str(cfg)), ("run", "--config", str(cfg))):
        p = _afrd(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if FP16 in ln]
        assert len(lines) == 1 and f"afrd-export check {bundle} {FP16}" in lines[0], p.stderr
    data = _capture(tmp_path / "captures", 64)
    p = _afrd("export", "check", str(bundle), FP16, "--data", str(data), "--frr", "0.05")
    assert p.returncode == 0, p.stderr
    own = json.loads((bundle / "bundle.json").read_text())["variants"][FP16]["threshold"]["value"]
    assert abs(own - 0.45) > 0.05
    p = _afrd("config", "check", str(cfg))
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr
    dm = Daemon(cfg).start()
    try:
        st = dm.ctl({"cmd": "status"})["result"]
        assert st["threshold"] == pytest.approx(own) and FP16 in st["engine"]
    finally:
        dm.stop()
