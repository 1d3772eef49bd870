"""The multi-light memory bank: coreset, separation of planted defects (also one-light ones),
checkpoint round trip, and the real CLI path train -> eval -> afrd-export onnx (parity) ->
calibrate threshold -> ONNX Runtime engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _model_helpers import make_sets

from afrd.data.imageset import ImageSet
from afrd.errors import ConfigError, DataError
from afrd.model.checkpoint import inference_module, load_checkpoint
from afrd.model.memory.bank import MemoryBank
from afrd.model.memory.coreset import coverage_radius, greedy_coreset
from afrd.model.memory.fit import MemoryOptions, train_memory
from afrd.model.metrics import auroc
from afrd.model.train import TrainConfig

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scores(model: torch.nn.Module, sets) -> np.ndarray:
    x = torch.from_numpy(np.stack([s.images for s in sets]))
    with torch.no_grad():
        return inference_module(model)(x)[1].numpy()


def _one_light_defect(s: ImageSet, light: int, seed: int) -> ImageSet:
    """A dark stain visible under ``light`` only (e.g. a gloss change one ring light shows)."""
    rng = np.random.default_rng(seed)
    images = s.images.copy()
    cy, cx = rng.integers(SIZE // 4, 3 * SIZE // 4, 2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    spot = (yy - cy) ** 2 + (xx - cx) ** 2 < (SIZE // 12) ** 2
    images[light][spot] = (images[light][spot] * 0.4).astype(np.uint8)
    return ImageSet(images, s.lights, f"{s.part_id}-stain", s.product, 1, spot.astype(np.uint8))


def test_coreset_picks_k_distinct_points_that_cover_better_than_random() -> None:
    gen = torch.Generator().manual_seed(0)
    # a few big clusters and many small ones: random sampling misses the small ones
    centres = torch.randn(40, 16, generator=gen) * 10
    sizes = [400] * 4 + [10] * 36
    points = torch.cat(
        [c + torch.randn(n, 16, generator=gen) for c, n in zip(centres, sizes, strict=True)]
    )
    k = 60
    idx = greedy_coreset(points, k, seed=0, projection=8)
    assert idx.shape == (k,) and len(set(idx.tolist())) == k
    greedy = coverage_radius(points, points[idx])
    rand = coverage_radius(points, points[torch.randperm(len(points), generator=gen)[:k]])
    assert greedy < 0.5 * rand, (greedy, rand)
    assert greedy_coreset(points[:5], 10).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="k must be >= 1"):
        greedy_coreset(points, 0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("memory")
    cfg = TrainConfig(out=str(out), teacher="efficientnet_lite0", image_size=SIZE, seed=0)
    opts = MemoryOptions(scales=(1, 2))  # two scales, as the cpu preset
    path = train_memory(cfg, make_sets(16, SIZE), make_sets(8, SIZE, seed0=500), opts)
    return path, load_checkpoint(path)


def test_memory_bank_separates_planted_defects(fitted) -> None:
    _, (model, cfg) = fitted
    assert isinstance(model, MemoryBank) and cfg["model_kind"] == "memory"
    fit = cfg["memory_fit"]["scales"]
    assert [f["scale"] for f in fit] == [1, 2] == [h.factor for h in model.heads]
    for f, head in zip(fit, model.heads, strict=True):
        assert f["bank_per_light"] == head.bank_size < 16 * (head.size // 8) ** 2
    good = make_sets(10, SIZE, seed0=1000)
    pits = make_sets(10, SIZE, defect=True, seed0=2000)
    labels = np.r_[np.zeros(10), np.ones(10)]
    assert auroc(labels, np.r_[_scores(model, good), _scores(model, pits)]) >= 0.9
    # a defect under ONE of six lights must not be diluted by the other five
    stains = [_one_light_defect(s, 4, i) for i, s in enumerate(make_sets(10, SIZE, seed0=3000))]
    assert auroc(labels, np.r_[_scores(model, good), _scores(model, stains)]) >= 0.9
    x = torch.from_numpy(np.stack([s.images for s in stains]))
    with torch.no_grad():
        amap, score = model(x)
    masks = torch.from_numpy(np.stack([s.mask for s in stains])).bool()
    assert float(amap[masks].mean()) > float(amap[~masks].mean()) + 1.0
    torch.testing.assert_close(score, amap.flatten(1).amax(1))


def test_checkpoint_round_trip_and_bad_input(fitted, tmp_path) -> None:
    path, (model, cfg) = fitted
    again, _ = load_checkpoint(path)
    x = torch.from_numpy(np.stack([s.images for s in make_sets(2, SIZE, seed0=9)]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))
    assert cfg["light_norm"]["sets"] == 8
    assert [len(n["std"]) for n in cfg["light_norm"]["scales"]] == [6, 6]
    with pytest.raises(ConfigError, match="topk:K"):
        MemoryBank(n_lights=6, image_size=SIZE, score="top", teacher_weights="random")
    with pytest.raises(ConfigError, match="layers must be distinct"):
        MemoryBank(n_lights=6, image_size=SIZE, layers=(1, 1), teacher_weights="random")
    with pytest.raises(ConfigError, match="multiple of 32"):
        MemoryBank(n_lights=6, image_size=SIZE, scales=(1, 4), teacher_weights="random")
    cfg2 = TrainConfig(out=str(tmp_path), teacher="efficientnet_lite0", image_size=SIZE)
    with pytest.raises(DataError, match="held-out normal sets"):
        train_memory(cfg2, make_sets(3, SIZE), [])


def test_topk_score_is_the_mean_of_the_largest_pixels(fitted) -> None:
    _, (model, cfg) = fitted
    top = MemoryBank.from_config(
        {**cfg, "memory": {**cfg["memory"], "score": "topk:10"}}, teacher_weights="random"
    )
    top.load_state_dict(model.state_dict())
    x = torch.from_numpy(np.stack([s.images for s in make_sets(2, SIZE, seed0=7)]))
    with torch.no_grad():
        amap, score = top.eval()(x)
    torch.testing.assert_close(score, amap.flatten(1).topk(10, dim=1).values.mean(1))


@pytest.mark.slow
def test_cli_train_eval_export_calibrate_run(tmp_path) -> None:
    """The commands a user runs, unchanged for the memory kind: the bundle passes parity and
    ONNX Runtime computes what PyTorch does on real image sets."""
    from afrd.cli import main as afrd_main
    from afrd.export.cli import main as export_main
    from afrd.runtime.bundle import Bundle
    from afrd.runtime.engines import create_engine
    from afrd.runtime.engines.base import resize_sets

    data, run, bundle = tmp_path / "data", tmp_path / "run", tmp_path / "bundle"
    synth = ["synth", "--out", str(data), "--categories", "button", "--train", "12"]
    synth += ["--val", "6", "--test", "8", "--size", str(SIZE), "--no-progress"]
    assert afrd_main(synth) == 0
    common = ["--data", str(data), "--category", "button"]
    train = ["train", "--model", "memory", *common, "--image-size", str(SIZE)]
    train += ["--memory-scales", "1,2"]
    assert afrd_main([*train, "--out", str(run), "--threads", "1"]) == 0
    ckpt = run / "model.pt"
    assert afrd_main(["eval", str(ckpt), *common, "--out", str(run / "eval")]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["model"]["teacher"] == "efficientnet_lite0"
    assert metrics["mean"]["i_auroc"] is not None
    assert export_main(["onnx", str(ckpt), "--out", str(bundle), *common]) == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"]["kind"] == "memory"
    assert all(
        r["map"]["max_abs"] <= r["map"]["limit_abs"] for r in meta["onnx"]["parity"]["results"]
    )
    assert afrd_main(["calibrate", "threshold", str(bundle), *common]) == 0
    b = Bundle.load(bundle)
    assert b.meta["threshold"]["value"] is not None
    from afrd.model.sets import open_sets, resize_set

    sets = open_sets(data, "test_public", "button", None, SIZE)
    x = np.stack([resize_set(sets[i], SIZE) for i in range(4)])
    x = x if x.shape[2] == SIZE else resize_sets(x, (SIZE, SIZE))
    maps, scores = create_engine("onnxruntime", b).infer(x)
    model, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        ref_map, ref_score = model(torch.from_numpy(x))
    np.testing.assert_allclose(scores, ref_score.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(maps, ref_map.numpy(), rtol=1e-3, atol=1e-3)


def test_pytorch_engine_runs_the_memory_bank(fitted, tmp_path) -> None:
    """The PyTorch engine takes a memory bank as it is (no AFRD wrapper around it)."""
    from _export_helpers import make_toy_bundle

    from afrd.runtime.engines import create_engine

    _, (model, _) = fitted
    engine = create_engine("pytorch", make_toy_bundle(tmp_path / "b", size=SIZE), model=model)
    x = np.stack([s.images for s in make_sets(2, SIZE, seed0=11)])
    maps, scores = engine.infer(x)
    np.testing.assert_allclose(scores, _scores(model, make_sets(2, SIZE, seed0=11)), rtol=1e-5)
    assert maps.shape == (2, SIZE, SIZE)


def test_a_patch_in_the_bank_reads_the_precision_floor_not_rounding_noise() -> None:
    """A query equal to a bank patch: the expanded |q|^2 - 2 q.b + |b|^2 leaves rounding noise
    that a square root blows up (engines disagreed on it); the distance is the floor instead."""
    from afrd.model.memory.bank import PRECISION_FLOOR, ScaleBank

    gen = torch.Generator().manual_seed(0)
    head = ScaleBank(1, 32, 8, n_lights=2, dim=64)
    bank = torch.rand(2, 300, 64, generator=gen) * 8 + 4  # large |b|^2, as teacher features
    head.set_bank(bank)
    q = bank[:, :16][None]  # [1, 2, 16 = grid^2, 64]: every query is a bank patch
    floor = (bank**2).sum(-1).mean(1) * PRECISION_FLOOR
    got = head.distances(q).flatten(2)[0]
    torch.testing.assert_close(got, floor.sqrt()[:, None].expand(2, 16))
    far = head.distances(q + 3.0).flatten(2)[0]  # real distances are not touched
    assert bool((far > 2 * floor.sqrt()[:, None]).all())
