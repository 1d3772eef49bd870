"""Model kinds come from one registry (afrd.model.kinds): a kind defined in this file, and
registered here with no file of the package touched, trains through `afrd train --model`,
checkpoints like the real kinds, exports with `afrd-export onnx`, runs on ONNX Runtime and
passes `afrd config check`; checkpoints from before kinds were recorded load as their kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _model_helpers import make_set, make_sets
from torch import nn

from afrd.errors import ConfigError
from afrd.model import kinds
from afrd.model.checkpoint import inference_module, load_checkpoint, save_checkpoint
from afrd.model.sets import resize_set

SIZE = 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Brightness(nn.Module):
    """The toy kind's model: map = gain x |brightness - its mean over the normal parts| per
    pixel (brightness = the mean over lights and channels), score = the map's maximum."""

    kind = "toy"

    def __init__(self, n_lights: int, image_size: int, gain: float) -> None:
        super().__init__()
        self.n_lights, self.image_size, self.gain = n_lights, image_size, gain
        self.register_buffer("normal", torch.zeros(image_size, image_size))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.gain * (images.float().mean(dim=(1, 4)) / 255.0 - self.normal).abs()
        return amap, amap.flatten(1).amax(1)

    def config(self) -> dict:
        return {
            "model_kind": "toy",
            "teacher": "none",
            "teacher_weights_source": "none",
            "fusion": "mean",
            "image_size": self.image_size,
            "toy": {"gain": self.gain},
        }


class ToyKind:
    """What ``afrd/model/<kind>/__init__.py`` would hold (the interface of afrd.model.kinds)."""

    ABOUT = "brightness against the normal parts' mean (a test's kind)"
    TRAIN_OPTIONS = {"--toy-gain": {"type": float, "help": "map gain (default 1)"}}

    @staticmethod
    def build(config: dict) -> Brightness:
        return Brightness(len(config["lights"]), int(config["image_size"]), config["toy"]["gain"])

    @staticmethod
    def inference_module(model: nn.Module) -> nn.Module:
        return model

    @staticmethod
    def train(cfg, sets=None, norm_sets=None) -> Path:
        lights = tuple(cfg.lights or sets[0].lights)
        gain = (cfg.extra.get("toy") or {}).get("toy_gain", 1.0)
        model = Brightness(len(lights), cfg.image_size, gain)
        x = np.stack([resize_set(s, cfg.image_size, lights) for s in sets]).astype(np.float32)
        model.normal.copy_(torch.from_numpy(x.mean(axis=(0, 1, 4)) / 255.0))
        config = {"lights": list(lights), "loss": "none", "epochs": 0, "data": "test sets"}
        return save_checkpoint(Path(cfg.out) / "model.pt", model, config)

    @staticmethod
    def bundle_model(config: dict) -> dict:
        return {"toy": config["toy"]}


@pytest.fixture
def toy_kind():
    kinds.register("toy", ToyKind)
    yield
    kinds.KINDS.pop("toy")


def test_a_kind_registered_from_a_test_trains_exports_and_runs_on_onnx_runtime(toy_kind, tmp_path):
    from _daemon_helpers import write_config

    from afrd.cli import main as afrd_main
    from afrd.export.cli import main as export_main
    from afrd.model.train import build_parser, config_from_args, train
    from afrd.runtime.bundle import Bundle
    from afrd.runtime.engines import create_engine

    with pytest.raises(ConfigError, match="already registered"):
        kinds.register("toy", ToyKind)
    # `afrd train` knows the kind and its own flag, and refuses the flag for another kind
    args = ["--data", str(tmp_path), "--image-size", str(SIZE), "--out", str(tmp_path / "run")]
    assert "--model toy" in build_parser().format_help()
    with pytest.raises(ConfigError, match="--toy-gain applies to --model toy only"):
        config_from_args(build_parser().parse_args([*args, "--toy-gain", "3"]))
    cfg = config_from_args(build_parser().parse_args([*args, "--model", "toy", "--toy-gain", "3"]))
    assert cfg.model == "toy" and cfg.extra == {"toy": {"toy_gain": 3.0}}
    ckpt = train(cfg, sets=make_sets(6, SIZE))

    model, saved = load_checkpoint(ckpt)  # rebuilt by the kind from the checkpoint alone
    assert isinstance(model, Brightness) and saved["model_kind"] == "toy" and model.gain == 3.0
    assert float(model.normal.mean()) > 0.05  # the fitted state came back

    bundle = tmp_path / "bundle"
    assert export_main(["onnx", str(ckpt), "--out", str(bundle)]) == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"]["kind"] == "toy" and meta["model"]["toy"] == {"gain": 3.0}
    results = meta["onnx"]["parity"]["results"]
    assert results and all(r["map"]["max_abs"] <= r["map"]["limit_abs"] for r in results)

    good = [make_set(s, SIZE) for s in (700, 701)]
    bad = make_set(702, SIZE)
    bad.images[:, 8:16, 8:16] = 255  # a bright square under every light
    x = np.stack([s.images for s in [*good, bad]])
    maps, scores = create_engine("onnxruntime", Bundle.load(bundle), threads=1).infer(x)
    with torch.no_grad():
        ref_map, ref_score = inference_module(model)(torch.from_numpy(x))
    assert maps.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(maps, ref_map.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, ref_score.numpy(), rtol=1e-5, atol=1e-6)
    assert scores[2] > 2 * scores[:2].max(), scores  # the square is what the map shows

    cell = write_config(tmp_path, bundle, size=SIZE, threshold=1.0)
    assert afrd_main(["config", "check", str(cell)]) == 0


def _dcam_checkpoint(path: Path) -> Path:
    from afrd.model.dcam.network import DCAMStudent

    torch.manual_seed(0)
    model = DCAMStudent("efficientnet_lite0", "attention", 2, 64, "random")
    config = {"lights": ["a", "b"], "image_size": 64, "loss": "pixel", "categories": ["p", "q"]}
    return save_checkpoint(path, model, config)


def test_a_checkpoint_from_before_kinds_were_recorded_loads_as_its_kind(tmp_path):
    """DCAM checkpoints carried no ``model_kind``, only their ``dcam`` section: they still load
    as DCAM (the training-only blocks dropped); an unknown kind is refused by name."""
    from afrd.model.distill.network import AFRD
    from afrd.model.inference import InferenceModel

    path = _dcam_checkpoint(tmp_path / "dcam.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["model_kind"] == "dcam" and any(
        k.startswith("dcam.") for k in blob["model"]
    )
    del blob["config"]["model_kind"]  # as every DCAM checkpoint before the registry
    torch.save(blob, tmp_path / "old.pt")
    model, cfg = load_checkpoint(tmp_path / "old.pt")
    assert kinds.name_of(cfg) == "dcam" and type(model) is AFRD
    assert not any(k.startswith("dcam.") for k in model.state_dict())
    assert isinstance(inference_module(model), InferenceModel)
    blob["config"]["model_kind"] = "nope"
    torch.save(blob, tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match=r"nope.pt: model kind 'nope' is not registered \(known"):
        load_checkpoint(tmp_path / "nope.pt")


def test_the_registry_and_the_presets_name_kinds_without_importing_torch():
    from afrd.model.presets import PRESETS

    assert {p.model for p in PRESETS.values()} <= set(kinds.names())
    code = (
        "import sys; import afrd.model.kinds, afrd.model.presets; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('afrd.model.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['afrd.model.kinds', 'afrd.model.presets']", out.stdout
