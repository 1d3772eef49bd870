"""First data on a new cell: `afrd capture` (the cell without a model), `afrd label`, what
`afrd train` says about a capture root, and the whole commissioning path by CLI commands only
on the simulated cell: calibrate flat-field -> config check -> capture 50 good parts -> train
(memory bank) -> export -> calibrate threshold -> config check -> `afrd run` inspecting parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import Daemon, afrd, collect, wait_subscribed, write_config  # noqa: E402

from afrd.data.capture import CaptureDataset, find_sets  # noqa: E402
from afrd.errors import DataError  # noqa: E402


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def _cell(tmp_path: Path, defect_rate: float = 0.0, extra: str = "") -> Path:
    return write_config(
        tmp_path, tmp_path / "bundle", size=32, defect_rate=defect_rate, extra=extra
    )


def _labels(root: Path) -> dict[str, int | None]:
    return {
        json.loads(p.read_text())["part_id"]: json.loads(p.read_text())["label"]
        for p in find_sets(root)
    }


def test_capture_without_a_model_then_label_and_train_reads_them(tmp_path):
    cfg = _cell(tmp_path)  # its bundle does not exist: capture needs no model
    caps = tmp_path / "caps"
    out = ok(afrd("capture", "--config", str(cfg), "--count", "4", "--out", str(caps)))
    assert "captured 4 sets" in out and "afrd label" in out
    labels = _labels(caps)
    assert len(labels) == 4 and set(labels.values()) == {None}
    doc = json.loads(find_sets(caps)[0].read_text())
    assert doc["lights"] == [
        "ring_all",
        "ring_bottom",
        "ring_right",
        "ring_top",
        "ring_left",
        "box",
    ]
    assert doc["size"] == [32, 32] and doc["verdict"] is None and doc["model"] is None
    assert doc["meta"]["source"] == "afrd capture" and "lighting" in doc["meta"]

    # no labelled good set: train (via the dataset it opens) says what it found and what to do
    with pytest.raises(DataError, match=r"4 sets, 0 labelled good.*afrd label"):
        CaptureDataset(caps, split="train")
    with pytest.raises(DataError, match=r"no image sets at all.*afrd capture"):
        CaptureDataset(tmp_path / "empty-but-present", split="train")

    ids = sorted(labels)
    p = afrd("label", str(caps), "--good")  # no selection: refused, nothing changed
    assert p.returncode == 2 and "say which sets" in p.stderr
    ok(afrd("label", str(caps), "--defective", "--part", ids[0]))
    out = ok(afrd("label", str(caps), "--good", "--unreviewed"))
    assert "labelled 3 of 3" in out
    assert _labels(caps) == {i: (1 if i == ids[0] else 0) for i in ids}
    day = find_sets(caps)[0].parent.parent.name
    dry = ok(afrd("label", str(caps), "--clear", "--day", day, "--dry-run"))
    assert "would change 4 of 4" in dry and _labels(caps)[ids[1]] == 0
    p = afrd("label", str(caps), "--good", "--part", "no-such-part")
    assert p.returncode == 2 and "no-such-part" in p.stderr
    ds = CaptureDataset(caps, split="train")
    assert len(ds) == 3 and "3 labelled good, 1 defective, 0 unreviewed" in ds.summary()
    assert len(CaptureDataset(caps, split="val")) == 4  # no holdout: every reviewed set


def test_holdout_sets_are_the_validation_split_and_never_train(tmp_path):
    cfg = _cell(tmp_path)
    caps = tmp_path / "caps"
    args = ("-c", str(cfg), "-n", "6", "--label", "good", "--holdout", "0.34", "--prefix", "h-")
    ok(afrd("capture", *args, "--out", str(caps)))
    docs = [json.loads(p.read_text()) for p in find_sets(caps)]
    held = {d["part_id"] for d in docs if d.get("holdout")}
    assert held == {"h-00003", "h-00006"}  # every third set, deterministic
    train = {s.part_id for s in CaptureDataset(caps, split="train")}
    val = {s.part_id for s in CaptureDataset(caps, split="val")}
    assert val == held and train.isdisjoint(val) and len(train) == 4
    assert len(CaptureDataset(caps, split="test")) == 6  # every reviewed set
    p = afrd("capture", *args[:6], "--holdout", "1.0", "--out", str(caps))
    assert p.returncode == 2 and "--holdout must be in [0, 1)" in p.stderr


def test_capture_uses_the_product_recipe_and_refuses_an_unknown_one(tmp_path):
    relevel = (
        '[[product]]\nname = "dim"\n[[product.lighting]]\nname = "box"\n'
        "channels = [{channel = 5, level = 20.0}, {channel = 6, level = 20.0}, "
        "{channel = 7, level = 20.0}, {channel = 8, level = 20.0}]\n"
        '[[product]]\nname = "std"\n'
    )
    cfg = _cell(tmp_path)
    cfg.write_text(cfg.read_text() + "\n" + relevel)
    caps = tmp_path / "caps"
    p = afrd("capture", "--config", str(cfg), "--count", "1", "--out", str(caps))
    assert p.returncode == 2 and "'default' has no [[product]] recipe" in p.stderr
    for product in ("dim", "std"):
        args = ("-c", str(cfg), "-n", "1", "--out", str(caps), "--prefix", "same-")
        ok(afrd("capture", *args, "--product", product))
    sets = {s.product: s for s in CaptureDataset(caps, split="all")}
    assert sets["dim"].meta["path"] != sets["std"].meta["path"]
    # the recipe's re-levelled box light (20 % instead of the cell's) reached the camera
    box = sets["std"].lights.index("box")
    assert sets["dim"].images[box].mean() < 0.5 * sets["std"].images[box].mean()
    ring = sets["std"].lights.index("ring_all")
    assert sets["dim"].images[ring].mean() == pytest.approx(sets["std"].images[ring].mean(), 0.05)


@pytest.mark.slow
def test_empty_cell_to_running_daemon_by_cli_commands_only(tmp_path):
    """The issue's path, 50 good parts at 32 px: every step is an `afrd` command."""
    cfg = _cell(tmp_path, extra='flatfield = "flatfield.npz"')
    text = cfg.read_text().replace("seed = 7", "seed = 7\nvignetting = 0.3\ndark_offset = 6.0")
    cfg.write_text(text)
    p = afrd("config", "check", "--no-bundle", str(cfg))  # the referenced file is not made yet
    assert p.returncode == 2 and "flatfield.npz: no such file" in p.stderr
    ok(afrd("calibrate", "flatfield", "--config", str(cfg)))
    assert "OK" in ok(afrd("config", "check", "--no-bundle", str(cfg)))
    caps = tmp_path / "captures"
    # 50 good parts, every 5th held out of training: the validation split for the memory
    # bank's normalisation and the threshold
    capture = ("capture", "-c", str(cfg), "-n", "50", "--label", "good", "--holdout", "0.2")
    ok(afrd(*capture, "--out", str(caps)))
    out = ok(
        afrd(
            "train", "--data", str(caps), "--model", "memory", "--image-size", "32",
            "--threads", "1", "--out", str(tmp_path / "run"),
        )
    )  # fmt: skip
    assert "50 labelled good, 0 defective, 0 unreviewed, 10 held out" in out
    assert "split 'train' uses 40" in out
    bundle = tmp_path / "bundle"
    ok(afrd("export", "onnx", str(tmp_path / "run" / "model.pt"), "--out", str(bundle),
            "--data", str(caps), "--split", "train"))  # fmt: skip
    ok(afrd("calibrate", "threshold", str(bundle), "--data", str(caps)))
    meta = json.loads((bundle / "bundle.json").read_text())
    threshold = meta["threshold"]["value"]
    assert meta["threshold"]["statistics"]["normal"]["n"] == 10, meta["threshold"]  # holdout
    assert "OK" in ok(afrd("config", "check", str(cfg)))
    # the line now runs parts of every kind
    cfg.write_text(cfg.read_text().replace("defect_rate = 0.0", "defect_rate = 0.5"))
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber([b"result.", b"status."])
        wait_subscribed(sub)
        for i in range(6):
            assert dm.ctl({"cmd": "trigger", "part_id": f"line-{i}"})["ok"]
        results = [json.loads(f[1]) for f in collect(sub, 6) if f[0].startswith(b"result.")]
    finally:
        assert dm.stop() == 0
    assert [r["part_id"] for r in results] == [f"line-{i}" for i in range(6)]
    assert {r["verdict"] for r in results} <= {"pass", "fail"}, results
    assert all(r["threshold"] == pytest.approx(threshold) for r in results)
    assert all(r["model"]["name"] == "bundle" for r in results)
