"""Bundles and torch-free engines on a real (toy) ONNX graph: load, verify, refuse, infer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _export_helpers import make_toy_bundle, toy_reference

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import BundleError, ConfigError, DataError, DeviceError
from afrd.runtime.bundle import SCHEMA, Bundle, gpu_slug
from afrd.runtime.engines import create_engine


@pytest.fixture()
def toy(tmp_path):
    return make_toy_bundle(tmp_path / "bundle", size=32)


def test_bundle_json_records_contract(toy):
    meta = json.loads((toy.path / "bundle.json").read_text())
    assert meta["schema"] == SCHEMA
    assert [entry["name"] for entry in meta["lights"]] == list(DEFAULT_LIGHTS)
    assert meta["input"]["size"] == [32, 32] and meta["input"]["dtype"] == "uint8"
    assert len(meta["files"]["model.onnx"]["sha256"]) == 64
    assert meta["afrd_version"] and meta["created"].endswith("Z")
    b = Bundle.load(toy.path, expect_lights=DEFAULT_LIGHTS)
    assert b.lights == DEFAULT_LIGHTS and b.input_size == (32, 32) and b.threshold is None
    assert b.sha256 == meta["files"]["model.onnx"]["sha256"]


def test_tampered_onnx_refused(toy):
    p = toy.onnx_path
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx sha256 mismatch: expected [0-9a-f]{64}"):
        Bundle.load(toy.path)


def test_missing_file_refused(toy):
    toy.onnx_path.unlink()
    with pytest.raises(BundleError, match=r"missing file model\.onnx"):
        Bundle.load(toy.path)
    with pytest.raises(BundleError, match="missing bundle.json"):
        Bundle.load(toy.path.parent)


def test_unknown_schema_refused(toy):
    js = toy.path / "bundle.json"
    meta = json.loads(js.read_text())
    meta["schema"] = "afrd.bundle/99"
    js.write_text(json.dumps(meta))
    with pytest.raises(
        BundleError, match=r"'schema' is 'afrd.bundle/99', expected 'afrd.bundle/1'"
    ):
        Bundle.load(toy.path)


def test_light_mismatch_refused(toy):
    swapped = (DEFAULT_LIGHTS[1], DEFAULT_LIGHTS[0], *DEFAULT_LIGHTS[2:])
    with pytest.raises(BundleError, match="lights do not match the cell config") as exc:
        Bundle.load(toy.path, expect_lights=swapped)
    assert "ring_bottom" in str(exc.value) and "ring_all" in str(exc.value)


def test_set_threshold_atomic_and_persistent(toy):
    toy.set_threshold(0.42, {"n_normal": 10, "frr": 0.01}, source="test")
    assert not list(toy.path.glob(".bundle.json.*"))  # no temp file left behind
    again = Bundle.load(toy.path)
    assert again.threshold == pytest.approx(0.42)
    assert again.meta["threshold"]["statistics"]["n_normal"] == 10
    with pytest.raises(BundleError):
        toy.set_threshold(float("nan"))


def test_onnxruntime_engine_matches_reference_batch_and_single(toy):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 6, 32, 32, 3), dtype=np.uint8)
    with create_engine("onnxruntime", toy.path, threads=1) as eng:
        eng.warmup(1)
        maps, scores = eng.infer(x)
        ref_maps, ref_scores = toy_reference(x)
        assert maps.shape == (3, 32, 32) and scores.shape == (3,)
        np.testing.assert_allclose(maps, ref_maps, atol=1e-5)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        one_map, one_score = eng.infer(x[1])  # [N,H,W,3] is a batch of one
        np.testing.assert_allclose(one_score, ref_scores[1:2], atol=1e-5)
        assert set(eng.last_timings) >= {"prepare_ms", "run_ms", "total_ms"}


def test_engine_resizes_frames_and_checks_light_count(toy):
    x = np.full((6, 64, 48, 3), 128, np.uint8)
    with create_engine("onnxruntime", toy, threads=1) as eng:
        maps, scores = eng.infer(x)
        assert maps.shape == (1, 32, 32)
        assert scores[0] == pytest.approx(128 / 255, abs=1e-5)
        with pytest.raises(DataError, match="expects 6 images"):
            eng.infer(x[:5])
        with pytest.raises(DataError, match="uint8"):
            eng.infer(x.astype(np.float32))


def test_null_engine_and_unknown_kind(toy):
    eng = create_engine("null", toy)
    maps, scores = eng.infer(np.zeros((2, 6, 32, 32, 3), np.uint8))
    assert maps.shape == (2, 32, 32) and not scores.any()
    assert "null" in eng.name
    with pytest.raises(ConfigError, match="unknown"):
        create_engine("openvino", toy)


def test_tensorrt_missing_is_a_clear_error(toy):
    from afrd.runtime.engines import tensorrt as trt_mod

    if trt_mod.trt is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(DeviceError, match="TensorRT not installed"):
        create_engine("tensorrt", toy)


def test_tensorrt_build_and_run(toy):
    pytest.importorskip("tensorrt", reason="TensorRT not installed")
    from afrd.runtime.engines.tensorrt import build_engine

    build_engine(toy, max_batch=4, workspace_mb=256)
    x = np.random.default_rng(1).integers(0, 256, (3, 6, 32, 32, 3), dtype=np.uint8)
    with create_engine("tensorrt", Bundle.load(toy.path)) as eng:
        maps, scores = eng.infer(x)
    ref_maps, ref_scores = toy_reference(x)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)


def test_gpu_slug():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_slug("Orin (nvgpu)") == "orin-nvgpu"


def test_daemon_path_imports_without_torch():
    code = (
        "import sys; import afrd.runtime.bundle, afrd.runtime.engines, "
        "afrd.runtime.engines.onnxruntime, afrd.runtime.engines.null, afrd.runtime.engines.tensorrt; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trt_cli_checks_before_building(toy, capsys):
    from afrd.cli import main as afrd_main
    from afrd.runtime.engines import tensorrt as trt_mod

    assert afrd_main(["export", "trt", str(toy.path), "--int8"]) == 2
    assert "--int8 needs --data DIR" in capsys.readouterr().err
    if trt_mod.trt is None:
        assert afrd_main(["export", "trt", str(toy.path), "--fp16"]) == 2
        assert "TensorRT not installed" in capsys.readouterr().err
        assert not (toy.path / "model.fp16.onnx").exists()  # failed before any conversion


def test_every_listed_file_is_verified_not_only_model_onnx(toy):
    """A tampered precision variant (or registration reference) is refused like model.onnx."""
    variant = toy.path / "model.int8.onnx"
    variant.write_bytes(toy.onnx_path.read_bytes())
    toy.add_file("model.int8.onnx", precision="int8")
    Bundle.load(toy.path)  # as exported: fine
    data = bytearray(variant.read_bytes())
    data[len(data) // 2] ^= 0xFF
    variant.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx sha256 mismatch"):
        Bundle.load(toy.path)
