"""AFRD network: shapes for every teacher x fusion, fusion weights, frozen teacher, errors."""

from __future__ import annotations

import pytest
import torch

from afrd.errors import ConfigError
from afrd.model.backbones import WRN50_FILE, build_teacher
from afrd.model.distill.network import AFRD
from afrd.model.inference import InferenceModel, normalize
from afrd.model.scoring import GaussianBlur, loss_flat, loss_pixel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FUSIONS = ("attention", "attention-pooled", "mean", "single:1", "restore-max")
CHANNELS = {"wide_resnet50_2": (256, 512, 1024), "efficientnet_lite0": (24, 40, 112)}


@pytest.fixture(scope="module", params=["efficientnet_lite0", "wide_resnet50_2"])
def teacher(request):
    return request.param


@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes_and_fusion_weights(teacher: str, fusion: str) -> None:
    torch.manual_seed(0)
    n, size, b = 3, 32, 2
    model = AFRD(teacher, fusion, n_lights=n, image_size=size, teacher_weights="random")
    x = torch.randint(0, 256, (b, n, size, size, 3), dtype=torch.uint8)
    infer = InferenceModel(model)
    with torch.no_grad():
        t, s = model(normalize(x))
        amap, score = infer.scorer(t, s)
    views = n if fusion == "restore-max" else 1
    assert model.views == views
    for i, (ft, fs) in enumerate(zip(t, s, strict=True)):
        stride = (4, 8, 16)[i]
        assert ft.shape == (b * views, CHANNELS[teacher][i], size // stride, size // stride)
        assert fs.shape == ft.shape
    for w in model.last_fusion_weights:
        assert w.shape == (b, n)
        assert torch.all(w >= 0)
        torch.testing.assert_close(w.sum(1), torch.ones(b))
    if fusion == "single:1":
        assert torch.equal(model.last_fusion_weights[0], torch.tensor([[0.0, 1, 0]] * b))
    if fusion == "mean":
        torch.testing.assert_close(model.last_fusion_weights[0], torch.full((b, n), 1 / n))
    assert amap.shape == (b, size, size) and amap.dtype == torch.float32
    assert score.shape == (b,)
    torch.testing.assert_close(score, amap.flatten(1).amax(1))


def test_attention_weights_depend_on_input() -> None:
    torch.manual_seed(0)
    model = AFRD("efficientnet_lite0", "attention", 4, 32, "random")
    model(torch.randn(2, 4, 3, 32, 32) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1))
    w = model.last_fusion_weights[0]
    assert not torch.allclose(w[0], w[1])


def test_paper_attention_fc_size_at_256() -> None:
    """The paper's FC over the flattened maps: ~66M parameters for 6 lights at 256x256."""
    from afrd.model.distill.fusion import Fusion

    f = Fusion("attention", 6, (256, 512, 1024), ((64, 64), (32, 32), (16, 16)))
    n = sum(p.numel() for p in f.parameters())
    assert 66_000_000 < n < 66_200_000


def test_teacher_frozen_after_training_step() -> None:
    torch.manual_seed(0)
    model = AFRD("efficientnet_lite0", "attention-pooled", 2, 32, "random")
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = model.decoder.stages[0][0].body[0][0].weight.clone()
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    t, s = model(torch.randn(4, 2, 3, 32, 32))
    loss_pixel(t, s).backward()
    opt.step()
    after = model.teacher.state_dict()
    for k, v in before.items():  # weights and BN running statistics unchanged
        assert torch.equal(v, after[k]), k
    assert not torch.equal(student_before, model.decoder.stages[0][0].body[0][0].weight)


def test_losses_zero_when_equal_and_differ() -> None:
    a = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    assert float(loss_pixel(a, a)) == pytest.approx(0, abs=1e-6)
    assert float(loss_flat(a, a)) == pytest.approx(0, abs=1e-6)
    b = [x.clone() for x in a]
    b[0][:, :, 0, 0] *= 100  # same direction per pixel: only the flattened cosine changes
    assert float(loss_pixel(a, b)) == pytest.approx(0, abs=1e-6)
    assert float(loss_flat(a, b)) > 0.05
    b[0][:, :, 0, 0] *= -1  # one opposite pixel of 16 in one scale: 1 - cos = 2 there
    assert float(loss_pixel(a, b)) == pytest.approx(2 / 16, abs=1e-5)


def test_gaussian_blur_is_normalized_and_smooths() -> None:
    blur = GaussianBlur(4.0)
    m = torch.zeros(1, 64, 64)
    m[0, 32, 32] = 1.0
    out = blur(m)
    assert float(out.sum()) == pytest.approx(1.0, rel=1e-4)
    assert float(out.max()) < 0.02 and int(out.argmax()) == 32 * 64 + 32
    torch.testing.assert_close(blur(torch.ones(2, 40, 40)), torch.ones(2, 40, 40))


def test_missing_wrn_weights_error_names_the_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ConfigError) as e:
        AFRD("wide_resnet50_2", "mean", 2, 32)
    expected = tmp_path / "th" / "hub" / "checkpoints" / WRN50_FILE
    assert str(expected) in str(e.value)
    assert "download.pytorch.org" in str(e.value)
    with pytest.raises(ConfigError, match=str(tmp_path / "nope.pth")):
        AFRD("wide_resnet50_2", "mean", 2, 32, teacher_weights=tmp_path / "nope.pth")


def test_wrn_weights_load_from_torch_cache(tmp_path, monkeypatch) -> None:
    """A state dict placed at torchvision's cache path is what the teacher computes with."""
    from torchvision.models import wide_resnet50_2

    torch.manual_seed(1)
    net = wide_resnet50_2(weights=None)
    keep = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    state = {k: v for k, v in net.state_dict().items() if k.startswith(keep)}
    path = tmp_path / "hub" / "checkpoints" / WRN50_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    teacher, source = build_teacher("wide_resnet50_2", None)
    assert source == f"imagenet:{WRN50_FILE}"
    assert torch.equal(teacher.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not a wide_resnet50_2"):
        build_teacher("wide_resnet50_2", tmp_path / "bad.pth")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fusion": "single:7"}, "single:K"),
        ({"fusion": "max"}, "fusion must be one of"),
        ({"image_size": 48}, "multiple of 32"),
        ({"teacher": "resnet18"}, "teacher must be one of"),
    ],
)
def test_bad_config_errors(kwargs: dict, match: str) -> None:
    args = {
        "teacher": "efficientnet_lite0",
        "fusion": "mean",
        "n_lights": 6,
        "image_size": 32,
        "teacher_weights": "random",
        **kwargs,
    }
    with pytest.raises(ConfigError, match=match):
        AFRD(**args)
