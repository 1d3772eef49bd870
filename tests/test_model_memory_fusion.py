"""How the memory bank fuses: two input sizes meet in an elementwise maximum, and each light's
distances are divided by that light's own spread before the lights meet. Checked on a tiny
two-scale bank (random Lite0 teacher, 64 px, banks fitted on generated parts) in PyTorch and in
its exported ONNX graph under ONNX Runtime."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _model_helpers import LIGHTS, make_sets

from afrd.model.memory.bank import MemoryBank
from afrd.model.memory.fit import MemoryOptions, fit_bank, fit_normalisation, raw_maps

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bank(scales: tuple[int, ...], weights: str | None = "random") -> MemoryBank:
    """A bank on the Lite0 teacher (``weights`` None: its ImageNet weights, whose features
    give distances that vary across a part; "random" for a shell whose state is loaded)."""
    return MemoryBank(
        n_lights=len(LIGHTS), image_size=SIZE, scales=scales, teacher_weights=weights
    ).eval()


def _alone(model: MemoryBank, i: int) -> MemoryBank:
    """A one-scale bank holding exactly ``model``'s teacher and its scale ``i``."""
    one = _bank((model.scales[i],))
    prefix = f"heads.{i}."
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    for k, v in model.state_dict().items():
        if k.startswith(prefix):
            state["heads.0." + k[len(prefix) :]] = v
    one.load_state_dict(state)  # strict: every buffer of the one-scale bank is set
    return one


def _images(n: int, seed0: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.images for s in make_sets(n, SIZE, seed0=seed0)]))


@pytest.fixture(scope="module")
def two_scale() -> MemoryBank:
    """Banks fitted at both scales on 6 generated parts; normalisation left at mean 0, std 1,
    then the coarse scale shifted so that each scale's map is the larger on part of the image
    (bilinear upsampling and the reflect-padded blur carry a constant shift through unchanged)."""
    torch.manual_seed(0)
    model = _bank((1, 2), weights=None)
    fit_bank(model, [s.images for s in make_sets(6, SIZE)], MemoryOptions(scales=(1, 2)))
    x = _images(2, 900)
    with torch.no_grad():
        fine, _ = _alone(model, 0)(x)
        coarse, _ = _alone(model, 1)(x)
    shift = float((coarse - fine).median())
    model.heads[1].light_mean += shift * model.heads[1].light_std
    return model


def test_two_sizes_meet_in_an_elementwise_maximum(two_scale) -> None:
    x = _images(2, 900)
    with torch.no_grad():
        amap, score = two_scale(x)
        fine, _ = _alone(two_scale, 0)(x)
        coarse, _ = _alone(two_scale, 1)(x)
    # the test means something only where each scale is the larger somewhere, by far more
    # than rounding
    margin = 0.05 * float(fine.std())
    assert float((coarse - fine).max()) > margin and float((fine - coarse).max()) > margin
    torch.testing.assert_close(amap, torch.maximum(fine, coarse), rtol=1e-5, atol=1e-5)
    assert float((amap - fine).abs().max()) > margin  # not the fine size's map alone
    assert float((amap - coarse).abs().max()) > margin  # nor the coarse one's
    torch.testing.assert_close(score, amap.flatten(1).amax(1))


def _spread_bank(model: MemoryBank, x: torch.Tensor) -> MemoryBank:
    """``model`` with per-light offsets and spreads far apart: light 0 very noisy (spread 10x
    a typical peak), light 1 very steady (0.1x), the others 1x."""
    with torch.no_grad():
        raws = model.raw_maps(x)
    for head, raw in zip(model.heads, raws, strict=True):
        peak = raw.flatten(2).amax(2).mean(0)  # [N]: a typical peak of each light
        head.light_mean.copy_(0.2 * peak)
        std = torch.ones_like(peak)
        std[0], std[1] = 10.0, 0.1
        head.light_std.copy_(std * peak.mean())
    return model


