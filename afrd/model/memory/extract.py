"""Teacher patch features for fitting a bank: the model's own ``patches`` at every scale, run
through ONNX Runtime.

Why: eager PyTorch runs EfficientNet-Lite0's depthwise convolutions slowly on a CPU (one
thread, six 256 px images: ~140 ms against ONNX Runtime's ~31 ms), and the teacher passes
over the training and held-out sets were a third of a build. The extractor is the same
function as the bank's graph up to the features (exported the way ``afrd-export onnx``
exports it); if the export or ONNX Runtime fails, the build says so and goes on in PyTorch.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("afrd.model.memory")

Features = Callable[[torch.Tensor], list[torch.Tensor]] | None


class _AllScales(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.patches(images, i) for i in range(len(self.model.heads)))


class _Eager:
    engine = "pytorch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.model.patches(images, i) for i in range(len(self.model.heads))]


class _Onnx:
    engine = "onnxruntime"

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        out = self.session.run(None, {"images": images.numpy()})
        return [torch.from_numpy(o) for o in out]


def eager_features(model: nn.Module) -> _Eager:
    """uint8 [B, N, H, W, 3] -> per scale [B, N, Q, dim], in PyTorch."""
    return _Eager(model)


def onnx_features(model: nn.Module) -> _Eager | _Onnx:
    """The same function on ONNX Runtime (threads: PyTorch's setting), or the eager one with a
    warning when it cannot be built."""
    try:
        import onnxruntime as ort

        n = len(model.heads)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "features.onnx"
            example = torch.zeros((1, model.n_lights, model.image_size, model.image_size, 3))
            torch.onnx.export(
                _AllScales(model).eval(),
                (example.to(torch.uint8),),
                str(path),
                dynamo=False,
                opset_version=18,
                input_names=["images"],
                output_names=[f"scale{i}" for i in range(n)],
                dynamic_axes={
                    "images": {0: "batch"},
                    **{f"scale{i}": {0: "batch"} for i in range(n)},
                },
            )
            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            so.inter_op_num_threads = 1
            so.log_severity_level = 4
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return _Onnx(session)
    except Exception as e:  # noqa: BLE001 - the eager path computes the same features
        log.warning("teacher features on ONNX Runtime unavailable (%s); using PyTorch", e)
        print(f"afrd train: teacher features in PyTorch (ONNX Runtime: {e})", flush=True)
        return _Eager(model)
