"""DCAM (afrd.model.dcam): attention blocks, the two losses, multi-class training, export."""

from __future__ import annotations

import math

import pytest
import torch

from afrd.model.dcam import ConvAttention, DCAMStudent, dcam_loss, spatial_kl
from afrd.model.scoring import loss_pixel


@pytest.mark.parametrize("mode", ["channel", "cbam"])
def test_attention_block_keeps_shape_and_every_weight_learns(mode):
    torch.manual_seed(0)
    block = ConvAttention(24, mode)
    x = torch.randn(2, 24, 8, 8, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    (y - torch.randn_like(y)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # attention re-weights: every output is the input times a factor in (0, 1)
    ratio = (y / x).detach()
    assert float(ratio.min()) > 0 and float(ratio.max()) < 1


def test_spatial_kl_on_a_hand_computed_pair():
    # one channel over two positions: teacher logits (0, 0) -> (1/2, 1/2); student (ln 3, 0)
    # -> (3/4, 1/4); KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    t = torch.zeros(1, 1, 1, 2)
    s = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(spatial_kl(t, s), torch.tensor(0.5 * math.log(4 / 3)))
    assert float(spatial_kl(s, s)) == pytest.approx(0.0, abs=1e-7)
    # multi-scale matching: the channel cosine distance plus the KL at every scale
    t2, s2 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    want = loss_pixel([t, t2], [s, s2]) + 0.5 * (spatial_kl(t, s) + spatial_kl(t2, s2))
    torch.testing.assert_close(dcam_loss([t, t2], [s, s2], kl_weight=0.5), want)


def test_dcam_student_trains_its_blocks_and_the_student():
    torch.manual_seed(0)
    model = DCAMStudent("efficientnet_lite0", "attention", 3, 64, "random")
    x = torch.randn(2, 3, 3, 64, 64)
    loss = model.loss(model.teacher_features(x))
    loss.backward()
    assert all(b.mlp[0].weight.grad.abs().sum() > 0 for b in model.dcam)
    assert model.decoder.stages[0][0].body[0][0].weight.grad.abs().sum() > 0
    assert model.config()["dcam"]["mode"] == "channel"
