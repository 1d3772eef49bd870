"""EfficientNet-Lite0: the teacher really carries the packaged ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from afrd.model.backbones import EfficientNetLite0Teacher, build_teacher, default_weights_path
from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_lite0_teacher_weights_equal_the_packaged_file() -> None:
    path = default_weights_path("efficientnet_lite0")
    assert path.is_file(), path
    state = torch.load(path, map_location="cpu", weights_only=True)
    teacher, source = build_teacher("efficientnet_lite0", None)
    assert source == "imagenet:efficientnet-lite0-57934424.pth"
    assert torch.equal(teacher.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(
        teacher.stage3[-1]._project_conv.weight, state["_blocks.10._project_conv.weight"]
    )
    random_teacher, src = build_teacher("efficientnet_lite0", "random")
    assert src == "random"
    assert not torch.equal(random_teacher.stem[0].weight, state["_conv_stem.weight"])


def test_lite0_weights_classify_a_cat() -> None:
    """The packaged file + architecture is a working ImageNet classifier (not random)."""
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(default_weights_path("efficientnet_lite0"), weights_only=True))
    net.eval()
    img = torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea())).permute(2, 0, 1)[None]
    x = F.interpolate(img.float() / 255, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        p = net(x).softmax(1)[0]
    assert int(p.argmax()) == 285  # ImageNet class 285: Egyptian cat
    assert float(p[285]) > 0.5


def test_lite0_feature_strides() -> None:
    t = EfficientNetLite0Teacher(None)
    feats = t(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 16), (40, 8, 8), (112, 4, 4)]
