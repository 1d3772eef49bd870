"""Export a small real AFRD (random teacher, 64 px) and run it through every available engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _export_helpers import make_checkpoint

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import BundleError, ConfigError
from afrd.export.cli import main as export_main
from afrd.runtime.bundle import Bundle
from afrd.runtime.engines import create_engine

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(root / "tiny.pt", size=SIZE)
    out = root / "bundle"
    assert export_main(["onnx", str(ckpt), "--out", str(out), "--opset", "18"]) == 0
    return ckpt, Bundle.load(out, expect_lights=DEFAULT_LIGHTS)


def test_bundle_from_export_passes_checker_and_records_metadata(exported):
    ckpt, bundle = exported
    onnx.checker.check_model(str(bundle.onnx_path), full_check=True)
    model = onnx.load(str(bundle.onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["afrd.schema"] == "afrd.bundle/1"
    assert props["afrd.teacher_weights"] == "random"
    assert '"ring_all"' in props["afrd.lights"]
    inp = model.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    meta = bundle.meta
    assert (
        meta["model"]["random_teacher"] is True and meta["model"]["teacher"] == "efficientnet_lite0"
    )
    assert meta["input"]["size"] == [SIZE, SIZE]
    parity = meta["onnx"]["parity"]["results"]
    assert {r["batch"] for r in parity} == {1, 3}
    assert all(r["map"]["max_abs"] <= r["map"]["limit_abs"] for r in parity)
    assert meta["source"]["checkpoint_sha256"] and meta["onnx"]["exporter"] in (
        "dynamo",
        "torchscript",
    )


def test_engines_agree_and_batch_is_dynamic(exported):
    ckpt, bundle = exported
    rng = np.random.default_rng(7)
    x3 = rng.integers(0, 256, (3, 6, SIZE, SIZE, 3), dtype=np.uint8)
    ort_eng = create_engine("onnxruntime", bundle, threads=2)
    pt_eng = create_engine("pytorch", bundle)  # checkpoint found via bundle.json, sha256 checked
    null_eng = create_engine("null", bundle)
    maps_o, scores_o = ort_eng.infer(x3)
    maps_p, scores_p = pt_eng.infer(x3)
    assert maps_o.shape == (3, SIZE, SIZE) and scores_o.shape == (3,)
    np.testing.assert_allclose(maps_o, maps_p, atol=1e-4 + 1e-3 * np.abs(maps_p).max())
    np.testing.assert_allclose(scores_o, scores_p, rtol=1e-3)
    # B=1 of the same part gives the same answer as inside the batch
    m1, s1 = ort_eng.infer(x3[2])
    assert m1.shape == (1, SIZE, SIZE)
    np.testing.assert_allclose(s1, scores_o[2:3], rtol=1e-4)
    # scores differ between parts: the graph is not constant
    assert np.ptp(scores_o) > 0
    zm, zs = null_eng.infer(x3)
    assert zm.shape == maps_o.shape and not zs.any()
    for e in (ort_eng, pt_eng, null_eng):
        e.close()


def test_tensorrt_engine_or_skip(exported):
    pytest.importorskip("tensorrt", reason="TensorRT not installed")
    _, bundle = exported  # pragma: no cover - needs TensorRT and a GPU
    from afrd.runtime.engines.tensorrt import build_engine

    build_engine(bundle, max_batch=4, workspace_mb=512)
    x = np.random.default_rng(3).integers(0, 256, (2, 6, SIZE, SIZE, 3), dtype=np.uint8)
    m_t, s_t = create_engine("tensorrt", Bundle.load(bundle.path)).infer(x)
    m_o, s_o = create_engine("onnxruntime", bundle).infer(x)
    np.testing.assert_allclose(s_t, s_o, rtol=1e-2)


def test_parity_check_fails_loudly_on_a_different_model(exported):
    from afrd.export.onnx_export import parity_check, random_inputs
    from afrd.model.checkpoint import load_checkpoint
    from afrd.model.inference import InferenceModel

    ckpt, bundle = exported
    model, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(1.5)
    with pytest.raises(BundleError, match=r"parity FAILED .*map: max abs error"):
        parity_check(
            bundle.onnx_path,
            InferenceModel(model).eval(),
            random_inputs(6, SIZE, (1,), seed=0),
            echo=False,
        )


def test_pytorch_engine_refuses_other_checkpoint(exported, tmp_path):
    _, bundle = exported
    other = make_checkpoint(tmp_path / "other.pt", size=SIZE, seed=1)
    with pytest.raises(BundleError, match="does not match the one the bundle was exported from"):
        create_engine("pytorch", bundle, checkpoint=other)


def test_cli_validates_arguments_up_front(exported, tmp_path, capsys):
    ckpt, bundle = exported
    from afrd.cli import main as afrd_main

    assert (
        afrd_main(["export", "onnx", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")]) == 2
    )
    assert "nope.pt does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not empty; pass --force"):
        export_main(["onnx", str(ckpt), "--out", str(bundle.path)])
    with pytest.raises(ConfigError, match="--opset 9"):
        export_main(["onnx", str(ckpt), "--out", str(tmp_path / "c"), "--opset", "9"])
    assert export_main(["show", str(bundle.path), "--lights", ",".join(DEFAULT_LIGHTS)]) == 0


def test_fp16_and_int8_variants_run_in_onnxruntime(exported, tmp_path):
    import shutil

    from afrd.export.precision import FP16_FILE, INT8_FILE, make_fp16, make_int8_qdq

    _, src = exported
    bundle = Bundle.load(shutil.copytree(src.path, tmp_path / "b"))
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (2, 6, SIZE, SIZE, 3), dtype=np.uint8)
    ref_m, ref_s = create_engine("onnxruntime", bundle, threads=2).infer(x)

    make_fp16(bundle)
    b2 = Bundle.load(bundle.path)  # variant hashed into bundle.json
    m16, s16 = create_engine("onnxruntime", b2, threads=2, onnx_file=FP16_FILE).infer(x)
    assert m16.dtype == np.float32 and m16.shape == ref_m.shape
    np.testing.assert_allclose(s16, ref_s, rtol=2e-2)

    calib = [rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8) for _ in range(4)]
    make_int8_qdq(bundle, calib)
    q = onnx.load(str(bundle.path / INT8_FILE))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    m8, s8 = create_engine(
        "onnxruntime", Bundle.load(bundle.path), threads=2, onnx_file=INT8_FILE
    ).infer(x)
    assert np.isfinite(m8).all() and m8.shape == ref_m.shape
    np.testing.assert_allclose(s8, ref_s, rtol=0.25)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_variants_of_a_real_graph_are_checked_on_held_out_sets(exported, tmp_path):
    """fp16 of the exported AFRD stays within the default parity limits and gets its own
    threshold; INT8 (MinMax ranges) either does too or is refused and removed, never kept
    unchecked."""
    import json
    import shutil

    from _model_helpers import make_sets

    from afrd.data.capture import write_capture
    from afrd.export.precision import FP16_FILE, INT8_FILE

    _, src = exported
    bundle = Path(shutil.copytree(src.path, tmp_path / "b"))
    data = tmp_path / "captures"
    for s in make_sets(24, SIZE, seed0=40):
        write_capture(data, s, {"verdict": "pass", "label": 0})
    args = ["--data", str(data), "--frr", "0.05", "--threads", "2"]
    assert export_main(["fp16", str(bundle), *args]) == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    rec = meta["variants"][FP16_FILE]
    assert rec["parity"]["normal"] == 24 and rec["parity"]["score"]["max_abs_in_std"] <= 0.25
    assert rec["threshold"]["value"] is not None
    try:
        rc = export_main(["int8", str(bundle), *args])
    except BundleError as exc:
        assert "model.int8.onnx fails its parity check" in str(exc)
        assert not (bundle / INT8_FILE).exists()
    else:
        assert rc == 0
        meta = json.loads((bundle / "bundle.json").read_text())
        assert meta["variants"][INT8_FILE]["parity"]["verdicts"]["agreement"] >= 0.95
