"""Calibration reaches every part: the simulated camera's vignetting and black level are what a
flat-field calibrated on it removes (corrected frames equal the clean render), the daemon
applies the config's flatfield/exposure files to each grab, and `afrd config check` refuses
calibration files that do not fit the cell (frame shape, lights, camera)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    Daemon,
    collect,
    make_brightness_bundle,
    wait_subscribed,
    write_config,  # noqa: E402
)

from afrd.acquire.camera import WHITE_TARGET  # noqa: E402
from afrd.acquire.correction import FlatField  # noqa: E402
from afrd.acquire.devices import Devices  # noqa: E402
from afrd.acquire.sequencer import Setup  # noqa: E402
from afrd.calibration.cli import main as calibrate_main  # noqa: E402
from afrd.calibration.flatfield import capture_flatfield  # noqa: E402
from afrd.config.cell import load_config  # noqa: E402
from afrd.config.recipes import check_opened_camera, recipe_specs  # noqa: E402
from afrd.daemon.config_check import check  # noqa: E402
from afrd.errors import ConfigError  # noqa: E402
from afrd.sim.config import (  # noqa: E402
    SimCameraConfig,
    SimControllerConfig,
    sim_lighting_conditions,
)

SIZE = 32
CONDS = sim_lighting_conditions()
SENSOR = {"vignetting": 0.4, "dark_offset": 12.0}


def _image(part: str, flatfield: bool, **sensor) -> np.ndarray:
    """``part`` through the real devices and sequencer, corrected by a flat-field calibrated
    on the same camera when asked; float [N, H, W, 3]."""
    camera = SimCameraConfig(size=SIZE, seed=3, defect_rate=0.5, **sensor)  # as write_config
    with Devices(camera, SimControllerConfig()) as d:
        ff = None
        if flatfield:
            d.camera.start_part(WHITE_TARGET)
            ff = FlatField.from_captures(*capture_flatfield(d.controller, d.camera, CONDS, 1))
        return d.sequencer(CONDS).acquire(part, "p", Setup(CONDS, ff)).images.astype(float)


def test_corrected_sim_image_equals_the_uncorrected_render():
    render = _image("p1", flatfield=False)  # no vignetting, no black level: the renderer's
    raw = _image("p1", flatfield=False, **SENSOR)
    corrected = _image("p1", flatfield=True, **SENSOR)
    clean_corrected = _image("p1", flatfield=True)  # the lamps' own fall-off removed too
    assert np.abs(raw - render).mean() > 8.0  # the sensor effects are there
    # the flat-field removes them: what is left equals the clean camera's corrected frames
    diff = np.abs(corrected - clean_corrected)
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3.0, (diff.mean(), diff.max())
    # under the lights that light a flat target evenly it is the render itself
    for i, c in enumerate(CONDS):
        if c.name in ("ring_all", "box"):
            assert np.abs(corrected[i] - render[i]).mean() < 0.5, c.name


def _brightness(images: np.ndarray) -> float:
    """The brightness bundle's score: max over pixels of the mean over lights and colours."""
    return float((images / 255.0).mean(axis=(0, 3)).max())


def test_the_daemon_applies_the_configured_flatfield_and_reload_changes_it(tmp_path):
    make_brightness_bundle(tmp_path / "b", SIZE, threshold=0.9)
    cfg = write_config(
        tmp_path,
        tmp_path / "b",
        size=SIZE,
        heatmaps=False,
        camera="seed = 3\nvignetting = 0.4\ndark_offset = 12.0",
        extra='flatfield = "ff.npz"',
    )
    assert calibrate_main(["flatfield", "--config", str(cfg), "--name", "ff.npz"]) == 0
    meta = json.loads((tmp_path / "ff.json").read_text())
    assert meta["camera"] == {"kind": "sim", "serial": None} and meta["shape"] == [SIZE, SIZE, 3]
    assert check(str(cfg)) == []
    dm = Daemon(cfg).start()
    try:
        sub = dm.subscriber([b"result.", b"status."])
        wait_subscribed(sub)
        assert dm.ctl({"cmd": "trigger", "part_id": "p1"})["ok"]
        cfg.write_text(cfg.read_text().replace('flatfield = "ff.npz"', ""))
        assert dm.ctl({"cmd": "reload"})["ok"]
        assert dm.ctl({"cmd": "trigger", "part_id": "p1"})["ok"]
        scores = [json.loads(f[1])["score"] for f in collect(sub, 2) if f[0][:7] == b"result."]
    finally:
        assert dm.stop() == 0
    clean = _brightness(_image("p1", flatfield=True))
    raw = _brightness(_image("p1", flatfield=False, **SENSOR))
    assert abs(raw - clean) > 0.05  # vignetting brightens the centre: the score shows it
    # calibrated: as the clean camera, up to the few centre pixels the vignetting saturated
    # (their clipped highlights cannot be restored; the score is the brightest pixel)
    assert scores[0] == pytest.approx(clean, abs=0.02)
    assert scores[1] == pytest.approx(raw, abs=1e-4)  # after the reload dropped it: raw


