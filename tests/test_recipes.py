"""Product recipes in the running daemon: the trigger's product picks bundle, threshold and
lighting per part (alternating products on alternate triggers), an unknown product is an
``error``/``unknown_product`` verdict naming it, set_threshold takes a product, and a reload
swaps the recipes as a whole."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import (  # noqa: E402
    Daemon,
    collect,
    make_brightness_bundle,
    wait_subscribed,
    write_config,
)

from afrd.config.cell import load_config  # noqa: E402
from afrd.daemon.config_check import check  # noqa: E402
from afrd.data.capture import find_sets  # noqa: E402
from afrd.errors import ConfigError  # noqa: E402

SIZE = 32
BOX_CHANNELS = (5, 6, 7, 8)


def _dim_box(level: float) -> str:
    chans = ", ".join(f"{{channel = {c}, level = {level}}}" for c in BOX_CHANNELS)
    return f'[[product.lighting]]\nname = "box"\nchannels = [{chans}]\n'


def _recipes(a_threshold: float = 0.3) -> str:
    return (
        f'[[product]]\nname = "a"\nbundle = "bundle-1"\nthreshold = {a_threshold}\n'
        f'[[product]]\nname = "b"\nbundle = "bundle-2"\nthreshold = 0.7\n{_dim_box(20.0)}'
        '[[product]]\nname = "c"\nbundle = "bundle-1"\n'  # the bundle's own threshold, 0.5
    )


def _bundle(path: Path) -> None:
    """A brightness bundle named after its folder (results name the model that judged them)."""
    make_brightness_bundle(path, SIZE, threshold=0.5)
    meta = json.loads((path / "bundle.json").read_text())
    (path / "bundle.json").write_text(json.dumps({**meta, "name": path.name}))


@pytest.fixture
def cell(tmp_path):
    _bundle(tmp_path / "bundle-1")
    _bundle(tmp_path / "bundle-2")
    cfg = write_config(
        tmp_path,
        tmp_path / "bundle-1",
        size=SIZE,
        heatmaps=False,
        extra='[recorder]\nenabled = true\ndir = "rec"\npass_sample_rate = 1.0\n',
    )
    cfg.write_text(cfg.read_text() + "\n" + _recipes())
    return cfg


def _results(dm: Daemon, triggers: list[tuple[str, str]]) -> list[dict]:
    """The results of ``triggers`` (part id, product) in trigger order."""
    sub = dm.subscriber([b"result.", b"status."])
    wait_subscribed(sub)
    seqs = []
    for part_id, product in triggers:
        r = dm.ctl({"cmd": "trigger", "part_id": part_id, "product": product})
        seqs.append(r["result"]["seq"] if r["ok"] else None)
    frames = collect(sub, len(triggers))
    sub.close()
    by_seq = {m["seq"]: m for m in (json.loads(f[1]) for f in frames if f[0][:7] == b"result.")}
    assert len(by_seq) == len(triggers)
    return [by_seq[s] for s in sorted(by_seq)]


def test_alternating_products_each_get_their_recipe(cell, tmp_path):
    assert check(str(cell)) == []
    dm = Daemon(cell).start()
    try:
        status = dm.ctl({"cmd": "status"})["result"]
        assert sorted(status["recipes"]) == ["a", "b", "c"] and status["default_product"] == "a"
        # one part inspected again and again, the product alternating: only the recipe changes
        triggers = [("twin", "abc"[i % 3]) for i in range(9)] + [("p-x", "nope")]
        res = _results(dm, triggers)
        want = {"a": (0.3, "bundle-1"), "b": (0.7, "bundle-2"), "c": (0.5, "bundle-1")}
        for (_, product), r in zip(triggers[:9], res, strict=False):
            assert r["product"] == product and r["verdict"] in ("pass", "fail"), r
            assert (r["threshold"], r["model"]["name"]) == want[product], r
        x = res[9]
        assert x["verdict"] == "error" and x["error"]["code"] == "unknown_product"
        assert "'nope'" in x["error"]["message"] and "['a', 'b', 'c']" in x["error"]["message"]

        # per-product threshold over the control socket; the other recipes keep theirs
        r = dm.ctl({"cmd": "set_threshold", "threshold": 0.05, "product": "b"})
        assert r["ok"] and r["result"]["product"] == "b"
        bad = dm.ctl({"cmd": "set_threshold", "threshold": 0.05, "product": "nope"})
        assert not bad["ok"] and "nope" in bad["error"]
        res2 = _results(dm, [("q-a", "a"), ("q-b", "b")])
        assert [r["threshold"] for r in res2] == [0.3, 0.05]

        # reload swaps every recipe at once
        cell.write_text(cell.read_text().replace("threshold = 0.3", "threshold = 0.25"))
        rl = dm.ctl({"cmd": "reload"})
        assert rl["ok"] and rl["result"]["recipes"] == {"a": 0.25, "b": 0.7, "c": 0.5}
        res3 = _results(dm, [("r-a", "a"), ("r-b", "b")])
        assert [r["threshold"] for r in res3] == [0.25, 0.7]
        # a reload whose recipes do not all load changes nothing (and says which file)
        good = cell.read_text()
        cell.write_text(
            good.replace('name = "b"\n', 'name = "b"\nflatfield = "gone.npz"\n').replace(
                "threshold = 0.25", "threshold = 0.2"
            )
        )
        rl = dm.ctl({"cmd": "reload"})
        assert not rl["ok"] and "gone.npz: no such file" in rl["error"], rl
        res4 = _results(dm, [("s-a", "a"), ("s-b", "b")])
        assert [r["threshold"] for r in res4] == [0.25, 0.7]
        assert all(r["verdict"] != "error" for r in res4)
    finally:
        assert dm.stop() == 0
    # lighting: each recorded set says what it was imaged with, and the images agree
    twins = [json.loads(p.read_text()) for p in find_sets(tmp_path / "rec")]
    twins = [d for d in twins if d["part_id"] == "twin"]
    assert sorted(d["product"] for d in twins) == sorted("abc" * 3)
    cell_box = {c.channel: c.level for c in load_config(cell).condition("box").channels}
    for d in twins:
        box = {int(k): v for k, v in d["meta"]["lighting"]["box"].items()}
        assert box == (dict.fromkeys(BOX_CHANNELS, 20.0) if d["product"] == "b" else cell_box)
        assert d["meta"]["recipe"] == d["product"]
    # and the images agree: the same part under a dimmer box light scores lower, every time
    by_product = {q: {r["score"] for r in res[:9] if r["product"] == q} for q in "abc"}
    assert len(by_product["a"]) == 1 and by_product["a"] == by_product["c"]
    assert max(by_product["b"]) < min(by_product["a"])


def test_recipe_config_errors_name_the_product(tmp_path):
    _bundle(tmp_path / "bundle-1")
    base = write_config(tmp_path, tmp_path / "bundle-1", size=SIZE).read_text()

    def problems(extra: str, trigger: str | None = None) -> str:
        text = base + "\n" + extra
        if trigger:
            text = text.replace('mode = "control"', trigger)
        (tmp_path / "x.toml").write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(tmp_path / "x.toml")
        return str(e.value)

    two = '[[product]]\nname = "a"\n[[product]]\nname = "a"\n'
    assert "recipe names must be unique, repeated: ['a']" in problems(two)
    ghost = '[[product]]\nname = "a"\n[[product.lighting]]\nname = "dome"\nchannels = []\n'
    assert "['dome'] are not conditions" in problems(ghost)
    mixed = '[[product]]\nname = "a"\nexposure = "e.json"\n[[product]]\nname = "b"\n'
    assert "['b'] set no exposure" in problems(mixed)
    free = '[[product]]\nname = "a"\n'
    assert "trigger.product: 'default' names no [[product]]" in problems(free, 'mode = "free-run"')
    # a product's bundle that is not there: config check names the recipe
    (tmp_path / "y.toml").write_text(base + '\n[[product]]\nname = "a"\nbundle = "gone"\n')
    assert check(str(tmp_path / "y.toml")) == [
        f"{tmp_path / 'y.toml'}: product[0] ('a').bundle: no bundle at {tmp_path / 'gone'}"
    ]


def test_a_reload_mid_part_finishes_that_part_with_its_own_recipe(tmp_path):
    """In-process, real sim cell and ONNX Runtime: the book swapped while part 1 is being
    imaged; part 1 is judged by the old engine (still open), part 2 by the new one, and the
    old engines close once part 1 is through."""
    import threading

    from afrd.acquire.sequencer import Setup
    from afrd.daemon.pipeline import Pipeline
    from afrd.daemon.recipes import Recipe, RecipeBook
    from afrd.runtime.loader import load_runtime
    from afrd.sim.cell import SimCell
    from afrd.sim.config import sim_lighting_conditions

    def book(name: str, threshold: float) -> RecipeBook:
        _bundle(tmp_path / name)
        rt = load_runtime(tmp_path / name, "onnxruntime", {"threads": 1})
        setup = Setup(sim_lighting_conditions())
        return RecipeBook({"a": Recipe("a", rt, threshold, setup)}, "a")

    old, new = book("old", 0.9), book("new", 0.8)
    imaging, release = threading.Event(), threading.Event()
    out: list[dict] = []
    with SimCell(size=SIZE, seed=3) as cell:
        seq = cell.sequencer()

        def acquire(part_id: str, product: str, setup: Setup):
            if part_id == "p1":
                imaging.set()
                assert release.wait(30)
            return seq.acquire(part_id, product, setup)

        p = Pipeline("u1", acquire, old, lambda job, msg: out.append(msg))
        p.start()
        p.trigger("p1", "a")
        assert imaging.wait(30)
        p.swap_book(new)  # part 1 has pinned the old book: nothing closes yet
        assert not old._closed
        release.set()
        p.trigger("p2", "a")
        deadline = time.monotonic() + 30
        while len(out) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.stop()
    assert [(m["part_id"], m["verdict"] != "error") for m in out] == [("p1", True), ("p2", True)]
    assert [(m["model"]["name"], m["threshold"]) for m in out] == [("old", 0.9), ("new", 0.8)]
    assert old._closed and old.users == 0


def test_the_example_configs_recipes_load_when_uncommented(tmp_path):
    from _daemon_helpers import REPO

    text = (REPO / "systemd" / "cell.example.toml").read_text()
    head, _, recipes = text.partition("# [[product]]")
    block, _, rest = ("# [[product]]" + recipes).partition("\n\n")  # the recipes, up to a blank
    lines = block.splitlines()
    uncommented = "\n".join(ln.removeprefix("# ") for ln in lines)
    (tmp_path / "cell.toml").write_text(head + uncommented + "\n\n" + rest)
    cfg = load_config(tmp_path / "cell.toml")
    assert [p.name for p in cfg.product] == ["bracket-a", "bracket-b"]
    assert cfg.product[0].bundle == cfg.product[1].bundle  # one bundle, two products
    assert [c.name for c in cfg.product[0].lighting] == ["box"]
