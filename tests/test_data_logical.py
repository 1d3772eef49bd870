"""Logical anomalies in the renderer (afrd.data.logical) and structural/logical apart in eval."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from afrd.data.logical import LOGICAL_ALL, LOGICAL_FOR, defect_family
from afrd.data.render import CATEGORIES, LIGHT_SETUPS, render_linear, render_set, sample_part

SIZE = 128
CASES = [(c, d) for c in CATEGORIES for d in LOGICAL_FOR[c]]


@pytest.mark.parametrize(("category", "defect"), CASES)
def test_every_logical_kind_is_labelled_visible_and_local(category, defect):
    part = sample_part(category, 3, defect, SIZE, "fixtured")
    clean = sample_part(category, 3, None, SIZE, "fixtured")
    assert part.label == 1 and part.defect == defect and part.defect_type == "logical"
    assert part.mask.sum() >= 10
    diff = np.abs(
        render_linear(part, LIGHT_SETUPS["box"]) - render_linear(clean, LIGHT_SETUPS["box"])
    ).max(-1)
    assert diff[part.mask > 0].max() > 20  # the light box shows every one of them
    if defect == "wrong_colour":  # only the colour changed: nothing outside the component
        far = cv2.dilate(part.mask, np.ones((3, 3), np.uint8), iterations=3) == 0
        assert diff[far].max() < 3.0
        assert np.abs(part.height - clean.height).max() == 0


def test_kinds_a_category_cannot_show_are_refused_and_every_kind_is_known():
    assert set(LOGICAL_ALL) == {k for v in LOGICAL_FOR.values() for k in v}
    with pytest.raises(ValueError, match="does not apply to 'plate'"):
        sample_part("plate", 0, "swapped", 64)


def test_defect_family_splits_structural_from_logical():
    logical = render_set(sample_part("cookie", 1, "extra", 64))
    structural = render_set(sample_part("cookie", 1, "dent", 64))
    good = render_set(sample_part("cookie", 1, None, 64))
    assert defect_family(logical) == "logical" and defect_family(structural) == "structural"
    assert defect_family(good) is None


def test_synth_logical_to_train_student_to_eval_reports_both_families(tmp_path):
    """afrd synth --logical -> afrd train --student local+global -> afrd eval, on disk."""
    from afrd.data.synth_cli import main as synth_main
    from afrd.model.evaluate import evaluate, format_table
    from afrd.model.train import build_parser, config_from_args, train

    data = tmp_path / "data"
    argv = ["--out", str(data), "--categories", "plate", "--train", "4", "--val", "4"]
    argv += ["--test", "24", "--size", "64", "--defect-rate", "0.75", "--logical"]
    assert synth_main([*argv, "--pose", "fixtured", "--no-progress"]) == 0
    kinds = {
        line.split(": ")[1]
        for f in (data / "plate" / "test_public" / "data").glob("*_metadata.yaml")
        for line in f.read_text().splitlines()
        if line.startswith("defect: ")
    }
    assert kinds & {"extra", "count", "wrong_colour"}, kinds  # beyond missing/misplaced
    a = build_parser().parse_args(
        ["--data", str(data), "--category", "plate", "--out", str(tmp_path / "run")]
        + ["--student", "local+global", "--teacher", "efficientnet_lite0"]
        + ["--teacher-weights", "random", "--image-size", "64", "--steps", "2", "--no-progress"]
    )
    ckpt = train(config_from_args(a))
    res = evaluate(ckpt, data, ["plate"], tmp_path / "eval", batch_size=8)
    cat = res["categories"]["plate"]
    assert cat["i_auroc_structural"] is not None and cat["i_auroc_logical"] is not None
    assert 0.0 <= cat["i_auroc_logical"] <= 1.0
    assert "logical" in format_table(res)
