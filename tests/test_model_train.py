"""Training end to end on generated multi-light sets: loss falls, defects light up, resume,
checkpoints rebuild the model, and the inference graph exports to ONNX with a dynamic batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_helpers import make_sets

from afrd.errors import ConfigError
from afrd.model.checkpoint import load_checkpoint, read_checkpoint
from afrd.model.inference import InferenceModel
from afrd.model.presets import get_preset
from afrd.model.sets import resize_set
from afrd.model.train import TrainConfig, build_parser, config_from_args, train
from afrd.model.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 64


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = {
        "out": str(tmp_path / "run"),
        "teacher": "efficientnet_lite0",
        "teacher_weights": "random",
        "fusion": "attention-pooled",
        "epochs": 2,
        "image_size": SIZE,
        "batch_size": 4,
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["attention", "restore-max"])
def test_end_to_end_loss_falls_and_defect_lights_up(tmp_path, fusion: str) -> None:
    """Real (packaged) Lite0 ImageNet weights: a random teacher gives too weak a signal
    to assert on after 20 epochs of 16 sets."""
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, teacher_weights=None, fusion=fusion, epochs=20, lr=2e-3, batch_size=8)
    path = train(cfg, sets=make_sets(16, SIZE))
    blob = read_checkpoint(path)
    losses = [h["loss"] for h in blob["history"]]
    assert len(losses) == 20
    assert losses[-1] < 0.8 * losses[0]
    model, config = load_checkpoint(path)
    assert config["teacher_weights_source"] == "imagenet:efficientnet-lite0-57934424.pth"
    infer = InferenceModel(model)
    bad = make_sets(6, SIZE, defect=True, seed0=100)
    with torch.no_grad():
        maps, _ = infer(torch.from_numpy(np.stack([resize_set(s, SIZE) for s in bad])))
    inside = [float(m[s.mask > 0].mean()) for s, m in zip(bad, maps.numpy(), strict=True)]
    outside = [float(m[s.mask == 0].mean()) for s, m in zip(bad, maps.numpy(), strict=True)]
    assert np.mean(inside) > 1.03 * np.mean(outside), (inside, outside)
    assert sum(i > o for i, o in zip(inside, outside, strict=True)) >= 5


def test_resume_matches_uninterrupted_run(tmp_path) -> None:
    sets = make_sets(8, SIZE)
    full = train(_cfg(tmp_path / "a", epochs=3), sets=sets)
    train(_cfg(tmp_path / "b", epochs=2), sets=sets)
    resumed = train(_cfg(tmp_path / "b", epochs=3, resume=True), sets=sets)
    a, b = read_checkpoint(full), read_checkpoint(resumed)
    assert b["epoch"] == 3 and len(b["history"]) == 3
    assert [h["loss"] for h in b["history"]] == pytest.approx(
        [h["loss"] for h in a["history"]], rel=1e-4
    )
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    with pytest.raises(ConfigError, match="fusion"):
        train(_cfg(tmp_path / "b", epochs=4, fusion="mean", resume=True), sets=sets)


def _labelled_sets() -> list:
    sets = make_sets(7, SIZE) + make_sets(1, SIZE, defect=True, seed0=50)
    for s in sets:
        s.label = int(s.mask is not None and s.mask.any())
    return sets


def test_cached_batches_equal_the_teachers_batch_by_batch(tmp_path) -> None:
    """Same shuffled order per epoch, the defective set dropped on both paths, same maps."""
    from afrd.model.distill.feature_cache import training_batches
    from afrd.model.distill.network import AFRD
    from afrd.model.sets import SetDataset

    sets = _labelled_sets()
    ds = SetDataset(sets, SIZE, None, normal_only=True)
    model = AFRD("efficientnet_lite0", "mean", 6, SIZE, None)
    cpu = torch.device("cpu")
    fresh = training_batches(model, ds, cpu, "off", 3, 0, 0, tmp_path)
    cached = training_batches(model, ds, cpu, "ram", 3, 0, 0, tmp_path)
    sizes = []
    for epoch in range(2):
        pairs = list(zip(fresh(epoch), cached(epoch), strict=True))
        sizes.append([len(a[0]) for a, _ in pairs])
        for a, b in pairs:
            for u, v in zip(a, b, strict=True):
                torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-4)
    assert [sum(s) for s in sizes] == [7, 7] and sizes[0] != [3, 3, 2]  # shuffled, one dropped


@pytest.mark.parametrize("where", ["ram", "disk"])
def test_feature_cache_trains_like_the_teacher_every_step(tmp_path, where: str, capsys) -> None:
    """train() on cached maps gives the uncached losses and weights. The teacher's maps differ
    in the last float bits with the batch they ran in, and Adam turns near-zero gradients into
    +-lr steps whatever their sign noise, so the exact comparison runs at lr 0 (every step's
    loss, BatchNorm statistics) and a training one agrees within 1% after 2 epochs."""
    sets = _labelled_sets()
    kw = {"epochs": 2, "fusion": "attention", "batch_size": 3, "norm_split": None}
    kw["teacher_weights"] = None  # ImageNet Lite0: random maps are ~1e-5, cosines ill-posed
    runs = {}
    for lr in (0.0, 4e-4):
        for mode in ("off", where):
            cfg = _cfg(tmp_path / f"{mode}{lr}", feature_cache=mode, lr=lr, **kw)
            runs[mode, lr] = read_checkpoint(train(cfg, sets=sets))
    log = capsys.readouterr().out
    assert "feature cache off (as asked)" in log and f"feature cache in {where}" in log
    assert not (tmp_path / f"{where}0.0" / "run" / "feature_cache").exists()  # disk copy gone
    ref, got = runs["off", 0.0], runs[where, 0.0]
    assert [h["loss"] for h in got["history"]] == pytest.approx(
        [h["loss"] for h in ref["history"]], rel=1e-5
    )
    for k, v in ref["model"].items():
        torch.testing.assert_close(v, got["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    ref, got = runs["off", 4e-4], runs[where, 4e-4]
    losses = [h["loss"] for h in ref["history"]]
    assert losses[1] < losses[0]
    assert [h["loss"] for h in got["history"]] == pytest.approx(losses, rel=1e-2)


def test_preset_fills_defaults_and_explicit_flags_win(tmp_path) -> None:
    args = ["--data", str(tmp_path), "--category", "plate", "--preset", "afrd-cpu"]
    cfg = config_from_args(build_parser().parse_args([*args, "--epochs", "3", "--lr", "1e-3"]))
    assert (cfg.teacher, cfg.image_size, cfg.fusion) == ("efficientnet_lite0", 128, "attention")
    assert (cfg.epochs, cfg.lr, cfg.steps) == (3, 1e-3, None)  # explicit epochs drop its steps
    assert config_from_args(build_parser().parse_args(args)).steps == 512
    assert cfg.extra == {"preset": "afrd-cpu"} and cfg.category == "plate"
    # what a user without a GPU gets: the memory bank, registered to the reference pose
    assert get_preset("cpu").model == "memory" and get_preset("afrd-cpu").model == "afrd"
    cpu = config_from_args(build_parser().parse_args([*args[:-1], "cpu"]))
    assert (cpu.teacher, cpu.image_size, cpu.register) == ("efficientnet_lite0", 256, "auto")
    assert cpu.memory_scales == (1, 2)  # the bank looks at 256 and 128 px
    with pytest.raises(ConfigError, match="--memory-scales applies to --model memory only"):
        train_main([*args, "--memory-scales", "1,2"])
    paper = config_from_args(build_parser().parse_args([*args[:-1], "paper"]))
    assert (paper.teacher, paper.image_size, paper.lr) == ("wide_resnet50_2", 256, 4e-4)
    assert (paper.batch_size, paper.epochs, paper.fusion) == (8, 100, "attention")
    plain = config_from_args(build_parser().parse_args(args[:4] + ["--image-size", "64"]))
    assert plain.teacher == TrainConfig().teacher and plain.image_size == 64
    assert (plain.register, plain.steps) == ("none", None)
    text = " ".join(build_parser().format_help().split())
    assert "afrd-cpu: efficientnet_lite0" in text and "paper: 0.0004" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args[:-1], "gpu"])


def test_steps_set_the_epochs_from_the_number_of_sets(tmp_path, capsys) -> None:
    blob = read_checkpoint(train(_cfg(tmp_path, steps=5, norm_split=None), sets=make_sets(7, SIZE)))
    assert blob["epoch"] == 3 and blob["config"]["epochs"] == 3  # 2 batches of 4 per epoch
    assert "5 steps = 3 epochs of 2 batches" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="steps"):
        train(_cfg(tmp_path, steps=0), sets=make_sets(2, SIZE))


def test_checkpoint_carries_config_and_rebuilds_model(tmp_path) -> None:
    sets = make_sets(4, SIZE)
    path = train(_cfg(tmp_path, epochs=1, loss="flat", seed=3), sets=sets)
    model, cfg = load_checkpoint(path)
    assert cfg["lights"] == sets[0].lights
    assert cfg["teacher"] == "efficientnet_lite0" and cfg["teacher_weights_source"] == "random"
    assert cfg["fusion"] == "attention-pooled" and cfg["loss"] == "flat"
    assert cfg["image_size"] == SIZE and cfg["seed"] == 3 and cfg["epochs"] == 1
    assert cfg["data_summary"]["sets"] == 4
    x = torch.from_numpy(np.stack([resize_set(s, SIZE) for s in sets[:2]]))
    model2, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(InferenceModel(model)(x), InferenceModel(model2)(x))
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_inference_model_exports_to_onnx_with_dynamic_batch(tmp_path) -> None:
    import onnxruntime as ort

    from afrd.model.distill.network import AFRD

    torch.manual_seed(0)
    infer = InferenceModel(AFRD("efficientnet_lite0", "restore-max", 3, SIZE, "random")).eval()
    x = torch.randint(0, 256, (2, 3, SIZE, SIZE, 3), dtype=torch.uint8)
    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(
        infer,
        (x,),
        str(onnx_path),
        input_names=["images"],
        output_names=["map", "score"],
        dynamo=False,
        dynamic_axes={"images": {0: "b"}, "map": {0: "b"}, "score": {0: "b"}},
    )
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x3 = torch.randint(0, 256, (3, 3, SIZE, SIZE, 3), dtype=torch.uint8)
    got_map, got_score = sess.run(None, {"images": x3.numpy()})
    with torch.no_grad():
        ref_map, ref_score = infer(x3)
    assert got_map.shape == (3, SIZE, SIZE) and got_score.shape == (3,)
    np.testing.assert_allclose(got_map, ref_map.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_score, ref_score.numpy(), atol=1e-4)


@pytest.mark.slow
def test_cli_train_and_eval_on_rendered_eyecandies_layout(tmp_path, capsys) -> None:
    """`afrd train` / `afrd eval` through afrd.data: a rendered dataset in the Eyecandies layout."""
    import afrd.data.synth_cli as synth
    from afrd.cli import main as afrd

    cat = list(synth.CATEGORIES)[0]
    synth.synth(
        tmp_path / "data", [cat], n_train=4, n_test=4, size=64, defect_rate=0.5, progress=False
    )
    run = tmp_path / "run"
    rc = afrd(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--category",
            cat,
            "--teacher",
            "efficientnet_lite0",
            "--teacher-weights",
            "random",
            "--fusion",
            "mean",
            "--epochs",
            "1",
            "--image-size",
            "64",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "weights random" in out and "feature cache in ram" in out
    assert "train wall time:" in out
    _, cfg = load_checkpoint(run / "model.pt")
    assert cfg["data_summary"]["sets"] == 4 and cfg["category"] == cat
    rc = afrd(
        [
            "eval",
            str(run / "model.pt"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert cat in out and "I-AUROC" in out
    assert (tmp_path / "eval" / f"grid_{cat}.png").is_file()
    rc = afrd(
        [
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--teacher",
            "efficientnet_lite0",
            "--out",
            str(run),
        ]
    )
    assert rc == 2
    assert "nowhere" in capsys.readouterr().err
    rc = afrd(["train", "--data", str(tmp_path / "ds"), "--teacher", "random", "--out", str(run)])
    assert rc == 2
    assert "--teacher-weights random" in capsys.readouterr().err
