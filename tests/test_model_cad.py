"""CAD (afrd.model.cad): GCCB, the contextual affinity loss, the local+global student, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afrd.model.cad.inference import CADInference
from afrd.model.cad.network import (
    CAD,
    GCCB,
    GlobalStudent,
    affinity,
    affinity_loss,
    affinity_map,
)
from afrd.model.checkpoint import inference_module, load_checkpoint
from afrd.model.train import TrainConfig, train
from tests._model_helpers import make_set, make_sets

SIZE = 64


def test_gccb_condenses_channels_reaches_far_positions_and_every_weight_learns():
    torch.manual_seed(0)
    block = GCCB(112).train()  # Lite0's stride-16 width: condensed to 112 // 4 = 28
    x = torch.randn(2, 112, 5, 7, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 28, 5, 7) and block.width == 28
    assert GCCB(32).width == 16  # never under 16 channels
    y.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    # long range: changing one corner changes the opposite corner (a 3x3 conv could not)
    block.eval()
    with torch.no_grad():
        x2 = x.detach().clone()
        x2[:, :, 0, 0] += 3.0
        far = (block(x2) - block(x.detach()))[:, :, 4, 6].abs().max()
    assert far > 1e-4


def test_global_student_restores_the_teachers_three_scales_from_the_high_level_map_alone():
    channels = (24, 40, 112)  # EfficientNet-Lite0's
    student = GlobalStudent("efficientnet_lite0", channels)
    feats = [
        torch.randn(2, c, SIZE // s, SIZE // s) for c, s in zip(channels, (4, 8, 16), strict=True)
    ]
    out = student(feats)
    assert [tuple(o.shape) for o in out] == [tuple(f.shape) for f in feats]
    sum(o.mean() for o in out).backward()
    assert student.gccb.query.weight.grad.abs().sum() > 0
    # the low-level maps are not read: changing them changes nothing
    with torch.no_grad():
        student.eval()
        other = [torch.randn_like(feats[0]), torch.randn_like(feats[1]), feats[2]]
        torch.testing.assert_close(student(other)[0], student(feats)[0])


def test_affinity_loss_on_a_hand_computed_pair():
    # teacher: two positions with orthogonal features -> affinity I; student: both the same
    # feature -> affinity all ones; |difference| is 1 off the diagonal: 0.5 per position
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    s = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    torch.testing.assert_close(affinity(t)[0], torch.eye(2))
    torch.testing.assert_close(affinity(s)[0], torch.ones(2, 2))
    torch.testing.assert_close(affinity_map(t, s), torch.full((1, 1, 2), 0.5))
    torch.testing.assert_close(affinity_loss([t], [s], scales=(0,)), torch.tensor(0.5))
    # cosine affinity: a positive rescaling per position changes nothing, a perfect copy is 0
    assert float(affinity_loss([t], [t * torch.tensor([2.0, 5.0]).view(1, 1, 1, 2)], (0,))) < 1e-6
    # 60 degrees apart instead of 90: the off-diagonal affinity is 0.5, so 0.25 per position
    s60 = torch.tensor([[1.0, 0.5], [0.0, 3**0.5 / 2]]).view(1, 2, 1, 2)
    torch.testing.assert_close(affinity_map(t, s60), torch.full((1, 1, 2), 0.25))


def _cfg(tmp_path, student: str, steps: int = 3) -> TrainConfig:
    return TrainConfig(
        out=str(tmp_path / student),
        teacher="efficientnet_lite0",
        teacher_weights="random",
        student=student,
        image_size=SIZE,
        steps=steps,
        batch_size=4,
        lr=2e-3,
        progress=False,
        feature_cache="ram",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cad")
    sets, norm = make_sets(8, SIZE), make_sets(4, SIZE, seed0=100)
    cad = train(_cfg(tmp, "local+global"), sets=sets, norm_sets=norm)
    local = train(_cfg(tmp, "local"), sets=sets, norm_sets=norm)
    return cad, local


def test_local_student_trains_exactly_as_afrd_and_the_checkpoint_rebuilds_cad(trained):
    cad_path, local_path = trained
    cad, cfg = load_checkpoint(cad_path)
    local, _ = load_checkpoint(local_path)
    assert isinstance(cad, CAD) and cfg["model_kind"] == "cad" and cfg["student"] == "local+global"
    assert cfg["map_stats"]["sets"] == 4 and float(cad.global_std.min()) > 0
    ref = local.state_dict()
    for key, value in cad.state_dict().items():
        if key in ref:  # every local-student weight and map statistic, bit for bit
            torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
    assert any(k.startswith("global_student.") for k in cad.state_dict())


def test_a_checkpoint_of_the_earlier_global_student_layout_is_refused_by_name(trained):
    from afrd.errors import ConfigError

    _, cfg = load_checkpoint(trained[0])
    assert cfg["cad"]["layout"] == "gccb-on-teacher-high-level"
    old = {**cfg, "cad": {k: v for k, v in cfg["cad"].items() if k != "layout"}}
    with pytest.raises(ConfigError, match="'gccb-per-stage'.*retrain"):
        CAD.from_config(old)


def test_combined_map_is_both_students_z_maps(trained):
    cad, _ = load_checkpoint(trained[0])
    x = torch.from_numpy(np.stack([make_set(300, SIZE, defect=True).images] * 2))
    infer = inference_module(cad)
    assert isinstance(infer, CADInference)
    with torch.no_grad():
        both, score = infer(x)
        zl, _ = CADInference(cad, part="local")(x)
        zg, _ = CADInference(cad, part="global")(x)
        mx, _ = CADInference(cad, combine="max")(x)
    assert both.shape == (2, SIZE, SIZE) and score.shape == (2,)
    torch.testing.assert_close(both, zl + zg)
    torch.testing.assert_close(mx, torch.maximum(zl, zg))
    torch.testing.assert_close(score, both.flatten(1).amax(1))
    assert (zg - zl).abs().max() > 1e-3  # the global map is not the local one


@pytest.mark.slow
def test_export_keeps_the_global_student_in_the_graph_with_parity(trained, tmp_path):
    from afrd.export.onnx_export import export_onnx
    from afrd.runtime.engines.onnxruntime import open_session

    bundle = export_onnx(trained[0], tmp_path / "bundle", seed=0, echo=False)
    assert bundle.meta["model"]["kind"] == "cad"
    assert all(
        r["map"]["max_abs"] <= r["map"]["limit_abs"]
        for r in bundle.meta["onnx"]["parity"]["results"]
    )
    cad, _ = load_checkpoint(trained[0])
    x = np.stack([make_set(301, SIZE, defect=True).images])
    sess, _ = open_session(bundle.onnx_path, "cpu", 1)
    got_map, got_score = sess.run(["anomaly_map", "score"], {"images": x})
    with torch.no_grad():
        ref_map, ref_score = CADInference(cad)(torch.from_numpy(x))
        local_map, _ = CADInference(cad, part="local")(torch.from_numpy(x))
    np.testing.assert_allclose(got_map, ref_map.numpy(), atol=1e-3)
    np.testing.assert_allclose(got_score, ref_score.numpy(), atol=1e-3)
    assert np.abs(got_map - local_map.numpy()).max() > 1e-2  # combined, not local alone
