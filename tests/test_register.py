"""Registration to the reference pose: round trips on rendered parts (an asymmetric gummy, an
elongated plate and the round button whose holes, not its outline, fix its rotation), failures
that are RegistrationErrors, and the declared bundle step applied by a real ONNX Runtime engine."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _export_helpers import toy_onnx, toy_reference

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.data.register import Registration, png_bytes, register_set, warp_back
from afrd.data.register_fit import fit_registration
from afrd.data.render import render_set, sample_part
from afrd.errors import BundleError, RegistrationError
from afrd.runtime.bundle import Bundle, create_bundle
from afrd.runtime.engines import create_engine

SIZE = 128
C = (SIZE - 1) / 2.0


def _parts(category: str, seeds, pose: str = "conveyor"):
    return [render_set(sample_part(category, s, None, 2 * SIZE, pose), size=SIZE) for s in seeds]


_REGS: dict[str, Registration] = {}


def _registration(category: str) -> Registration:
    if category not in _REGS:
        _REGS[category] = fit_registration(
            _parts(category, range(12)), DEFAULT_LIGHTS, size=SIZE, method="content"
        )
    return _REGS[category]


def _moved(images: np.ndarray, angle: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """The set turned by ``angle`` deg about the frame centre and shifted; with that 3x3 map."""
    m = cv2.getRotationMatrix2D((C, C), angle, 1.0)
    m[:, 2] += (dx, dy)
    out = np.stack(
        [cv2.warpAffine(im, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101) for im in images]
    )
    return out, np.vstack([m, [0, 0, 1]])


# (category, rotational symmetry of the part in degrees: registrations that differ by it agree)
CASES = [("gummy", 360), ("plate", 180), ("button", 90)]


@pytest.mark.parametrize(("category", "symmetry"), CASES)
def test_a_turned_and_shifted_set_registers_back_within_1_degree_and_2_pixels(category, symmetry):
    reg = _registration(category)
    assert reg.light == "box"  # chosen by name: the light that shows the outline
    rng = np.random.default_rng(7)
    part_px = np.array([[40, 40, 1], [88, 40, 1], [64, 92, 1], [64, 64, 1]], float).T
    for seed in (100, 101, 102):
        iset = _parts(category, [seed])[0]
        angle, (dx, dy) = float(rng.uniform(-20, 20)), rng.uniform(-4, 4, 2)
        moved, m = _moved(iset.images, angle, dx, dy)
        r0 = reg.register(iset.images, iset.lights)
        r1 = reg.register(moved, iset.lights)
        # the moved set's rotation is the original's plus the known turn (mod the symmetry)
        d = (r1.angle_deg - r0.angle_deg - angle + symmetry / 2) % symmetry - symmetry / 2
        assert abs(d) < 1.0, (category, seed, angle, r0.angle_deg, r1.angle_deg)
        # and a point of the part lands where it did (up to the part's symmetry about the
        # reference centre): registered(moved(p)) == S_k registered(p)
        got = r1.matrix @ m @ part_px
        errs = []
        for k in range(360 // symmetry):
            s = np.vstack([cv2.getRotationMatrix2D((C, C), k * symmetry, 1.0), [0, 0, 1]])
            errs.append(np.abs(got - (s @ np.vstack([r0.matrix, [0, 0, 1]]) @ part_px)[:2]).max())
        assert min(errs) < 2.0, (category, seed, errs)
        assert r1.score > reg.min_score


def test_the_round_button_needs_its_content_the_outline_alone_does_not_register_it():
    """The principal axis of a round outline is noise: 'moments' turns buttons arbitrarily,
    'content' (polar correlation + ECC) brings their holes into line with the reference."""
    content = _registration("button")
    moments = fit_registration(_parts("button", range(12)), DEFAULT_LIGHTS, method="moments")
    sets = _parts("button", range(200, 206))
    ref = content.reference.astype(np.float32)

    def agreement(reg: Registration) -> float:
        out = []
        for s in sets:
            box = cv2.cvtColor(reg.register(s.images, s.lights).images[5], cv2.COLOR_RGB2GRAY)
            out.append(np.corrcoef(box.ravel(), ref.ravel())[0, 1])
        return float(np.mean(out))

    assert agreement(content) > agreement(moments) + 0.03


def test_auto_turns_parts_only_where_turning_aligns_them_and_leaves_fixtured_parts_alone():
    """An elongated plate on a belt is turned into line; a cookie, whose chips and wobbly outline
    have no fixed orientation, is only centred (turning it would just turn the light falling on
    it); fixtured parts are not resampled at all."""
    plate = fit_registration(_parts("plate", range(16)), DEFAULT_LIGHTS, method="auto")
    cookie = fit_registration(_parts("cookie", range(16)), DEFAULT_LIGHTS, method="auto")
    assert (plate.method, cookie.method) == ("content", "shift")
    fixtured = _parts("plate", range(16), pose="fixtured")
    assert fit_registration(fixtured, DEFAULT_LIGHTS, method="auto") is None
    s = _parts("cookie", [100])[0]
    moved, m = _moved(s.images, 0.0, 5.0, -3.0)
    r0, r1 = cookie.register(s.images, s.lights), cookie.register(moved, s.lights)
    assert abs(r0.angle_deg) < 1e-6 and abs(r1.angle_deg) < 1e-6
    np.testing.assert_allclose((r1.matrix @ m)[:, 2], r0.matrix[:, 2], atol=1.0)
    assert np.array_equal(r1.matrix[:, 2], np.round(r1.matrix[:, 2]))  # whole pixels


@pytest.mark.parametrize("fill", ["zeros", "noise", "flat grey"])
def test_a_set_without_a_part_is_a_registration_error(fill):
    reg = _registration("plate")
    rng = np.random.default_rng(0)
    images = {
        "zeros": np.zeros((6, SIZE, SIZE, 3), np.uint8),
        "noise": rng.normal(30, 2, (6, SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8),
        "flat grey": np.full((6, SIZE, SIZE, 3), 128, np.uint8),
    }[fill]
    with pytest.raises(RegistrationError, match="no part found"):
        reg.register(images, DEFAULT_LIGHTS)


def test_a_set_without_the_registration_light_is_a_registration_error():
    reg = _registration("plate")
    s = _parts("plate", [100])[0]
    with pytest.raises(RegistrationError, match="uses light 'box'"):
        reg.register(s.images[:5], s.lights[:5])


def test_a_part_that_matches_too_weakly_is_a_registration_error():
    reg = _registration("plate")
    strict = Registration(reg.light, reg.size, reg.reference, reg.max_angle, min_score=0.999)
    s = _parts("plate", [100])[0]
    with pytest.raises(RegistrationError, match="too weakly"):
        strict.register(s.images, s.lights)


def test_record_round_trip_and_the_mask_comes_back_with_warp_back():
    reg = _registration("gummy")
    again = Registration.from_dict(json.loads(json.dumps(reg.to_dict())))
    assert again.params() == reg.params()
    assert np.array_equal(again.reference, reg.reference)
    part = sample_part("gummy", 300, "bump", 2 * SIZE, "conveyor")
    s = render_set(part, size=SIZE)
    moved, _ = _moved(s.images, 15.0, 3.0, -2.0)
    mask, _ = _moved(np.repeat(s.mask[None, ..., None] * 255, 3, -1), 15.0, 3.0, -2.0)
    s = type(s)(images=moved, lights=s.lights, mask=(mask[0, ..., 0] > 127).astype(np.uint8))
    a, b = reg.register(s.images, s.lights), again.register(s.images, s.lights)
    assert np.array_equal(a.images, b.images)
    r = register_set(reg, s)
    assert r.mask.sum() > 10 and "registration" in r.meta
    # the registered mask, warped back, covers the captured mask (what the overlay relies on)
    back = warp_back(
        r.mask.astype(np.float32), np.array(r.meta["registration"]["matrix"]), (128, 128)
    )
    inter = ((back > 0.5) & (s.mask > 0)).sum()
    assert inter / s.mask.sum() > 0.8


# ----------------------------------------------------------------------------------------------
# The declared bundle step, applied by a real ONNX Runtime session


def _bundle(tmp_path, reg: Registration | None, size: int = 64) -> Bundle:
    out = tmp_path / ("registered" if reg else "plain")
    out.mkdir()
    toy_onnx(out / "model.onnx", len(DEFAULT_LIGHTS), size)
    extra, files = {}, []
    if reg is not None:
        (out / "registration.png").write_bytes(png_bytes(reg))
        extra = {
            "preprocessing": [{"step": "register", **reg.params(), "reference": "registration.png"}]
        }
        files = ["registration.png"]
    create_bundle(
        out,
        lights=DEFAULT_LIGHTS,
        input_size=(size, size),
        model={"teacher": "toy", "teacher_weights": "none", "fusion": "mean"},
        extra=extra,
        files=files,
    )
    return Bundle.load(out)


def test_a_bundle_with_the_step_registers_in_the_onnxruntime_engine_one_without_does_not(tmp_path):
    reg = _registration("gummy")
    plain, registered = _bundle(tmp_path, None), _bundle(tmp_path, reg)
    assert plain.registration is None
    assert registered.registration is not None
    assert registered.registration.params() == reg.params()
    assert "registration.png" in registered.meta["files"]
    s = _parts("gummy", [400])[0]
    moved, _ = _moved(s.images, -18.0, 4.0, 3.0)
    small = lambda x: np.stack([cv2.resize(i, (64, 64), interpolation=cv2.INTER_AREA) for i in x])  # noqa: E731
    r = reg.register(small(moved), s.lights)  # the engine registers at its input size
    with (
        create_engine("onnxruntime", plain) as e_plain,
        create_engine("onnxruntime", registered) as e_reg,
    ):
        m_plain, s_plain = e_plain.infer(moved)
        m_reg, s_reg = e_reg.infer(moved)
        # without the step: the graph on the frames as captured
        want_map, want_score = toy_reference(small(moved)[None])
        np.testing.assert_allclose(m_plain, want_map, atol=1e-5)
        # with it: the graph on the registered set, its map warped back onto the captured frame
        reg_map, reg_score = toy_reference(r.images[None])
        np.testing.assert_allclose(s_reg, reg_score, atol=1e-5)
        np.testing.assert_allclose(m_reg[0], warp_back(reg_map[0], r.matrix, (64, 64)), atol=1e-4)
        assert np.abs(m_reg - m_plain).max() > 0.05  # the step changed what the graph saw
        # a frame with no part: an error for the registered bundle, a score for the plain one
        blank = np.zeros((6, SIZE, SIZE, 3), np.uint8)
        assert np.isfinite(e_plain.infer(blank)[1]).all()
        with pytest.raises(RegistrationError):
            e_reg.infer(blank)


def test_the_reference_file_is_hashed_like_the_model(tmp_path):
    b = _bundle(tmp_path, _registration("plate"))
    (b.path / "registration.png").write_bytes(png_bytes(_registration("gummy")))
    with pytest.raises(BundleError, match="registration.png sha256 mismatch"):
        Bundle.load(b.path)


def test_an_unknown_preprocessing_step_is_refused(tmp_path):
    b = _bundle(tmp_path, None)
    b.meta["preprocessing"] = [{"step": "denoise"}]
    b.save()
    with pytest.raises(BundleError, match="cannot apply"):
        _ = Bundle.load(b.path).registration


# ----------------------------------------------------------------------------------------------
# End to end: afrd train --register records it, afrd eval and afrd-export apply it


@pytest.mark.slow
def test_train_eval_export_carry_the_registration_into_the_bundle(tmp_path, capsys):
    from afrd.cli import main as afrd
    from afrd.data.synth_cli import synth
    from afrd.export.onnx_export import export_onnx
    from afrd.model.checkpoint import load_checkpoint, registration_of

    data = synth(tmp_path / "data", ["gummy"], 6, 0, 4, size=64, progress=False, pose="conveyor")
    run = tmp_path / "run"
    common = ["--data", str(data), "--category", "gummy"]
    rc = afrd(
        [
            "train",
            *common,
            "--no-progress",
            "--teacher",
            "efficientnet_lite0",
            "--teacher-weights",
            "random",
        ]
        + ["--fusion", "mean", "--epochs", "1", "--image-size", "64", "--out", str(run)]
        + ["--register", "auto", "--norm-split", "none"]
    )
    assert rc == 0
    _, cfg = load_checkpoint(run / "model.pt")
    reg = registration_of(cfg)
    assert reg is not None and reg.light == "box" and reg.method == "content"  # gummy: turned
    assert afrd(["eval", str(run / "model.pt"), *common, "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    bundle = export_onnx(run / "model.pt", tmp_path / "bundle", data=data, echo=False)
    step = bundle.meta["preprocessing"][0]
    assert step["step"] == "register" and step["reference"] == "registration.png"
    assert "registration.png" in bundle.meta["files"]
    assert np.array_equal(bundle.registration.reference, reg.reference)
    s = _parts("gummy", [500])[0]
    with create_engine("onnxruntime", bundle) as engine:
        maps, scores = engine.infer(s.images)
        assert maps.shape == (1, 64, 64) and np.isfinite(scores).all()
        with pytest.raises(RegistrationError):
            engine.infer(np.zeros_like(s.images))


def test_shift_registration_scores_a_part_alike_at_every_turn_and_refuses_another_product():
    """``shift`` does not turn parts, so its match score must not depend on their turn (a
    content score did: good buttons at free pose fell under the fitted gate), and a part of
    another product must still score below every good one."""
    reg = fit_registration(
        _parts("button", range(16), pose="free"), DEFAULT_LIGHTS, size=SIZE, method="shift"
    )
    good = _parts("button", range(100, 104), "free")
    for s in good:
        turned = [reg.register(_moved(s.images, a, 0, 0)[0], s.lights).score for a in (0, 60, 135)]
        assert max(turned) - min(turned) < 0.05, turned
        assert min(turned) > reg.min_score
    scores = [reg.register(s.images, s.lights).score for s in good]
    gray = [s.images[DEFAULT_LIGHTS.index(reg.light)].mean(-1) for s in _parts("gummy", range(8))]
    other = [reg.estimate(g.astype(np.float32))[1] for g in gray]
    assert max(other) < min(scores), (max(other), min(scores))
