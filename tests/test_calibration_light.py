"""Flat-field/dark and exposure calibration: synthetic vignetting, the simulated cell, the CLIs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from afrd.acquire.camera import WHITE_TARGET
from afrd.calibration import exposure as E
from afrd.calibration import flatfield as F
from afrd.calibration.flatfield import FlatField
from afrd.errors import ConfigError, DataError
from afrd.sim.cell import SimCell

N = 48


def vignette(n: int = N, strength: float = 0.5) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    r2 = ((x - n / 2) ** 2 + (y - n / 2) ** 2) / (n / 2) ** 2
    return (1 - strength * r2 / 2)[..., None].repeat(3, -1)


def test_flatfield_removes_synthetic_vignetting_and_dark():
    rng = np.random.default_rng(0)
    v = vignette()
    dark = (8 + 4 * rng.random((N, N, 3))).astype(np.float32)  # fixed-pattern offset
    white = np.clip(200 * v + dark, 0, 255).astype(np.uint8)
    ff = FlatField.from_captures({"L": [white, white]}, {"L": np.rint(dark).astype(np.uint8)})
    scene = rng.integers(40, 200, (N, N, 3)).astype(np.float32)
    raw = np.clip(scene * v + dark, 0, 255).astype(np.uint8)
    out = ff.correct("L", raw).astype(np.float32)
    ratio_out = out / scene
    ratio_raw = (raw - dark) / scene
    # raw: the scene is attenuated up to 50 % towards the corners; corrected: uniform
    assert ratio_raw.min() / ratio_raw.max() < 0.6
    k = ratio_out.mean()
    assert np.abs(out - scene * k).max() <= 2.0  # only 8-bit rounding left
    assert np.abs((raw - dark) - scene * ratio_raw.mean()).max() > 20
    # the corrected white target is flat
    flat = ff.correct("L", white).mean(-1)
    assert flat.min() / flat.max() > 0.97
    # an uncalibrated light passes through untouched
    assert ff.correct("other", raw) is raw
    s = ff.meta["stats"]["L"]
    assert s["uniformity_min_over_max"] < 0.6 and s["gain_max"] > 1.3


def test_flatfield_refuses_bad_targets():
    with pytest.raises(DataError, match="'L' reads .* DN above dark"):
        FlatField.from_captures({"L": np.full((N, N, 3), 3, np.uint8)})
    with pytest.raises(DataError, match="'L' is saturated"):
        FlatField.from_captures({"L": np.full((N, N, 3), 255, np.uint8)})
    with pytest.raises(DataError, match="HxWx3"):
        FlatField.from_captures({"L": np.zeros((N, N), np.uint8)})


def test_flatfield_file_roundtrip_and_errors(tmp_path):
    white = np.clip(200 * vignette(), 0, 255).astype(np.uint8)
    ff = FlatField.from_captures({"a": white, "b": white})
    p = ff.save(tmp_path / "ff.npz")
    back = FlatField.load(p, expect_lights=["a", "b"])
    np.testing.assert_array_equal(back.gains["a"], ff.gains["a"])
    np.testing.assert_array_equal(back.correct("b", white), ff.correct("b", white))
    with pytest.raises(ConfigError, match=r"ff.npz: no calibration for lights \['c'\]"):
        FlatField.load(p, expect_lights=["a", "c"])
    with pytest.raises(ConfigError, match="cannot read"):
        FlatField.load(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match=r"calibrated at \(48, 48, 3\), frame is \(32, 32, 3\)"):
        back.correct("a", np.zeros((32, 32, 3), np.uint8))


def test_flatfield_cli_on_sim_cell_flattens_ring_lamps(tmp_path):
    assert F.main(["--sim", "--out", str(tmp_path), "--image-size", str(N), "--frames", "2"]) == 0
    report = json.loads((tmp_path / "flatfield.json").read_text())
    assert report["stats"]["ring_bottom"]["uniformity_min_over_max"] < 0.8  # real fall-off
    ff = FlatField.load(tmp_path / "flatfield.npz")
    with SimCell(size=N) as cell:
        raw = cell.sequencer().acquire(WHITE_TARGET)
        cor = cell.sequencer(corrections=ff).acquire(WHITE_TARGET)
    for k, light in enumerate(raw.lights):
        r, c = raw.images[k].mean(-1), cor.images[k].mean(-1)
        assert c.min() / c.max() > 0.97, light
        assert abs(c.mean() - r.mean()) < 1.5, light  # level kept
    assert raw.images[1].mean(-1).min() / raw.images[1].mean(-1).max() < 0.8


def test_flatfield_cli_on_a_cell_config_needs_its_controller(tmp_path, capsys):
    """--config opens the devices the config names (the device factory), writes beside it, and
    refuses to go on without the lighting controller (the daemon would wait for it)."""
    from afrd.sim.launch import write_config

    cfg = write_config(tmp_path, tmp_path / "no-bundle-needed", size=N)
    assert F.main(["--config", str(cfg), "--frames", "1", "--lights", "box,ring_top"]) == 0
    assert FlatField.load(tmp_path / "flatfield.npz").lights == ("box", "ring_top")
    lost = tmp_path / "lost"
    lost.mkdir()
    cfg = write_config(lost, tmp_path, controller=f'kind = "gardasoft"\nport = "{lost}/ttyNONE"')
    assert F.main(["--config", str(cfg), "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot open lighting controller port" in err and "ttyNONE" in err


def test_flatfield_cli_from_folder(tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    v = vignette()
    for i in range(2):
        cv2.imwrite(str(src / f"ring_top_{i}.png"), np.clip(180 * v + 5, 0, 255).astype(np.uint8))
    cv2.imwrite(str(src / "box.png"), np.full((N, N, 3), 120, np.uint8))
    cv2.imwrite(str(src / "dark.png"), np.full((N, N, 3), 5, np.uint8))
    assert F.main(["--images", str(src), "--out", str(tmp_path / "o")]) == 0
    ff = FlatField.load(tmp_path / "o" / "flatfield.npz")
    assert set(ff.lights) == {"ring_top", "box"}
    assert ff.darks["box"].mean() == pytest.approx(5)
    rc = F.main(["--images", str(src), "--out", str(tmp_path / "o"), "--lights", "ring_left"])
    assert rc == 2
    assert "no white-target image for light 'ring_left'" in capsys.readouterr().err


def test_search_converges_on_a_linear_sensor_and_reports_limits():
    scene = np.random.default_rng(1).uniform(0.3, 0.7, (N, N, 3))

    def shoot(x: float) -> np.ndarray:
        return np.clip(np.rint(scene * x * 0.2), 0, 255).astype(np.uint8)

    r = E.search(shoot, 1000, 128, 10, 100_000)
    assert r["converged"] and abs(r["grey"] - 128) <= 2 and r["iterations"] <= 4
    r = E.search(shoot, 50_000, 128, 10, 100_000)  # starts saturated
    assert r["converged"]
    r = E.search(shoot, 100, 128, 10, 500)  # cannot reach: pinned at the max
    assert not r["converged"] and r["value"] == 500


def test_exposure_cli_on_sim_cell_then_sequencer_hits_target(tmp_path):
    rc = E.main(["--sim", "--out", str(tmp_path), "--image-size", str(N), "--target", "150"])
    assert rc == 0
    exposures = E.load_exposures(tmp_path / "exposure.json")
    assert exposures["ring_bottom"] > exposures["box"]  # a single ring lamp is dimmer
    with SimCell(size=N) as cell:
        s = cell.sequencer(exposures=exposures).acquire(WHITE_TARGET)
    for k, light in enumerate(s.lights):
        assert abs(E.grey_level(s.images[k]) - 150) <= 2, light


def test_exposure_level_knob(tmp_path, capsys):
    rc = E.main(
        [
            "--sim",
            "--out",
            str(tmp_path),
            "--image-size",
            str(N),
            "--knob",
            "level",
            "--target",
            "50",
            "--lights",
            "ring_top,box",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "exposure.json").read_text())
    box = report["lights"]["box"]
    assert box["level_scale"] < 1 and abs(box["grey"] - 50) <= 2
    assert {c["channel"] for c in box["channels"]} == {5, 6, 7, 8}
    assert 'name = "box"' in capsys.readouterr().out
    with pytest.raises(ConfigError, match="copy its channel levels"):
        E.load_exposures(tmp_path / "exposure.json")
