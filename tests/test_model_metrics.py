"""Metrics against brute force, and afrd eval's outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from _model_helpers import make_sets

from afrd.model.evaluate import evaluate, format_table
from afrd.model.metrics import aupro, auroc, pro_curve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auroc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # rounded: many ties
    pos, neg = s[y == 1], s[y == 0]
    brute = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert auroc(y, s) == pytest.approx(brute, abs=1e-12)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    with pytest.raises(ValueError):
        auroc([1, 1], [0.1, 0.2])


def test_aupro_perfect_random_and_region_weighting() -> None:
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[0, 2:4, 2:4] = 1  # small region
    masks[1, 10:30, 10:30] = 1  # large region
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    many = np.zeros((8, 32, 32), np.uint8)
    many[:, 8:20, 8:20] = 1  # random scores: PRO ~ FPR, normalized area up to 0.3 ~ 0.15
    assert aupro(many, rng.random(many.shape)) == pytest.approx(0.15, abs=0.03)
    # Finding only the small region fully: PRO 0.5 at once (regions count equally, not pixels).
    only_small = np.zeros(masks.shape)
    only_small[0, 2:4, 2:4] = 1
    fpr, pro = pro_curve(masks, only_small)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0


@pytest.mark.slow
def test_evaluate_writes_json_table_and_pngs(tmp_path) -> None:
    from afrd.model.train import TrainConfig, train

    torch.manual_seed(0)
    ckpt = train(
        TrainConfig(
            out=str(tmp_path / "run"),
            teacher="efficientnet_lite0",
            teacher_weights="random",
            fusion="mean",
            epochs=1,
            image_size=64,
            progress=False,
        ),
        sets=make_sets(4, 64),
    )
    sets = {"tiny": make_sets(3, 64, defect=True, seed0=50) + make_sets(3, 64, seed0=60)}
    res = evaluate(ckpt, None, None, tmp_path / "eval", sets=sets)
    cat = res["categories"]["tiny"]
    for key in ("i_auroc", "p_auroc", "aupro"):
        assert 0.0 <= cat[key] <= 1.0
        assert res["mean"][key] == cat[key]
    assert cat["sets"] == 6 and cat["defective"] == 3
    assert cat["timing"]["infer_cpu_s_per_part"] > 0
    assert res["model"]["teacher_weights_source"] == "random"
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["categories"]["tiny"]["aupro"] == pytest.approx(cat["aupro"])
    roc = cv2.imread(str(tmp_path / "eval" / "roc_tiny.png"))
    grid = cv2.imread(str(tmp_path / "eval" / "grid_tiny.png"))
    assert roc is not None and roc.std() > 10
    assert grid is not None and grid.shape[1] == 8 * 128  # 6 lights + truth + heatmap
    assert "tiny" in format_table(res) and "mean" in format_table(res)
