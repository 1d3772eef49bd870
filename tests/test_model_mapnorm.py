"""Per-pixel normal-map statistics: fitted on normal sets, carried by checkpoints, applied by
the InferenceModel (what ONNX exports), identity when not fitted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_helpers import make_sets

from afrd.errors import DataError
from afrd.model.checkpoint import load_checkpoint, save_checkpoint
from afrd.model.distill.network import AFRD
from afrd.model.inference import InferenceModel
from afrd.model.mapnorm import fit_map_stats, raw_maps

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model() -> AFRD:
    torch.manual_seed(0)
    return AFRD("efficientnet_lite0", "attention-pooled", 6, SIZE, "random").eval()


def _images(sets) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.images for s in sets]))


def test_unfitted_stats_are_identity_and_old_checkpoints_load(tmp_path) -> None:
    model = _model()
    sets = make_sets(3, SIZE)
    with torch.no_grad():
        amap, score = InferenceModel(model)(_images(sets))
    torch.testing.assert_close(amap, raw_maps(model, sets))
    torch.testing.assert_close(score, amap.flatten(1).amax(1))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("map_")}
    fresh = _model()
    fresh.load_state_dict(state)  # a checkpoint written before the statistics existed
    assert torch.all(fresh.map_mean == 0) and torch.all(fresh.map_std == 1)


def test_fitted_stats_flatten_the_normal_map_and_travel_in_the_checkpoint(tmp_path) -> None:
    model = _model()
    fit_sets, held = make_sets(12, SIZE), make_sets(4, SIZE, seed0=50)
    raw = raw_maps(model, held)
    info = fit_map_stats(model, fit_sets)
    assert info["sets"] == 12 and info["std_floor"] > 0
    assert float(model.map_std.min()) >= info["std_floor"] * (1 - 1e-6)
    with torch.no_grad():
        z, score = InferenceModel(model)(_images(held))
    # raw maps of normal parts carry a large position-dependent offset; z-maps are centred
    assert abs(float(raw.mean())) > 5 * abs(float(z.mean()))
    torch.testing.assert_close(z, (raw - model.map_mean) / model.map_std)
    torch.testing.assert_close(score, z.flatten(1).amax(1))
    path = save_checkpoint(tmp_path / "m.pt", model, {"lights": list("abcdef"), "loss": "pixel"})
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.map_mean, model.map_mean)
    torch.testing.assert_close(loaded.map_std, model.map_std)


def test_fit_refuses_defective_or_too_few_sets() -> None:
    model = _model()
    with pytest.raises(DataError, match="at least 4"):
        fit_map_stats(model, make_sets(2, SIZE))
    with pytest.raises(DataError, match="normal"):
        fit_map_stats(model, make_sets(4, SIZE) + make_sets(1, SIZE, defect=True))


def test_exported_onnx_graph_applies_the_fitted_stats(tmp_path) -> None:
    """The statistics live in the graph: ONNX Runtime on the exported bundle gives the z-map."""
    from afrd.export.onnx_export import export_onnx
    from afrd.model.mapnorm import fit_checkpoint
    from afrd.model.train import TrainConfig, train
    from afrd.runtime.engines import create_engine

    cfg = TrainConfig(
        out=str(tmp_path / "run"),
        teacher="efficientnet_lite0",
        teacher_weights="random",
        fusion="attention-pooled",
        epochs=1,
        image_size=SIZE,
        batch_size=4,
        progress=False,
    )
    ckpt = train(cfg, sets=make_sets(4, SIZE))
    info = fit_checkpoint(ckpt, make_sets(6, SIZE, seed0=20))
    model, config = load_checkpoint(ckpt)
    assert config["map_stats"] == info and float(model.map_std.max()) != 1.0
    held = make_sets(2, SIZE, seed0=60)
    with torch.no_grad():
        want_map, want = InferenceModel(model)(_images(held))
    bundle = export_onnx(ckpt, tmp_path / "bundle", echo=False)
    maps, scores = create_engine("onnxruntime", bundle).infer(_images(held).numpy())
    np.testing.assert_allclose(scores, want.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(maps, want_map.numpy(), rtol=1e-3, atol=1e-3)
    raw = raw_maps(model, held)
    assert not np.allclose(maps, raw.numpy(), atol=1e-2)  # not the un-normalised map


def test_train_fits_stats_on_the_val_split_and_says_when_there_is_none(tmp_path, capsys) -> None:
    """`afrd train` on a dataset: map statistics from its val split, or a warning without one."""
    from afrd.data.synth_cli import synth
    from afrd.model.train import main as train_main

    common = (
        "--category plate --teacher efficientnet_lite0 --teacher-weights random --fusion mean "
        "--epochs 1 --batch-size 4 --image-size 32 --no-progress"
    ).split()
    with_val = synth(tmp_path / "a", ["plate"], 4, 4, 0, 32, progress=False)
    assert train_main(["--data", str(with_val), "--out", str(tmp_path / "ra"), *common]) == 0
    model, config = load_checkpoint(tmp_path / "ra" / "model.pt")
    assert config["map_stats"]["source"] == f"split 'val' of {with_val}"
    assert config["map_stats"]["sets"] == 4
    assert float(model.map_std.min()) > 0 and float(model.map_mean.abs().max()) > 0

    no_val = synth(tmp_path / "b", ["plate"], 4, 0, 0, 32, progress=False)
    assert train_main(["--data", str(no_val), "--out", str(tmp_path / "rb"), *common]) == 0
    model, config = load_checkpoint(tmp_path / "rb" / "model.pt")
    assert config["map_stats"] is None and float(model.map_std.min()) == 1.0
    assert "0 held-out normal sets in split 'val'" in capsys.readouterr().out

    rc = train_main(
        ["--data", str(with_val), "--out", str(tmp_path / "rc"), "--norm-split", "none", *common]
    )
    assert rc == 0 and load_checkpoint(tmp_path / "rc" / "model.pt")[1]["map_stats"] is None
    assert "map statistics skipped (--norm-split none)" in capsys.readouterr().out
