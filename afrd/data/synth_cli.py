"""``afrd synth``: render synthetic multi-light parts in the Eyecandies on-disk layout.

The same loader (``afrd.data.eyecandies``) then reads them; output is deterministic for a seed.
Per sample: ``<id>_image_0..5.png`` (lights in Eyecandies order), ``<id>_metadata.yaml``
(``anomalous``, category, defect, defect_type, seed), ``<id>_mask.png`` (union, 0/255) and for a
defective sample ``<id>_<type>_mask.png`` (geometric/albedo/gloss/logical), ``<id>_depth.png``
(16-bit height in 1/100 px) and ``<id>_normals.png``. ``--logical family`` renders the logical
family no local model can see instead (afrd.data.logical_family; metadata ``logical: 1``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from afrd.data.lights import DEFAULT_LIGHTS, EYECANDIES_FILES
from afrd.data.logical import LOGICAL_FOR
from afrd.data.logical_family import FAMILY_CATEGORIES, KINDS, sample_family_part
from afrd.data.render import CATEGORIES, DEFECTS, POSES, render_set, sample_part
from afrd.data.shading import _normals
from afrd.errors import ConfigError

_SPLIT_INDEX = {"train": 0, "val": 1, "test_public": 2, "test_private": 3}


def sample_seed(seed: int, category: str, split: str, index: int) -> int:
    """The part seed of sample ``index``: independent streams per category and split."""
    ss = np.random.SeedSequence([seed, CATEGORIES.index(category), _SPLIT_INDEX[split], index])
    return int(ss.generate_state(1)[0])


def plan_defect(seed: int, category: str, split: str, index: int, rate: float) -> str | None:
    """Defect type for a sample: None for train/val, else with probability ``rate`` one of the
    types (geometric, albedo, gloss, logical) drawn uniformly."""
    if split in ("train", "val"):
        return None
    rng = np.random.default_rng([seed, CATEGORIES.index(category), _SPLIT_INDEX[split], index, 7])
    if rng.random() >= rate:
        return None
    types = list(DEFECTS)
    return types[int(rng.integers(len(types)))]


def plan_logical(seed: int, category: str, split: str, index: int) -> str:
    """``--logical``: the logical defect of a set the default draw made logical, from every
    kind the category can show (afrd.data.logical.LOGICAL_FOR), on a stream of its own."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category), _SPLIT_INDEX[split], index, 8])
    names = LOGICAL_FOR[category]
    return names[int(rng.integers(len(names)))]


def plan_family(seed: int, category: str, split: str, index: int, rate: float) -> str | None:
    """``--logical family``: None (good) or the kind (count, pairing, layout) of a test set,
    defective with probability ``rate`` (the default draw's stream), kinds on a stream of their
    own."""
    if plan_defect(seed, category, split, index, rate) is None:
        return None
    rng = np.random.default_rng([seed, CATEGORIES.index(category), _SPLIT_INDEX[split], index, 9])
    return KINDS[int(rng.integers(len(KINDS)))]


def write_sample(data_dir: Path, stem: str, part, lights, size: int, noise_seed: int) -> None:
    iset = render_set(part, lights, rng=np.random.default_rng(noise_seed), size=size)
    for light, img in zip(lights, iset.images, strict=True):
        cv2.imwrite(
            str(data_dir / f"{stem}_{EYECANDIES_FILES[light]}.png"),
            cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
        )
    mask = iset.mask.astype(np.uint8) * 255
    cv2.imwrite(str(data_dir / f"{stem}_mask.png"), mask)
    if part.defect_type is not None:
        cv2.imwrite(str(data_dir / f"{stem}_{part.defect_type}_mask.png"), mask)
    height = part.height
    if height.shape[0] != size:
        height = cv2.resize(height, (size, size), interpolation=cv2.INTER_AREA)
    cv2.imwrite(
        str(data_dir / f"{stem}_depth.png"), np.clip(height * 100, 0, 65535).astype(np.uint16)
    )
    nrm = ((_normals(height) + 1) * 127.5).astype(np.uint8)
    cv2.imwrite(str(data_dir / f"{stem}_normals.png"), cv2.cvtColor(nrm, cv2.COLOR_RGB2BGR))
    meta = [
        f"anomalous: {part.label}",
        f"category: {part.category}",
        f"defect: {part.defect or 'none'}",
        f"defect_type: {part.defect_type or 'none'}",
        f"seed: {part.seed}",
    ]
    if part.meta.get("family") == "logical":
        meta.append(f"logical: {part.label}")
    (data_dir / f"{stem}_metadata.yaml").write_text("\n".join(meta) + "\n", encoding="utf-8")


