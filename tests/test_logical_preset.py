"""``afrd train --preset logical`` (issue 27): the memory bank with the global branches of
afrd.model.globalstats inside its exported graph, and ``afrd eval``'s I-AUROC per defect type.

Data: a tiny rendered logical family (``afrd synth --logical family``, 64 px) for the CLI path
train -> eval -> afrd-export onnx -> ONNX Runtime; and, for "scores above the bank alone", a
generated family of discs on a plate where the rule is global by construction (one disc per
half, one colour per part; defects: a third disc, two discs of different colours, both discs
in one half), because at the sizes a test affords the rendered family is too noisy to say it
(at 128 px from 48 sets the preset beat the bank at 5 of 6 seeds, lost at one).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from afrd.data.eyecandies import parse_metadata
from afrd.data.imageset import ImageSet
from afrd.data.synth_cli import main as synth_main
from afrd.export.cli import main as export_main
from afrd.model import train as train_cli
from afrd.model.checkpoint import load_checkpoint, registration_of
from afrd.model.evaluate import main as eval_main
from afrd.model.metrics import auroc
from afrd.model.sets import open_sets, registered, resize_set

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]
SIZE = 64
TYPES = ("count", "pairing", "layout")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """The logical family at 64 px (16 train, 8 val, 24 test) and the logical preset on it."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("logical")
    data, out = root / "data", root / "model"
    rc = synth_main(
        ["--out", str(data), "--categories", "plate", "--logical", "family", "--pose", "fixtured"]
        + ["--train", "16", "--val", "8", "--test", "24", "--size", str(SIZE), "--no-progress"]
    )
    assert rc == 0
    rc = train_cli.main(
        ["--data", str(data), "--category", "plate", "--out", str(out), "--preset", "logical"]
        + ["--image-size", str(SIZE), "--no-progress"]
    )
    assert rc == 0
    return {"data": data, "ckpt": out / "model.pt", "root": root}


def _test_types(data) -> list[str]:
    """The defect type of every defective set of the test split, from its metadata.yaml."""
    files = sorted((data / "plate" / "test_public" / "data").glob("*_metadata.yaml"))
    meta = [parse_metadata(f) for f in files]
    return [str(m["defect"]) for m in meta if m.get("anomalous") == 1]


