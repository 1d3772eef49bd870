"""The logical family no local model can see (afrd.data.logical_family, issue 27): labels, six
lights rendered, and every defect's components local-looking like good parts' components."""

from __future__ import annotations

import math

import numpy as np
import pytest

from afrd.data.datasets import open_dataset
from afrd.data.logical import defect_family
from afrd.data.logical_family import BAND_X, KINDS, PALETTE, ZONE_X, sample_family_part
from afrd.data.render import render_set
from afrd.data.synth_cli import main as synth_main
from afrd.errors import ConfigError

pytestmark = pytest.mark.timeout(120)
SIZE = 128


def _studs(part) -> list:
    return [tuple(c) for c in part.meta["components"]]


def _local(part) -> list:
    """Per stud what a window around it holds: (colour, distance to the nearest stud, distance
    to the plate's edge), in the part's own frame."""
    studs, (a, b) = _studs(part), part.meta["plate"]
    out = []
    for i, (x, y, c) in enumerate(studs):
        near = min(math.dist((x, y), o[:2]) for j, o in enumerate(studs) if j != i)
        out.append((c, near, min(a - abs(x), b - abs(y))))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_labels_rule_and_mask_per_kind(kind):
    for seed in range(6):
        good = sample_family_part("plate", seed, None, SIZE, "fixtured")
        bad = sample_family_part("plate", seed, kind, SIZE, "fixtured")
        assert (good.label, good.defect, good.mask.any()) == (0, None, False)
        assert (bad.label, bad.defect, bad.defect_type) == (1, kind, "logical")
        assert bad.mask.any()
        g, d = _studs(good), _studs(bad)
        assert len(g) == 4 and len({c for *_, c in g}) == 1
        assert all(ZONE_X[0] <= abs(x) <= ZONE_X[1] for x, *_ in g)
        if kind == "count":
            assert len(d) in (3, 5)
        else:
            assert len(d) == 4
        colours = [c for *_, c in d]
        odd_colour = [c for c in colours if colours.count(c) == 1]
        assert (len(set(colours)) == 2 and len(odd_colour) == 1) == (kind == "pairing")
        in_band = [x for x, *_ in d if abs(x) <= BAND_X]
        assert len(in_band) == (1 if kind == "layout" else 0)
        # every zone still holds one to three studs, as good parts' zones do
        for side in (-1, 1):
            assert 1 <= sum(1 for x, *_ in d if x * side >= ZONE_X[0]) <= 3


def test_every_defect_window_occurs_in_good_parts():
    """Colour, spacing to the nearest stud and distance to the edge of every defective part's
    studs lie within what good parts show: nothing a window sees is new."""
    good = [s for i in range(300) for s in _local(sample_family_part("plate", i, None, 32))]
    colours = {c for c, _, _ in good}
    near = (min(n for _, n, _ in good), max(n for _, n, _ in good))
    edge = (min(e for *_, e in good), max(e for *_, e in good))
    assert colours == set(range(len(PALETTE)))  # every paint occurs on good parts
    for kind in KINDS:
        for i in range(100, 130):
            for c, n, e in _local(sample_family_part("plate", i, kind, 32)):
                assert c in colours
                assert near[0] <= n and edge[0] <= e <= edge[1], (kind, i, n, e, near, edge)
                # a layout stud may sit farther from others than any good one: more bare plate
                assert n <= near[1] or kind == "layout"


def test_six_lights_rendered_and_defect_is_in_the_pixels():
    """Each defect is built into the part and rendered under all six lights (nothing pasted):
    six different images, the defect's studs lit in each."""
    for kind in KINDS:
        bad = sample_family_part("plate", 3, kind, 2 * SIZE, "conveyor")
        s = render_set(bad, size=SIZE, noise=False)
        assert s.images.shape == (6, SIZE, SIZE, 3) and s.label == 1
        assert s.meta["defect"] == kind and s.meta["defect_type"] == "logical"
        flat = s.images.reshape(6, -1).astype(np.int32)
        assert all(np.abs(flat[i] - flat[j]).mean() > 1 for i in range(6) for j in range(i))
        m = s.mask.astype(bool)
        assert m.any() and (~m).any()
        for img in s.images:  # a stud in the mask is lit: it is no hole in the image
            assert img[m].mean() > 5


def test_synth_logical_family_on_disk(tmp_path):
    rc = synth_main(
        ["--out", str(tmp_path), "--logical", "family", "--train", "2", "--val", "0"]
        + ["--test", "6", "--size", "32", "--defect-rate", "1", "--no-progress"]
    )
    assert rc == 0
    data = tmp_path / "plate" / "test_public" / "data"
    metas = sorted(data.glob("*_metadata.yaml"))
    assert len(metas) == 6 and not (tmp_path / "button").exists()
    for f in metas:
        text = f.read_text()
        assert "anomalous: 1" in text and "logical: 1" in text and "defect_type: logical" in text
        assert any(f"defect: {k}" in text for k in KINDS)
        stem = f.name.removesuffix("_metadata.yaml")
        assert (data / f"{stem}_logical_mask.png").is_file()
        assert len(list(data.glob(f"{stem}_image_*.png"))) == 6
    # a root that marks logical defects in metadata only (no per-type mask) is read as logical
    for f in data.glob("*_logical_mask.png"):
        f.unlink()
    sets = open_dataset(tmp_path, "test_public", category="plate")
    assert [defect_family(sets[i]) for i in range(len(sets))] == ["logical"] * 6
    with pytest.raises(ConfigError, match="gummy"):
        synth_main(["--out", str(tmp_path), "--logical", "family", "--categories", "gummy"])