def _expected(model: MemoryBank, x: torch.Tensor) -> torch.Tensor:
    """The map with each light divided by its own spread: per scale (raw - mean_l) / std_l,
    maximum over lights, upsampled and blurred at the scale's size, maximum over scales."""
    out = None
    with torch.no_grad():
        for head, raw in zip(model.heads, model.raw_maps(x), strict=True):
            z = (raw - head.light_mean[None, :, None, None]) / head.light_std[None, :, None, None]
            m = F.interpolate(z.amax(1)[:, None], size=(head.size, head.size), mode="bilinear")
            m = model.blur(m[:, 0])[:, None]
            if head.size != SIZE:
                m = F.interpolate(m, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            out = m[:, 0] if out is None else torch.maximum(out, m[:, 0])
    return out


def test_each_light_is_divided_by_its_own_spread(two_scale) -> None:
    x = _images(2, 900)
    model = _spread_bank(_alone(two_scale, 0), x)
    with torch.no_grad():
        amap, _ = model(x)
        raw = model.raw_maps(x)[0]
    head = model.heads[0]
    centred = raw - head.light_mean[None, :, None, None]
    z = centred / head.light_std[None, :, None, None]
    # the spreads decide which light speaks for a patch (undivided, or divided by one spread
    # for all, another light would for a fifth of them or more): the test tells the rules apart
    assert float((z.argmax(1) != centred.argmax(1)).float().mean()) > 0.2
    torch.testing.assert_close(amap, _expected(model, x), rtol=1e-5, atol=1e-5)
    assert float((z.argmax(1) == 1).float().mean()) > 0.5  # mostly the steady light


def test_the_fit_gives_each_light_its_own_spread(two_scale) -> None:
    """fit_normalisation: per light, the mean and std of that light's peak distance over the
    held-out sets; a light made noisy in those sets gets the larger spread."""
    model = _alone(two_scale, 0)
    sets = make_sets(8, SIZE, seed0=300)
    rng = np.random.default_rng(5)
    arrays = []
    for s in sets:
        images = s.images.copy()
        noise = rng.normal(0, rng.uniform(5, 60), images[2].shape)  # light 2: noisy, unevenly
        images[2] = np.clip(images[2] + noise, 0, 255).astype(np.uint8)
        arrays.append(images)
    fit_normalisation(model, arrays)
    peaks = raw_maps(model, arrays)[0].flatten(2).amax(2)  # [K, N]
    head = model.heads[0]
    torch.testing.assert_close(head.light_mean, peaks.mean(0))
    floor = max(float(peaks.std(0).median()) * 0.1, 1e-6)
    torch.testing.assert_close(head.light_std, peaks.std(0).clamp_min(floor))
    others = torch.cat([head.light_std[:2], head.light_std[3:]])
    assert float(head.light_std[2]) > 3 * float(others.max())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_exported_graph_fuses_as_pytorch(two_scale, tmp_path) -> None:
    """The ONNX graph `afrd-export onnx` writes computes both rules: its map is the maximum of
    the one-scale banks' maps, each light divided by its own spread."""
    from afrd.export.cli import main as export_main
    from afrd.model.checkpoint import save_checkpoint
    from afrd.runtime.engines import create_engine

    x = _images(2, 900)
    model = _spread_bank(copy.deepcopy(two_scale), x)
    config = {"lights": list(LIGHTS), "image_size": SIZE, "loss": "none"}
    ckpt = save_checkpoint(tmp_path / "model.pt", model, config)
    out = tmp_path / "bundle"
    argv = ["onnx", str(ckpt), "--out", str(out), "--exporter", "torchscript"]
    assert export_main(argv) == 0
    with create_engine("onnxruntime", out, threads=1) as eng:
        maps, scores = eng.infer(x.numpy())
    with torch.no_grad():
        fine, _ = _alone(model, 0)(x)
        coarse, _ = _alone(model, 1)(x)
    np.testing.assert_allclose(maps, torch.maximum(fine, coarse).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps, _expected(model, x).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, maps.reshape(2, -1).max(1), rtol=1e-6)