def test_config_check_refuses_calibration_files_that_do_not_fit(tmp_path):
    make_brightness_bundle(tmp_path / "b", SIZE)
    cfg = write_config(tmp_path, tmp_path / "b", size=SIZE, extra='flatfield = "ff.npz"')
    base = cfg.read_text()

    def problems(text: str) -> str:
        cfg.write_text(text)
        return "\n".join(check(str(cfg), bundle=True))

    assert "ff.npz: no such file (run `afrd calibrate flatfield`)" in problems(base)
    # made at another frame size
    sim64 = ["--sim", "--image-size", "64", "--out", str(tmp_path)]
    assert calibrate_main(["flatfield", *sim64, "--name", "ff.npz"]) == 0
    assert "calibrated at frame shape [64, 64, 3], the camera delivers [32, 32, 3]" in problems(
        base
    )
    # the right size but not every light the bundle uses
    sim32 = ["--sim", "--image-size", "32", "--out", str(tmp_path)]
    assert calibrate_main(["flatfield", *sim32, "--name", "ff.npz", "--lights", "box"]) == 0
    msg = problems(base)
    assert "has no calibration for lights ['ring_all'" in msg and "bundle uses" in msg
    # made with another camera
    assert calibrate_main(["flatfield", *sim32, "--name", "ff.npz"]) == 0
    assert problems(base) == ""
    ff = FlatField.load(tmp_path / "ff.npz")
    ff.meta["camera"] = {"kind": "genicam", "serial": "21345678"}
    ff.save(tmp_path / "ff.npz")
    assert "made with a 'genicam' camera, the cell's camera is 'sim'" in problems(base)
    # a serial the config cannot know (it picks the camera by model): checked once it is open
    ff.meta["camera"] = {"kind": "sim", "serial": "A-1"}
    ff.save(tmp_path / "ff.npz")
    assert problems(base) == ""
    specs = recipe_specs(load_config(cfg))
    check_opened_camera(specs, {"kind": "sim", "serial": "A-1"})
    with pytest.raises(ConfigError, match="serial 'A-1', the camera opened is 'B-2'"):
        check_opened_camera(specs, {"kind": "sim", "serial": "B-2"})
    # exposure files: missing a light, and on the sim cell (no exposure control needed)
    assert calibrate_main(["exposure", *sim32, "--lights", "box,ring_all"]) in (0, 1)
    text = base.replace('flatfield = "ff.npz"', 'exposure = "exposure.json"')
    assert "has no exposure for lights ['ring_bottom'" in problems(text)
    assert calibrate_main(["exposure", *sim32]) in (0, 1)
    assert problems(text) == ""


def test_a_product_is_calibrated_under_its_own_lighting_levels(tmp_path, capsys):
    make_brightness_bundle(tmp_path / "b", SIZE)
    cfg = write_config(tmp_path, tmp_path / "b", size=SIZE)
    dim = ", ".join(f"{{channel = {c}, level = 20.0}}" for c in (5, 6, 7, 8))
    product = f'[[product]]\nname = "dim"\n[[product.lighting]]\nname = "box"\nchannels = [{dim}]\n'
    cfg.write_text(cfg.read_text() + "\n" + product)
    base = ["flatfield", "--config", str(cfg), "--lights", "box,ring_all"]
    assert calibrate_main([*base, "--name", "cell.npz"]) == 0
    assert calibrate_main([*base, "--name", "dim.npz", "--product", "dim"]) == 0
    assert calibrate_main([*base, "--name", "x.npz", "--product", "nope"]) == 2
    assert "--product 'nope': no such [[product]]" in capsys.readouterr().err
    cell = json.loads((tmp_path / "cell.json").read_text())["stats"]
    dimmed = json.loads((tmp_path / "dim.json").read_text())["stats"]
    # the product's box lamps at 20 % of what the cell's are at; ring_all is not re-levelled
    level = load_config(cfg).condition("box").channels[0].level
    want = 20.0 / level * cell["box"]["white_mean_dn"]
    assert dimmed["box"]["white_mean_dn"] == pytest.approx(want, rel=0.05, abs=1.0)
    assert dimmed["ring_all"]["white_mean_dn"] == cell["ring_all"]["white_mean_dn"]
