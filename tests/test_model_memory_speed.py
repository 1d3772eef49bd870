"""The memory bank at line speed (issue 23): the coreset makes the one-at-a-time greedy picks in a
few passes over the points, the split search equals brute force (in PyTorch and in ONNX
Runtime), a bank from before the split loads and searches as it did, the part's region is the
training parts' silhouettes, and the fit's features on ONNX Runtime are PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_helpers import make_sets

from afrd.model.memory import coreset
from afrd.model.memory.bank import PRECISION_FLOOR, MemoryBank, ScaleBank
from afrd.model.memory.coreset import coverage_radius, greedy_coreset
from afrd.model.memory.extract import eager_features, onnx_features
from afrd.model.memory.fit import MemoryOptions, fit_bank
from afrd.model.memory.region import part_mask, patch_region

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]


def _one_at_a_time(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The textbook greedy k-center loop (afrd's before issue 23): one pass per pick."""
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(points), (1,), generator=gen))
    chosen = [first]
    sq = (points**2).sum(1)
    nearest = sq - 2 * (points @ points[first]) + sq[first]
    for _ in range(1, k):
        far = int(nearest.argmax())
        chosen.append(far)
        nearest = torch.minimum(nearest, sq - 2 * (points @ points[far]) + sq[far])
    return torch.tensor(chosen)


def _clustered(n_big: int, n_small: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_big + n_small, 16, generator=gen) * 10
    sizes = [500] * n_big + [12] * n_small
    return torch.cat(
        [c + torch.randn(n, 16, generator=gen) for c, n in zip(centres, sizes, strict=True)]
    )


@pytest.mark.parametrize("pool", [32, 1024])
def test_coreset_picks_the_greedy_centres_in_few_passes(monkeypatch, pool: int) -> None:
    points = _clustered(6, 60)  # 3720 points: the small clusters are what k-center must keep
    passes = []
    update = coreset._update
    monkeypatch.setattr(coreset, "POOL", pool)
    monkeypatch.setattr(coreset, "_update", lambda *a: (passes.append(1), update(*a)))
    k = 300
    idx = greedy_coreset(points, k, seed=3)
    ref = _one_at_a_time(points, k, seed=3)
    assert idx.shape == (k,) and len(set(idx.tolist())) == k
    # the same centres (a near-tie may go the other way on rounding, and the picks after it
    # with it) and the same coverage after every number of picks
    assert len(set(idx.tolist()) & set(ref.tolist())) >= 0.9 * k
    for n in (30, 100, 300):
        radius = coverage_radius(points, points[idx[:n]])
        ref_radius = coverage_radius(points, points[ref[:n]])
        assert radius <= 1.01 * ref_radius, (n, radius, ref_radius)
    # what makes it hold up on a busy machine: a pass over every point serves many picks
    assert len(passes) <= k / 8, len(passes)


def _brute(q: torch.Tensor, bank: torch.Tensor, region: torch.Tensor, bg: int) -> torch.Tensor:
    """[B, N, Q, D] -> [B, N, Q]: nearest distance over all rows (region) or the last ``bg``."""
    d2 = ((q[:, :, :, None] - bank[None, :, None]) ** 2).sum(-1)  # [B, N, Q, K]
    best = torch.where(region[None, None, :], d2.amin(-1), d2[..., -bg:].amin(-1))
    floor = (bank**2).sum(-1).mean(1) * PRECISION_FLOOR
    return torch.maximum(best, floor[None, :, None]).sqrt()


def _split_head(seed: int = 0) -> tuple[ScaleBank, torch.Tensor, torch.Tensor, int]:
    gen = torch.Generator().manual_seed(seed)
    head = ScaleBank(1, 64, 8, n_lights=2, dim=16)  # grid 8: 64 patches
    bank = torch.randn(2, 1500, 16, generator=gen) * 2  # > DISTANCE_CHUNK rows: two products
    region = torch.zeros(64, dtype=torch.bool)
    region[18:46] = True
    head.set_bank(bank, region, bg=40)
    return head, bank, region, 40


