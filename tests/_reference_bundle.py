"""A small real anomaly model for the shadow and drift tests: each light's image compared with
the mean image of normal parts of the simulated cell (a fixtured "plate", 32 px), as an ONNX
graph with the bundle's calibration statistics. Not a good model, a genuine one: its scores
rise when a part differs from the normal parts, and when the lamps age.

``aggregate``: "max" (score = the largest deviation of any pixel under any light: catches some
local defects) or "mean" (score = the mean deviation: blind to most local defects, sensitive
to every global change, such as an ageing lamp). Normal parts are rendered exactly as the
daemon's simulated camera renders them (the same part ids give the same images), the reference
from ``n_ref`` of them, the threshold from ``n_cal`` others at ``frr`` by the one calibration
(afrd.runtime.threshold_stats), so bundle.json's statistics are what `afrd calibrate
threshold` would have stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from afrd.data.lights import DEFAULT_LIGHTS

SIZE = 32
CATEGORY = "plate"
CAMERA = f'category = "{CATEGORY}"\nseed = 7'  # write_config's camera lines


def normal_sets(ids: list[str], size: int = SIZE, seed: int = 7) -> np.ndarray:
    """uint8 [B, N, H, W, 3] of the given part ids as the sim camera images them."""
    from afrd.data import render as R
    from afrd.sim.config import SimCameraConfig
    from afrd.sim.parts import SimParts

    parts = SimParts(SimCameraConfig(size=size, seed=seed, category=CATEGORY))
    lamps = [{k: v for k, v in R.LIGHT_SETUPS[n].items() if v > 0} for n in DEFAULT_LIGHTS]
    return np.stack([np.stack([R.render(parts.part(i), lm, size) for lm in lamps]) for i in ids])


def truth(ids: list[str], seed: int = 7, defect_rate: float = 0.5) -> list[int]:
    from afrd.sim.config import SimCameraConfig
    from afrd.sim.parts import SimParts

    cfg = SimCameraConfig(size=SIZE, seed=seed, category=CATEGORY, defect_rate=defect_rate)
    return [SimParts(cfg).truth(i) for i in ids]


def make_reference_bundle(
    out: Path, aggregate: str = "max", frr: float = 0.1, n_ref: int = 120, n_cal: int = 200
) -> Path:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from afrd.runtime.bundle import create_bundle
    from afrd.runtime.threshold_stats import threshold_statistics

    ids = [f"ref-{i}" for i in range(n_ref + n_cal)]  # defect_rate 0 in truth: all normal
    sets = normal_sets(ids)
    ref = sets[:n_ref].astype(np.float32).mean(0) / 255.0
    H = helper.make_node
    reduce = "ReduceMax" if aggregate == "max" else "ReduceMean"
    nodes = [
        H("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        H("Div", ["f", "k255"], ["x"]),
        H("Sub", ["x", "ref"], ["dx"]),
        H("Abs", ["dx"], ["d"]),
        H(reduce, ["d", "axes_lc"], ["anomaly_map"], keepdims=0),
        H(reduce, ["anomaly_map", "axes_hw"], ["score"], keepdims=0),
    ]
    inits = [
        helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
        numpy_helper.from_array(ref.astype(np.float32), "ref"),
        helper.make_tensor("axes_lc", TensorProto.INT64, [2], [1, 4]),
        helper.make_tensor("axes_hw", TensorProto.INT64, [2], [1, 2]),
    ]
    n = len(DEFAULT_LIGHTS)
    u8, f32 = TensorProto.UINT8, TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        f"reference-{aggregate}",
        [helper.make_tensor_value_info("images", u8, ["batch", n, SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info("anomaly_map", f32, ["batch", SIZE, SIZE]),
            helper.make_tensor_value_info("score", f32, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = sess.run(["score"], {"images": sets[n_ref:]})[0]
    thr, stats = threshold_statistics(scores, np.zeros(len(scores), np.int64), frr)
    b = create_bundle(
        out,
        lights=DEFAULT_LIGHTS,
        input_size=(SIZE, SIZE),
        model={"kind": f"test-reference-{aggregate}", "teacher_weights": "none"},
        name=f"test-reference-{aggregate}",
    )
    b.set_threshold(thr, stats, source=f"test calibration: {n_cal} normal sim parts")
    return out
