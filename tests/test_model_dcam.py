"""DCAM (afrd.model.dcam): attention blocks, the two losses, multi-class training, export."""

from __future__ import annotations

import math

import pytest
import torch

from afrd.model.dcam.network import ConvAttention, DCAMStudent, dcam_loss, spatial_kl
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


def test_attention_block_has_the_authors_layout_and_cbam_formula():
    """The authors' released module: one shared bias-free MLP C -> C/8 -> C on the average- and
    max-pooled vectors, a bias-free 7x7 spatial convolution; channel then spatial attention."""
    torch.manual_seed(0)
    block = ConvAttention(64, "cbam")
    assert block.mlp[0].weight.shape == (8, 64, 1, 1) and block.mlp[2].weight.shape == (64, 8, 1, 1)
    assert all(m.bias is None for m in (block.mlp[0], block.mlp[2], block.spatial))
    assert sum(p.numel() for p in block.parameters()) == 2 * 64 * 8 + 2 * 7 * 7
    x = torch.randn(2, 64, 5, 6)
    w1, w2 = block.mlp[0].weight[:, :, 0, 0], block.mlp[2].weight[:, :, 0, 0]

    def mlp(v):  # [B, C] -> [B, C]
        return torch.relu(v @ w1.T) @ w2.T

    ca = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    y = x * ca
    pooled = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
    want = y * torch.sigmoid(torch.nn.functional.conv2d(pooled, block.spatial.weight, padding=3))
    with torch.no_grad():
        torch.testing.assert_close(block(x), want)
    assert ConvAttention(4).mlp[0].weight.shape[0] == 1  # fewer than 8 channels: one hidden unit


def test_spatial_kl_on_a_hand_computed_pair():
    # one channel over two positions: teacher logits (0, 0) -> (1/2, 1/2); student (ln 3, 0)
    # -> (3/4, 1/4); KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    t = torch.zeros(1, 1, 1, 2)
    s = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(spatial_kl(t, s), torch.tensor(0.5 * math.log(4 / 3)))
    assert float(spatial_kl(s, s)) == pytest.approx(0.0, abs=1e-7)
    # the authors' normalisation: summed over channels, averaged over the batch, no tau^2
    t3, s3 = torch.cat([t, t, t], 1), torch.cat([s, t, s], 1)
    torch.testing.assert_close(spatial_kl(t3, s3), 2 * spatial_kl(t, s))
    torch.testing.assert_close(
        spatial_kl(torch.cat([t3, t3]), torch.cat([s3, t3])), spatial_kl(t, s)
    )
    assert float(spatial_kl(t, s, tau=2.0)) < float(spatial_kl(t, s))  # softer, no tau^2 back
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


def test_multi_class_bundle_scores_two_products_with_their_own_thresholds_in_the_daemon(
    tmp_path,
):
    """A bundle listing products a and b, each with its own threshold; the cell's recipes name
    the products and set no threshold: the running daemon judges each by its own."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _daemon_helpers import (
        Daemon,
        collect,
        make_brightness_bundle,
        wait_subscribed,
        write_config,
    )

    from afrd.errors import BundleError
    from afrd.runtime.bundle import Bundle
    from afrd.runtime.bundle_products import new_products, threshold_for

    make_brightness_bundle(tmp_path / "multi", 32, threshold=0.5)
    bundle = Bundle.load(tmp_path / "multi")
    bundle.meta["products"] = new_products(["a", "b"])
    bundle.save()
    bundle.set_threshold(0.2, source="test", product="a")
    bundle.set_threshold(0.8, source="test", product="b")
    with pytest.raises(BundleError, match="no product 'c'"):
        bundle.set_threshold(0.1, product="c")
    again = Bundle.load(tmp_path / "multi")
    assert [threshold_for(again, p) for p in ("a", "b", "z", None)] == [0.2, 0.8, 0.5, 0.5]

    cfg = write_config(tmp_path, tmp_path / "multi", size=32, heatmaps=False)
    cfg.write_text(cfg.read_text() + '\n[[product]]\nname = "a"\n[[product]]\nname = "b"\n')
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber([b"result.", b"status."])
        wait_subscribed(sub)
        for i, product in enumerate("abab"):
            assert dm.ctl({"cmd": "trigger", "part_id": f"p{i}", "product": product})["ok"]
        results = [json.loads(f[1]) for f in collect(sub, 4) if f[0][:7] == b"result."]
        sub.close()
    finally:
        assert dm.stop() == 0
    got = {(r["product"], r["threshold"]) for r in results}
    assert got == {("a", 0.2), ("b", 0.8)}, results
    assert all(r["verdict"] in ("pass", "fail") for r in results)


@pytest.mark.slow
def test_dcam_blocks_are_gone_from_the_exported_multi_class_graph(tmp_path):
    """Naive and DCAM multi-class models export to graphs of the same nodes; both bundles list
    their products (a threshold each, to calibrate)."""
    import onnx

    from afrd.export.onnx_export import export_onnx
    from afrd.model.checkpoint import read_checkpoint
    from afrd.model.train import TrainConfig, train
    from tests._model_helpers import make_sets

    nodes, products = {}, {}
    for dcam in (False, True):
        cfg = TrainConfig(
            out=str(tmp_path / f"run{dcam}"),
            teacher="efficientnet_lite0",
            teacher_weights="random",
            image_size=64,
            steps=2,
            batch_size=4,
            categories=("a", "b"),
            dcam=dcam,
            progress=False,
        )
        ckpt = train(cfg, sets=make_sets(8, 64), norm_sets=make_sets(4, 64, seed0=50))
        state = read_checkpoint(ckpt)["model"]
        assert any(k.startswith("dcam.") for k in state) == dcam  # kept for --resume
        bundle = export_onnx(ckpt, tmp_path / f"bundle{dcam}", seed=0, echo=False)
        nodes[dcam] = len(onnx.load(str(bundle.onnx_path)).graph.node)
        products[dcam] = list(bundle.meta["products"])
    assert nodes[True] == nodes[False] and products[True] == products[False] == ["a", "b"]