def test_split_search_equals_brute_force_in_pytorch_and_onnx_runtime(tmp_path) -> None:
    import onnxruntime as ort

    head, bank, region, bg = _split_head()
    q = torch.randn(3, 2, 64, 16, generator=torch.Generator().manual_seed(1)) * 2
    want = _brute(q, bank, region, bg)
    torch.testing.assert_close(head.distances(q).flatten(2), want, rtol=1e-4, atol=1e-4)
    path = tmp_path / "search.onnx"
    search = torch.nn.Module()
    search.head = head
    search.forward = head.distances
    torch.onnx.export(
        search.eval(),
        (q[:1],),
        str(path),
        dynamo=False,
        input_names=["q"],
        dynamic_axes={"q": {0: "batch"}},
        export_params=True,
    )
    # in the graph the split is Gather, MatMul, ReduceMin and Concat: TensorRT runs all four
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"q": q.numpy()})
    np.testing.assert_allclose(got.reshape(3, 2, 64), want.numpy(), rtol=1e-4, atol=1e-4)


def test_a_bank_from_before_the_split_loads_and_searches_every_row() -> None:
    head, bank, _, _ = _split_head()
    head.set_bank(bank)  # no region: every patch, every row (as every bank before issue 23)
    state = {k: v for k, v in head.state_dict().items() if k not in ("region", "bg_count")}
    old = ScaleBank(1, 64, 8, n_lights=2, dim=16)
    old.load_state_dict(state)  # strict: a checkpoint without the new buffers is complete
    q = torch.randn(2, 2, 64, 16, generator=torch.Generator().manual_seed(2)) * 2
    every = torch.ones(64, dtype=torch.bool)
    torch.testing.assert_close(old.distances(q).flatten(2), _brute(q, bank, every, 1))


def _disc_sets(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Bright discs on a dark noisy background, a few pixels apart: parts lying in a fixture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        cy, cx = size / 2 + rng.uniform(-2, 2, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2
        img = rng.normal(30, 4, (6, size, size, 3))
        img[:, disc] += 150
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def test_region_is_the_training_parts_silhouettes_and_the_fit_splits_by_it() -> None:
    arrays = _disc_sets(8)
    mask = part_mask(arrays)
    assert mask is not None and 0.15 < mask.mean() < 0.5  # the disc (12.6 %) plus the margin
    region = patch_region(mask, 8)
    assert region.shape == (64,) and bool(region[27]) and not bool(region[0])
    assert part_mask([np.zeros((6, 64, 64, 3), np.uint8)] * 3) is None  # no part: no region
    model = MemoryBank(n_lights=6, image_size=64, teacher_weights="random").eval()
    info = fit_bank(model, arrays, MemoryOptions(bg_bank=16, region_min_sets=8))
    head = model.heads[0]
    assert info[0]["region_patches"] == int(region.sum()) == int(head.region.sum())
    assert int(head.bg_count) == 16 and head.bank_size == info[0]["bank_per_light"] + 16
    x = torch.from_numpy(np.stack(_disc_sets(2, seed=5)))
    with torch.no_grad():
        got = model.raw_maps(x)[0].flatten(2)
        q = model.patches(x)
    torch.testing.assert_close(got, _brute(q, head.bank, head.region, 16), rtol=1e-4, atol=1e-4)
    # from fewer sets than region_min_sets the bank has no region (the union of few parts'
    # silhouettes misses where good parts reach): every patch, every row, as before issue 23
    info = fit_bank(model, arrays[:7], MemoryOptions(bg_bank=16, region_min_sets=8))
    assert bool(head.region.all()) and int(head.bg_count) == 0 and info[0]["background_bank"] == 0


def test_the_fits_features_on_onnx_runtime_are_pytorchs() -> None:
    model = MemoryBank(n_lights=6, image_size=64, scales=(1, 2), teacher_weights="random").eval()
    fast = onnx_features(model)
    assert fast.engine == "onnxruntime"
    x = torch.from_numpy(np.stack([s.images for s in make_sets(3, 64)]))
    for got, want in zip(fast(x), eager_features(model)(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
