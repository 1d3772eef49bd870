"""The renderer: each defect type shows most under the lighting it is meant for, measured on
rendered pixels against the same part rendered without the defect; determinism; linearity."""

from __future__ import annotations

import time

import numpy as np
import pytest

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.data.render import (
    ALL_DEFECTS,
    CATEGORIES,
    DEFECTS,
    LAMPS,
    LIGHT_SETUPS,
    RING_LAMPS,
    render,
    render_linear,
    render_set,
    sample_part,
)

SIZE = 128
SEEDS = range(4)
SINGLE_RINGS = [name for name in DEFAULT_LIGHTS if name in RING_LAMPS]  # ring_bottom.. alone


def visibility(category: str, seed: int, defect: str) -> tuple[dict[str, float], object]:
    """Per lighting setup: how much the defect changes the 8-bit pixels inside its mask.

    Mean over the strongest quarter of the mask's pixels of |I(defective) - I(same part
    without the defect)| (noise-free, clipped to 0..255 as the camera would): a highlight or a
    scratch shows in part of its mask, a stain in all of it.
    """
    part = sample_part(category, seed, defect, SIZE)
    clean = sample_part(category, seed, None, SIZE)
    m = part.mask > 0
    assert m.sum() > 10, f"{category}/{seed}/{defect}: empty mask"
    out = {}
    for name, lamps in LIGHT_SETUPS.items():
        a = np.clip(render_linear(part, lamps), 0, 255)
        b = np.clip(render_linear(clean, lamps), 0, 255)
        d = np.sort(np.abs(a - b).mean(-1)[m])[::-1]
        out[name] = float(d[: max(1, len(d) // 4)].mean())
    return out, part


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECTS["geometric"])
def test_geometric_defects_show_under_a_raking_ring_light_not_the_box(category, defect):
    ring, box, ring_all = [], [], []
    for s in SEEDS:
        v, _ = visibility(category, s, defect)
        ring.append(max(v[k] for k in SINGLE_RINGS))
        box.append(v["box"])
        ring_all.append(v["ring_all"])
    # the best single raking lamp beats the diffuse box (and the symmetric ring_all, whose four
    # lamps cancel a tilt's first-order effect just as the box's do)
    assert np.mean(ring) > 1.2 * np.mean(box), (ring, box)
    assert np.mean(ring) > np.mean(ring_all), (ring, ring_all)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECTS["albedo"])
def test_albedo_defects_show_most_under_the_diffuse_box(category, defect):
    for s in SEEDS:
        v, _ = visibility(category, s, defect)
        others = max(val for k, val in v.items() if k != "box")
        assert v["box"] > others, (s, v)


@pytest.mark.parametrize("category", CATEGORIES)
def test_gloss_defects_show_under_their_specular_ring_light(category):
    spec, box = [], []
    for s in SEEDS:
        v, part = visibility(category, s, "gloss")
        spec.append(v[part.meta["specular_lamp"]])
        box.append(v["box"])
    # the light box's panels are never mirrored by the patch's normals, the raking lamp is
    assert np.mean(spec) > np.mean(box), (spec, box)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECTS["logical"])
def test_missing_or_misplaced_components_are_visible(category, defect):
    v, part = visibility(category, 1, defect)
    assert part.label == 1 and part.defect_type == "logical"
    assert v["box"] > 20 and max(v[k] for k in SINGLE_RINGS) > 20, v


@pytest.mark.parametrize("defect", ALL_DEFECTS)
def test_defect_changes_nothing_far_from_its_mask(defect):
    part = sample_part("plate", 2, defect, SIZE)
    clean = sample_part("plate", 2, None, SIZE)
    assert part.defect == defect and part.label == 1
    a = render_linear(part, LIGHT_SETUPS["box"])
    b = render_linear(clean, LIGHT_SETUPS["box"])
    import cv2

    far = cv2.dilate(part.mask, np.ones((3, 3), np.uint8), iterations=10) == 0
    assert np.abs(a - b).mean(-1)[far].max() < 3.0