def test_eval_reports_i_auroc_per_defect_type(rendered, capsys) -> None:
    out = rendered["root"] / "eval"
    rc = eval_main([str(rendered["ckpt"]), "--data", str(rendered["data"]), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    result = json.loads((out / "metrics.json").read_text())
    plate = result["categories"]["plate"]
    by_type = plate["i_auroc_by_type"]
    types = _test_types(rendered["data"])
    assert set(types) == set(TYPES)  # the split holds every type (seed 0)
    assert {t: v["defective"] for t, v in by_type.items()} == {t: types.count(t) for t in TYPES}
    assert all(0.0 <= v["i_auroc"] <= 1.0 for v in by_type.values())
    assert set(result["mean"]["i_auroc_by_type"]) == set(TYPES)
    rows = [line.split() for line in text.splitlines()]
    for t, v in by_type.items():
        assert ["plate", t, f"{v['i_auroc']:.4f}", str(v["defective"])] in rows
    assert result["model"]["model_kind"] == "memory" and result["model"]["preset"] == "logical"


def test_exported_graph_equals_pytorch_and_carries_the_branches(rendered) -> None:
    """afrd-export onnx (its own parity check passes), then ONNX Runtime on the graph against
    PyTorch on registered test sets: |onnx - torch| <= 1e-4 + 1e-3 * max|torch|, maps and
    scores; the model card names the kind, the preset and the branches."""
    import onnx
    import onnxruntime as ort

    bundle = rendered["root"] / "bundle"
    rc = export_main(["onnx", str(rendered["ckpt"]), "--out", str(bundle)]
                     + ["--exporter", "torchscript", "--force"])  # fmt: skip
    assert rc == 0
    card = json.loads((bundle / "bundle.json").read_text())["model"]
    assert (card["kind"], card["preset"]) == ("memory", "logical")
    assert card["global"]["branches"] == ["position", "histogram"]
    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert not ops & {"Einsum", "CDist", "Loop", "If", "TopK"}, ops  # what TensorRT balks at
    model, cfg = load_checkpoint(rendered["ckpt"])
    sets = open_sets(rendered["data"], "test_public", "plate", cfg["lights"], SIZE)
    sets = registered([sets[i] for i in range(8)], registration_of(cfg))
    x = np.stack([resize_set(s, SIZE, cfg["lights"]) for s in sets])
    with torch.no_grad():
        ref_map, ref_score = (t.numpy() for t in model(torch.from_numpy(x)))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    got_map, got_score = sess.run(["anomaly_map", "score"], {"images": x})
    for got, ref in ((got_map, ref_map), (got_score, ref_score)):
        assert np.abs(got - ref).max() <= 1e-4 + 1e-3 * np.abs(ref).max()
    # the score is the map's maximum: the branches' maps carry their scores
    assert np.allclose(ref_map.reshape(len(x), -1).max(1), ref_score, atol=1e-6)


def test_fusion_normalises_on_median_and_mad_and_holds_the_branches_a_margin_back(rendered):
    """The fused maximum's rule (globalstats.GlobalBranches: median/MAD on the held-out normals,
    the branches less their margin, which keeps the structural score): on the held-out parts
    the train normalised on (the val split), the bank's normalised scores have median 0 and
    MAD 1/1.4826, each branch's median is -margin; the checkpoint's config carries the margin
    and a model built from it keeps it."""
    from afrd.model.globalstats import MARGIN

    model, cfg = load_checkpoint(rendered["ckpt"])
    assert cfg["global"]["margin"] == MARGIN > 0 and model.branches.settings.margin == MARGIN
    sets = open_sets(rendered["data"], "val", "plate", cfg["lights"], SIZE)
    sets = registered([sets[i] for i in range(len(sets))], registration_of(cfg))
    x = torch.from_numpy(np.stack([resize_set(s, SIZE, cfg["lights"]) for s in sets]))
    with torch.no_grad():
        bank = model.bank_forward(x)[1].double()
        branch = model.branches(model._finest)[1].double()  # [B, R]
    bank = (bank - model.bank_norm[0]) / model.bank_norm[1]
    assert abs(float(torch.quantile(bank, 0.5))) < 1e-3
    mad = torch.quantile((bank - torch.quantile(bank, 0.5)).abs(), 0.5)
    assert abs(float(mad) * 1.4826 - 1) < 1e-3
    med = torch.quantile(branch, 0.5, dim=0)
    assert torch.allclose(med, torch.full_like(med, -MARGIN), atol=1e-3), med


# --- a family whose rule is global by construction ----------------------------------------------

LIGHTS = ("ring_all", "ring_bottom", "ring_right", "ring_top", "ring_left", "box")
_DIRS = {"ring_bottom": 270, "ring_right": 0, "ring_top": 90, "ring_left": 180}
COLOURS = ((0.85, 0.2, 0.15), (0.15, 0.35, 0.85))
DISC_TYPES = ("count", "pairing", "halves")


def _place(rng: np.random.Generator, per_half: tuple[int, int]) -> list:
    """Disc centres (x, y) in [0, 1]: ``per_half`` discs in the left and right halves, at least
    0.2 apart (so no window shows two discs closer than good parts have them)."""
    pts: list = []
    for side, n in enumerate(per_half):
        while n:
            x, y = rng.uniform(0.12, 0.40) + 0.48 * side, rng.uniform(0.15, 0.85)
            if all(np.hypot(x - a, y - b) > 0.2 for a, b in pts):
                pts.append((x, y))
                n -= 1
    return pts


def disc_set(seed: int, kind: str | None = None, size: int = 128) -> ImageSet:
    """Good: one disc in each half of a plate, both of the part's colour (red or blue), at
    random places. ``count``: a third disc; ``pairing``: one disc in the other colour;
    ``halves``: both discs in one half. Every disc looks like a good part's disc."""
    rng = np.random.default_rng(seed)
    colour = int(rng.integers(2))
    per_half = (1, 1)
    if kind == "count":
        per_half = (2, 1) if rng.random() < 0.5 else (1, 2)
    if kind == "halves":
        per_half = (2, 0) if rng.random() < 0.5 else (0, 2)
    pts = _place(rng, per_half)
    colours = [colour] * len(pts)
    if kind == "pairing":
        colours[int(rng.integers(len(pts)))] = 1 - colour
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    plate = (np.abs(xx - 0.5) < 0.46) & (np.abs(yy - 0.5) < 0.46)
    height = 0.02 * plate.astype(np.float32)
    albedo = np.where(plate[..., None], 0.55, 0.08).astype(np.float32) * np.ones(3, np.float32)
    r = 0.055
    for (x, y), c in zip(pts, colours, strict=True):
        d2 = ((xx - x) ** 2 + (yy - y) ** 2) / r**2
        height += 0.5 * r * np.sqrt(np.clip(1 - d2, 0, None))
        albedo[d2 < 1] = COLOURS[c]
    gy, gx = np.gradient(height * size)
    normal = np.stack([-gx, -gy, np.ones_like(height)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    images = []
    for name in LIGHTS:
        if name in _DIRS:
            az, el = np.deg2rad(_DIRS[name]), np.deg2rad(30)
            v = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            shade = 0.15 + 1.1 * np.clip(normal @ v, 0, None)
        else:
            shade = 0.3 + 0.6 * normal[..., 2]
        img = shade[..., None] * albedo + rng.normal(0, 0.01, (size, size, 3))
        images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    mask = plate.astype(np.uint8) if kind else np.zeros((size, size), np.uint8)
    label = int(kind is not None)
    return ImageSet(
        np.stack(images), LIGHTS, f"d{seed}", "discs", label, mask, meta={"defect": kind}
    )


def test_logical_preset_scores_above_the_bank_alone_on_a_logical_family(tmp_path) -> None:
    """The preset's score against its own bank's (the cpu preset's bank: the same fit) on good
    parts and 4 of each defect type, 128 px, 24 training and 8 held-out parts. Seen over six
    data seeds (this one's parts shifted by 10,000 x seed): preset 0.85-0.99, bank 0.55-0.84,
    the preset ahead by 0.06-0.42 (here: 0.875 against 0.771); with the median/MAD
    normalisation and the branches' margin (issue 27's structural fix) here 0.910 against
    0.771, the six seeds not re-run; asserted: by at least 0.05."""
    size = 128
    train = [disc_set(i, None, size) for i in range(24)]
    held = [disc_set(5000 + i, None, size) for i in range(8)]
    test = [disc_set(7000 + i, None, size) for i in range(12)]
    test += [disc_set(8000 + i, DISC_TYPES[i % 3], size) for i in range(12)]
    args = ["--data", "", "--preset", "logical", "--image-size", str(size), "--no-progress"]
    cfg = train_cli.config_from_args(
        train_cli.build_parser().parse_args(args + ["--out", str(tmp_path)])
    )
    model, mcfg = load_checkpoint(train_cli.train(cfg, train, held))
    sets = registered(test, registration_of(mcfg))
    x = torch.from_numpy(np.stack([resize_set(s, size, mcfg["lights"]) for s in sets]))
    labels = np.array([s.label for s in test])
    with torch.no_grad():
        preset = auroc(labels, model(x)[1].numpy())
        bank = auroc(labels, model.bank_forward(x)[1].numpy())
    assert preset >= bank + 0.05, (preset, bank)


def test_logical_preset_on_a_structural_only_product(tmp_path) -> None:
    """No logical defect anywhere: the branches still fit on the good parts and the model
    scores (a product the preset was not made for still gets a working bundle)."""
    data = tmp_path / "data"
    rc = synth_main(["--out", str(data), "--categories", "button", "--train", "12", "--val", "6"]
                    + ["--test", "0", "--size", str(SIZE), "--no-progress"])  # fmt: skip
    assert rc == 0
    rc = train_cli.main(["--data", str(data), "--category", "button", "--out", str(tmp_path / "m")]
                        + ["--preset", "logical", "--image-size", str(SIZE), "--no-progress"])  # fmt: skip
    assert rc == 0
    model, cfg = load_checkpoint(tmp_path / "m" / "model.pt")
    assert cfg["global"]["branches"] == ["position", "histogram"] and cfg["preset"] == "logical"
    sets = open_sets(data, "val", "button", cfg["lights"], SIZE, registration_of(cfg))
    x = torch.from_numpy(np.stack([resize_set(sets[i], SIZE, cfg["lights"]) for i in range(2)]))
    with torch.no_grad():
        amap, score = model(x)
    assert torch.isfinite(amap).all() and torch.isfinite(score).all()


def test_memory_global_refuses_an_unknown_branch(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        train_cli.build_parser().parse_args(["--data", "d", "--memory-global", "position,foo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--memory-global" in err and "position, histogram" in err and "foo" in err
