"""Datasets on disk: the Eyecandies layout (a generated fixture and `afrd synth` output), the
capture layout (round trip through write_capture), layout detection and the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from afrd.cli import main as afrd_main
from afrd.data.capture import CaptureDataset, set_label, write_capture
from afrd.data.datasets import detect_layout, open_dataset
from afrd.data.eyecandies import EyecandiesDataset, parse_metadata
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS, EYECANDIES_FILES
from afrd.errors import DataError

S = 24  # fixture image size


def _write_sample(data: Path, stem: str, value: int, anomalous: int | None, mask: bool) -> None:
    """Image k of a sample is filled with value + k, so ordering by light name is checkable."""
    for k in range(6):
        img = np.full((S, S, 3), value + k, np.uint8)
        img[0, 0] = (255, 0, 0)  # red marker top-left: catches a BGR/RGB mix-up
        cv2.imwrite(str(data / f"{stem}_image_{k}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(data / f"{stem}_depth.png"), np.zeros((S, S), np.uint16))
    if anomalous is not None:
        (data / f"{stem}_metadata.yaml").write_text(
            f"# written by a test\nanomalous: {anomalous}\nextra:\n  - nested: 1\n"
        )
    if mask:
        m = np.zeros((S, S, 3), np.uint8)  # Eyecandies masks may be 3-channel
        if anomalous:
            m[4:10, 5:12] = 255
        cv2.imwrite(str(data / f"{stem}_mask.png"), m)


@pytest.fixture
def eyecandies_root(tmp_path: Path) -> Path:
    root = tmp_path / "eyecandies"
    for cls in ("CandyCane", "PeppermintCandy"):
        train = root / cls / "train" / "data"
        pub = root / cls / "test_public" / "data"
        priv = root / cls / "test_private" / "data"
        for d in (train, pub, priv):
            d.mkdir(parents=True)
        for i in (0, 1, 2, 10):  # 3-digit ids, and 10 sorts after 2 as an int
            _write_sample(train, f"{i:03d}", 10 * i, 0, mask=False)
        for i, lab in enumerate((0, 1, 1)):
            _write_sample(pub, f"{i:02d}", 100 + 10 * i, lab, mask=True)
        for i in range(2):
            _write_sample(priv, f"{i:02d}", 200, None, mask=False)
    return root


def test_eyecandies_layout_with_differing_id_widths(eyecandies_root: Path):
    train = EyecandiesDataset(eyecandies_root, "CandyCane", "train")
    assert len(train) == 4 and train.ids == [0, 1, 2, 10]
    s = train[3]
    assert isinstance(s, ImageSet) and s.images.shape == (6, S, S, 3)
    assert s.lights == DEFAULT_LIGHTS and s.label == 0 and s.mask.sum() == 0
    assert s.images[0, 5, 5, 0] == 100 and s.images[5, 5, 5, 0] == 105  # image_0, image_5
    assert tuple(s.images[0, 0, 0]) == (255, 0, 0)  # RGB order
    pub = EyecandiesDataset(eyecandies_root, "CandyCane", "test_public")
    assert pub.labels == [0, 1, 1] and pub.ids == [0, 1, 2]
    bad = pub[1]
    assert bad.label == 1 and bad.mask.dtype == np.uint8 and bad.mask.sum() == 6 * 7
    assert pub[0].mask.sum() == 0


def test_test_private_has_no_labels_or_masks(eyecandies_root: Path):
    priv = EyecandiesDataset(eyecandies_root, "CandyCane", "test_private")
    assert priv.labels == [None, None]
    s = priv[0]
    assert s.label is None and s.mask is None


def test_lights_are_picked_by_name_and_resized(eyecandies_root: Path):
    ds = EyecandiesDataset(
        eyecandies_root, "CandyCane", "test_public", lights=("box", "ring_left"), size=12
    )
    s = ds[1]
    assert s.lights == ("box", "ring_left") and s.images.shape == (2, 12, 12, 3)
    k_box, k_left = int(EYECANDIES_FILES["box"][-1]), int(EYECANDIES_FILES["ring_left"][-1])
    assert s.images[0, 6, 6, 1] == 110 + k_box and s.images[1, 6, 6, 1] == 110 + k_left
    assert s.mask.shape == (12, 12) and 0 < s.mask.sum() < 6 * 7
    with pytest.raises(DataError, match="unknown lights"):
        EyecandiesDataset(eyecandies_root, "CandyCane", "train", lights=("sun",))


def test_missing_lighting_image_names_sample_and_file(eyecandies_root: Path):
    data = eyecandies_root / "CandyCane" / "train" / "data"
    (data / "002_image_3.png").unlink()
    with pytest.raises(DataError) as e:
        EyecandiesDataset(eyecandies_root, "CandyCane", "train")
    msg = str(e.value)
    assert "sample 002" in msg and "002_image_3.png" in msg and "ring_top" in msg
    # the other lights still load, nothing else is touched
    ok = EyecandiesDataset(eyecandies_root, "CandyCane", "train", lights=("ring_all", "box"))
    assert len(ok) == 4


def test_corrupt_lighting_image_names_sample_and_file(eyecandies_root: Path):
    data = eyecandies_root / "CandyCane" / "test_public" / "data"
    (data / "01_image_4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = EyecandiesDataset(eyecandies_root, "CandyCane", "test_public")
    ds[0]  # others fine
    with pytest.raises(DataError, match=r"sample 01.*unreadable image .*01_image_4\.png"):
        ds[1]


def test_bad_metadata_and_missing_class_are_clear(eyecandies_root: Path, tmp_path: Path):
    data = eyecandies_root / "CandyCane" / "test_public" / "data"
    (data / "02_metadata.yaml").write_text("anomalous: maybe\n")
    ds = EyecandiesDataset(eyecandies_root, "CandyCane", "test_public")
    with pytest.raises(DataError, match="02_metadata.yaml.*expected 0 or 1"):
        _ = ds.labels
    with pytest.raises(DataError, match="no class folder .*Lollipop.*CandyCane"):
        EyecandiesDataset(eyecandies_root, "Lollipop", "train")
    meta = tmp_path / "m.yaml"
    meta.write_text("anomalous: 1  # yes\nname: 'x'\nratio: 0.5\n")
    assert parse_metadata(meta) == {"anomalous": 1, "name": "x", "ratio": 0.5}


def test_open_dataset_detects_the_layout(eyecandies_root: Path, tmp_path: Path):
    ds = open_dataset(eyecandies_root, "test_public", "PeppermintCandy")
    assert isinstance(ds, EyecandiesDataset) and ds.category == "PeppermintCandy"
    ds = open_dataset(eyecandies_root / "CandyCane", "train")  # a class folder itself
    assert ds.category == "CandyCane" and len(ds) == 4
    with pytest.raises(DataError, match="pass a category"):
        open_dataset(eyecandies_root, "train")
    empty = tmp_path / "empty"
    (empty / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="neither an Eyecandies-layout dataset .* nor a capture"):
        open_dataset(empty, "train")
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "nope")


def _set(part_id: str, value: int, label=None, mask=False, t=1_763_900_000.0) -> ImageSet:
    images = np.random.default_rng(value).integers(0, 255, (6, 16, 20, 3), dtype=np.uint8)
    m = np.zeros((16, 20), np.uint8)
    if mask:
        m[2:5, 3:9] = 1
    return ImageSet(
        images=images,
        lights=DEFAULT_LIGHTS,
        part_id=part_id,
        product="bracket A",
        label=label,
        mask=m if mask else None,
        timestamps=[t + 0.01 * k for k in range(6)],
        meta={"cell": "c1"},
    )


def test_capture_round_trip_and_training_rule(tmp_path: Path):
    root = tmp_path / "captures"
    res = {
        "verdict": "pass",
        "score": np.float32(0.12),
        "threshold": 0.5,
        "model": {"name": "m", "sha256": "ab"},
    }
    p_good = write_capture(root, _set("p-1", 1), {**res, "label": 0})
    write_capture(root, _set("p-2", 2), res)  # unreviewed pass
    p_fail = write_capture(
        root, _set("p/3", 3, label=1, mask=True), {**res, "verdict": "fail", "score": 0.9}
    )
    again = write_capture(root, _set("p-1", 4), res)  # the same part inspected twice
    assert p_good.parent.name == "2025-11-23" and p_good.parent.parent.name == "bracket_A"
    assert again.name == "p-1~2" and p_fail.name == "p_3"
    assert not list(root.rglob(".tmp-*")), "temporary folders left behind"
    doc = json.loads((p_good / "set.json").read_text())
    assert doc["schema"] == "afrd.capture/1" and doc["lights"] == list(DEFAULT_LIGHTS)
    assert doc["score"] == pytest.approx(0.12) and doc["label"] == 0
    assert doc["captured_at"].startswith("2025-11-23T") and doc["captured_at"].endswith("Z")

    train = CaptureDataset(root, split="train")
    assert [s.part_id for s in train] == ["p-1"]
    s = train[0]
    assert np.array_equal(s.images, _set("p-1", 1).images)  # lossless
    assert s.timestamps == pytest.approx([1_763_900_000.0 + 0.01 * k for k in range(6)])
    trusted = CaptureDataset(root, split="train", trust_verdicts=True)
    assert sorted(s.part_id for s in trusted) == ["p-1", "p-1", "p-2"]

    set_label(p_fail, 1)  # operator review
    test = CaptureDataset(root, "bracket A", split="test", lights=("box", "ring_all"), size=8)
    assert sorted(test.labels) == [0, 1]
    bad = next(s for s in test if s.label == 1)
    assert bad.images.shape == (2, 8, 8, 3) and bad.mask.sum() > 0
    assert bad.meta["verdict"] == "fail"

    ds = open_dataset(root, "train")
    assert isinstance(ds, CaptureDataset) and len(ds) == 1
    assert len(open_dataset(root, "all")) == 4


def test_capture_errors_name_the_file(tmp_path: Path):
    root = tmp_path / "c"
    p = write_capture(root, _set("x", 1), {"verdict": "pass", "label": 0})
    (p / "ring_top.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"unreadable image .*ring_top\.png"):
        CaptureDataset(root)[0]
    with pytest.raises(DataError, match="no image for lights"):
        CaptureDataset(root, lights=("dome",))[0]
    (p / "set.json").write_text('{"schema": "other/9"}')  # named, skipped; nothing left
    with pytest.raises(
        DataError,
        match=r"1 incomplete or unreadable skipped.*skipped: .*"
        r"set\.json: schema 'other/9', expected 'afrd\.capture/1'",
    ):
        CaptureDataset(root)
    assert len(CaptureDataset(root, split="all")) == 0
    with pytest.raises(DataError, match="label must be"):
        write_capture(root, _set("y", 2), {"label": 3})


def test_afrd_synth_writes_a_deterministic_eyecandies_layout(tmp_path: Path, capsys):
    args = [
        "synth",
        "--categories",
        "plate",
        "gummy",
        "--train",
        "3",
        "--val",
        "2",
        "--test",
        "8",
        "--size",
        "32",
        "--seed",
        "7",
        "--defect-rate",
        "0.6",
        "--no-progress",
    ]
    assert afrd_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert afrd_main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "wrote 26 image sets" in capsys.readouterr().out
    assert (tmp_path / "a" / "plate" / "train" / "data" / "000_image_5.png").is_file()
    assert (tmp_path / "a" / "plate" / "test_public" / "data" / "07_image_0.png").is_file()
    a = open_dataset(tmp_path / "a", "test_public", "gummy")
    b = open_dataset(tmp_path / "b", "test_public", "gummy")
    assert a.labels == b.labels and 0 < sum(a.labels) < len(a)
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert np.array_equal(sa.images, sb.images) and np.array_equal(sa.mask, sb.mask)
        assert sa.images.shape == (6, 32, 32, 3)
        assert (sa.mask.sum() > 0) == (sa.label == 1)
    train = open_dataset(tmp_path / "a", "train", "plate")
    assert train.labels == [0, 0, 0]
    assert open_dataset(tmp_path / "a", "val", "plate").labels == [0, 0]
    c = tmp_path / "c"
    other = [x if x != "7" else "8" for x in args]  # another seed
    assert afrd_main([*other, "--out", str(c)]) == 0
    assert not np.array_equal(open_dataset(c, "train", "plate")[0].images, train[0].images)
    assert afrd_main(["synth", "--out", str(c), "--categories", "rock"]) == 2
