"""Bundles whose ONNX graphs misbehave, for the fault tests: a real engine (ONNX Runtime on a
real graph) that raises or returns an empty batch depending on the image (``make_faulty_bundle``)
or takes seconds to warm up, as a large TensorRT engine does (``make_slow_warmup_bundle``).

``make_faulty_bundle``:
The graph is the brightness function of ``afrd.sim.launch.make_brightness_bundle`` (map = mean
brightness over lights and channels, score = its maximum) with two faults keyed on the score:
``k = floor(score * 997) mod 7``; k == 3 reshapes the map to a width that does not divide it
(ONNX Runtime raises), k == 5 slices the batch to nothing (one empty map, no score). An all-black
warm-up set has k == 0, so the engine opens normally; about two parts in seven misbehave, the
same ones on every run (the simulated camera renders a part from its part id).
"""

from __future__ import annotations

from pathlib import Path

from afrd.data.lights import DEFAULT_LIGHTS

RAISES, EMPTY = 3, 5  # k values (see above)


def make_faulty_bundle(out: Path, size: int = 64, threshold: float = 0.5) -> Path:
    from onnx import TensorProto, helper

    H = helper.make_node
    nodes = [
        H("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        H("ReduceMean", ["f", "axes_m"], ["m"], keepdims=0),
        H("Div", ["m", "k255"], ["map0"]),
        H("ReduceMax", ["map0", "axes_s"], ["s0"], keepdims=0),
        # k = floor(max score * 997) mod 7 (one key per batch: the daemon sends one part)
        H("ReduceMax", ["s0"], ["smax"], keepdims=0),
        H("Mul", ["smax", "k997"], ["s997"]),
        H("Floor", ["s997"], ["sfl"]),
        H("Cast", ["sfl"], ["si"], to=TensorProto.INT64),
        H("Mod", ["si", "seven"], ["k"]),
        # k == RAISES: reshape to [-1, 3] (H*W is a power of two: 3 never divides it)
        H("Equal", ["k", "raises"], ["is_r"]),
        H("Cast", ["is_r"], ["r"], to=TensorProto.INT64),
        H("Mul", ["r", "two"], ["r2"]),
        H("Add", ["r2", "one"], ["width"]),
        H("Reshape", ["width", "one_shape"], ["width_1d"]),
        H("Concat", ["minus1", "width_1d"], ["shape2"], axis=0),
        H("Reshape", ["map0", "shape2"], ["flat"]),
        H("Shape", ["map0"], ["map_shape"]),
        H("Reshape", ["flat", "map_shape"], ["map1"]),
        # k == EMPTY: keep batch[:0]
        H("Equal", ["k", "empty"], ["is_e"]),
        H("Cast", ["is_e"], ["e"], to=TensorProto.INT64),
        H("Sub", ["one", "e"], ["keep"]),
        H("Reshape", ["keep", "one_shape"], ["end"]),
        H("Slice", ["map1", "zero_1d", "end", "zero_1d"], ["anomaly_map"]),
        H("Slice", ["s0", "zero_1d", "end", "zero_1d"], ["score"]),
    ]
    I64 = TensorProto.INT64
    inits = [
        helper.make_tensor("axes_m", I64, [2], [1, 4]),
        helper.make_tensor("axes_s", I64, [2], [1, 2]),
        helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("k997", TensorProto.FLOAT, [], [997.0]),
        helper.make_tensor("seven", I64, [], [7]),
        helper.make_tensor("raises", I64, [], [RAISES]),
        helper.make_tensor("empty", I64, [], [EMPTY]),
        helper.make_tensor("one", I64, [], [1]),
        helper.make_tensor("two", I64, [], [2]),
        helper.make_tensor("minus1", I64, [1], [-1]),
        helper.make_tensor("one_shape", I64, [1], [1]),
        helper.make_tensor("zero_1d", I64, [1], [0]),
    ]
    return _save(out, "faulty-brightness", nodes, inits, size, threshold)


def make_slow_warmup_bundle(
    out: Path, iterations: int, size: int = 64, threshold: float = 0.5
) -> Path:
    """The brightness function, plus a Loop of ``iterations`` empty steps that runs only on an
    all-black set (the engine's warm-up; about 1 s per million steps here): opening it takes
    seconds, judging a part does not."""
    from onnx import TensorProto, helper

    H = helper.make_node
    F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    body = helper.make_graph(
        [H("Identity", ["go_in"], ["go_out"]), H("Add", ["acc_in", "one_f"], ["acc_out"])],
        "step",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("go_in", B, []),
            helper.make_tensor_value_info("acc_in", F, []),
        ],
        [
            helper.make_tensor_value_info("go_out", B, []),
            helper.make_tensor_value_info("acc_out", F, []),
        ],
        [helper.make_tensor("one_f", F, [], [1.0])],
    )
    nodes = [
        H("Cast", ["images"], ["f"], to=F),
        H("ReduceMean", ["f", "axes_m"], ["m"], keepdims=0),
        H("Div", ["m", "k255"], ["anomaly_map"]),
        H("ReduceMax", ["anomaly_map", "axes_s"], ["s0"], keepdims=0),
        H("ReduceMax", ["s0"], ["smax"], keepdims=0),
        H("Equal", ["smax", "zero_f"], ["black"]),
        H("Cast", ["black"], ["black_i"], to=I64),
        H("Mul", ["black_i", "iters"], ["trips"]),
        H("Loop", ["trips", "true", "zero_f"], ["acc"], body=body),
        H("Mul", ["acc", "zero_f"], ["nothing"]),
        H("Add", ["s0", "nothing"], ["score"]),
    ]
    inits = [
        helper.make_tensor("axes_m", I64, [2], [1, 4]),
        helper.make_tensor("axes_s", I64, [2], [1, 2]),
        helper.make_tensor("k255", F, [], [255.0]),
        helper.make_tensor("zero_f", F, [], [0.0]),
        helper.make_tensor("iters", I64, [], [iterations]),
        helper.make_tensor("true", B, [], [True]),
    ]
    return _save(out, "slow-warmup-brightness", nodes, inits, size, threshold)


def _save(out: Path, name: str, nodes: list, inits: list, size: int, threshold: float) -> Path:
    """Graph (uint8 image sets in; map and score out) -> a verified bundle in ``out``."""
    import onnx
    from onnx import TensorProto, helper

    from afrd.runtime.bundle import create_bundle

    out.mkdir(parents=True, exist_ok=True)
    n = len(DEFAULT_LIGHTS)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", n, size, size, 3])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["b", size, size]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    b = create_bundle(
        out,
        lights=DEFAULT_LIGHTS,
        input_size=(size, size),
        model={"kind": f"test-{name}", "teacher_weights": "none"},
        name=f"test-{name}",
    )
    b.set_threshold(threshold, source="test")
    return out