def test_same_seed_renders_the_same_set_and_different_seeds_differ():
    a = render_set(sample_part("cookie", 5, "any", 64))
    b = render_set(sample_part("cookie", 5, "any", 64))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.mask, b.mask)
    assert a.lights == DEFAULT_LIGHTS and a.images.shape == (6, 64, 64, 3)
    c = render_set(sample_part("cookie", 6, "any", 64))
    assert np.abs(a.images.astype(int) - c.images).mean() > 5
    # sensor noise is there, and follows the rng
    d = render_set(sample_part("cookie", 5, "any", 64), rng=np.random.default_rng(1))
    assert not np.array_equal(a.images, d.images)
    assert np.abs(a.images.astype(int) - d.images).mean() < 5


def test_render_is_linear_in_lamp_intensity():
    part = sample_part("gummy", 3, "dent", 64)
    one = render_linear(part, {"ring_left": 0.7, "box_2": 0.3})
    split = 0.7 * render_linear(part, {"ring_left": 1.0}) + 0.3 * render_linear(
        part, {"box_2": 1.0}
    )
    np.testing.assert_allclose(one, split, rtol=1e-4, atol=1e-3)
    dark = render(part, {lamp: 0.0 for lamp in LAMPS})
    assert dark.dtype == np.uint8 and dark.max() == 0
    half = render(part, {"ring_top": 0.25}).astype(float)
    full = render(part, {"ring_top": 0.5}).astype(float)
    assert abs(full.mean() - 2 * half.mean()) < 1.0
    assert render(part, {"ring_top": 1.0}, size=(32, 48)).shape == (32, 48, 3)


def test_categories_differ_in_material_and_unknown_names_fail():
    assert len(CATEGORIES) >= 4
    ks = [float(np.percentile(sample_part(c, 0, None, 64).ks, 95)) for c in CATEGORIES]
    assert max(ks) > 5 * min(ks)  # glossy and matte materials
    with pytest.raises(ValueError, match="unknown category"):
        sample_part("nope", 0)
    with pytest.raises(ValueError, match="unknown defect"):
        sample_part("plate", 0, "crack")
    with pytest.raises(ValueError, match="unknown lamp"):
        render(sample_part("plate", 0, None, 32), {"sun": 1.0})


def test_render_speed_benchmark_print():
    """Not a timed test: prints ms per 256x256 six-light set, lamp precompute included."""
    for s in range(3):
        t0 = time.perf_counter()
        part = sample_part("button", s, "any", 256)
        t1 = time.perf_counter()
        images = render_set(part).images
        t2 = time.perf_counter()
        assert images.shape == (6, 256, 256, 3)
        print(f"sample_part {1e3 * (t1 - t0):.1f} ms, render_set {1e3 * (t2 - t1):.1f} ms")


def test_pose_modes_bound_rotation_and_shift():
    """fixtured +-4 deg, conveyor +-20 deg and +-4% shift, free any rotation; the pose mode only
    narrows the pose draw (the same seed is the same part)."""
    from afrd.data.render import POSES

    assert set(POSES) == {"fixtured", "conveyor", "free"}
    limits = {"fixtured": (4.0, 0.0075), "conveyor": (20.0, 0.04), "free": (180.0, 0.025)}
    for pose, (max_deg, max_shift) in limits.items():
        thetas = []
        for s in range(40):
            p = sample_part("plate", s, None, 32, pose).meta["pose"]
            deg = (np.degrees(p["theta"]) + 180) % 360 - 180
            thetas.append(deg)
            # tx, ty are in half-widths: a fraction of the image width is half of it
            assert max(abs(p["tx"]), abs(p["ty"])) / 2 <= max_shift + 1e-9, (pose, p)
        assert np.abs(thetas).max() <= max_deg + 1e-9, pose
        assert np.abs(thetas).max() > 0.6 * max_deg, pose  # and the range is used
    a = sample_part("gummy", 3, None, 64, "conveyor")
    b = sample_part("gummy", 3, None, 64, "fixtured")
    colour = [p.albedo[p.height > 2].mean(0) for p in (a, b)]  # the same colour drawn
    np.testing.assert_allclose(colour[0], colour[1], atol=0.02)
    assert abs(a.meta["pose"]["scale"] - b.meta["pose"]["scale"]) < 1e-9