def synth(
    out: str | Path,
    categories=CATEGORIES,
    n_train: int = 100,
    n_val: int = 0,
    n_test: int = 50,
    size: int = 256,
    seed: int = 0,
    defect_rate: float = 0.5,
    lights: tuple[str, ...] = DEFAULT_LIGHTS,
    progress: bool = True,
    pose: str = "free",
    logical: bool | str = False,
) -> Path:
    """Render the dataset; returns ``out``. Parts render at 2x ``size`` (max 512) then shrink,
    as a camera's optics and pixel area would average. ``logical``: the test sets drawn as
    logical defects show every logical kind (extra, count, swapped, wrong colour too), not only
    missing/misplaced; every other set stays the same. ``logical="family"``: every set is of the
    logical family (afrd.data.logical_family), its defects count, pairing and layout."""
    from tqdm import tqdm

    out = Path(out)
    for c in categories:
        if c not in CATEGORIES:
            raise ConfigError(
                f"--categories: unknown category {c!r}, expected from {list(CATEGORIES)}"
            )
    family = logical == "family"
    if logical not in (False, True, "kinds", "family"):
        raise ConfigError(f"--logical must be 'kinds' or 'family', got {logical!r}")
    if family and (odd := [c for c in categories if c not in FAMILY_CATEGORIES]):
        raise ConfigError(
            f"--logical family: no family for categories {odd}, expected from "
            f"{list(FAMILY_CATEGORIES)}"
        )
    if not 0.0 <= defect_rate <= 1.0:
        raise ConfigError(f"--defect-rate must be within 0..1, got {defect_rate}")
    if size < 16:
        raise ConfigError(f"--size must be at least 16, got {size}")
    native = min(512, 2 * size)
    jobs = []
    for c in categories:
        for split, n in (("train", n_train), ("val", n_val), ("test_public", n_test)):
            width = 3 if split == "train" else 2  # as Eyecandies pads them
            width = max(width, len(str(max(n - 1, 0))))
            for i in range(n):
                jobs.append((c, split, i, f"{i:0{width}d}"))
    bar = tqdm(jobs, desc="afrd synth", unit="set", disable=not progress)
    for c, split, i, stem in bar:
        data_dir = out / c / split / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        s = sample_seed(seed, c, split, i)
        if family:
            kind = plan_family(seed, c, split, i, defect_rate)
            part = sample_family_part(c, s, kind, native, pose)
        else:
            defect = plan_defect(seed, c, split, i, defect_rate)
            if logical and defect == "logical":
                defect = plan_logical(seed, c, split, i)
            part = sample_part(c, s, defect, native, pose)
        write_sample(data_dir, stem, part, lights, size, noise_seed=s ^ 0x5EED)
        bar.set_postfix_str(f"{c}/{split}")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="afrd synth",
        description="Render synthetic multi-light parts with defects in the Eyecandies layout.",
    )
    ap.add_argument("--out", required=True, help="output root (<out>/<category>/<split>/data)")
    ap.add_argument(
        "--categories",
        nargs="+",
        default=None,
        help=f"categories to render (default: all of {', '.join(CATEGORIES)}; with --logical "
        f"family: {', '.join(FAMILY_CATEGORIES)})",
    )
    ap.add_argument("--train", type=int, default=100, help="good sets per category in train")
    ap.add_argument(
        "--val",
        type=int,
        default=20,
        help="good sets per category in val (afrd train fits the map statistics on them)",
    )
    ap.add_argument("--test", type=int, default=50, help="sets per category in test_public")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--defect-rate",
        type=float,
        default=0.5,
        help="fraction of test sets with a defect (types drawn evenly)",
    )
    ap.add_argument(
        "--pose",
        choices=list(POSES),
        default="free",
        help="free: any rotation and place (Eyecandies-like); conveyor: about +-20 deg and "
        "+-4%% shift (on a belt or in a loose nest); fixtured: held in a nest (+-4 deg)",
    )
    ap.add_argument(
        "--logical",
        nargs="?",
        const="kinds",
        choices=["kinds", "family"],
        default=None,
        help="kinds (the flag alone): logical defects of every kind (missing, misplaced, extra, "
        "count, swapped, wrong colour; afrd.data.logical) where the draw picks a logical one; "
        "family: the logical family no local model can see (defects count, pairing, layout; "
        "afrd.data.logical_family); afrd eval reports structural and logical I-AUROC apart",
    )
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.categories is None:
        a.categories = list(FAMILY_CATEGORIES if a.logical == "family" else CATEGORIES)
    out = synth(
        a.out,
        a.categories,
        a.train,
        a.val,
        a.test,
        a.size,
        a.seed,
        a.defect_rate,
        progress=not a.no_progress,
        pose=a.pose,
        logical=a.logical or False,
    )
    total = len(a.categories) * (a.train + a.val + a.test)
    print(f"wrote {total} image sets ({len(DEFAULT_LIGHTS)} lights, {a.size}px) to {out}")
    return 0
