"""An engine kind added from outside the package, the way the docs say (its options model, its
engine class, one ``register_engine`` line): the cell config validates its options, `afrd config
check` opens it, and the daemon's pipeline judges simulated parts with it. Checking a config
imports no backend, torch least of all."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from afrd.cli import main as afrd_main
from afrd.config.cell import load_config
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.recipes import load_book
from afrd.daemon.verdict import validate_result
from afrd.errors import ConfigError
from afrd.runtime.engines import ENGINES, Engine, register_engine
from afrd.runtime.engines.options import EngineOptions

sys.path.insert(0, str(Path(__file__).parent))
from _daemon_helpers import make_brightness_bundle, write_config  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SIZE = 32


class ToyOptions(EngineOptions):
    score: float = Field(0.0, ge=0.0, le=1.0, description="the score of every part")


class ToyEngine(Engine):
    """Judges every part by the configured score (a map of that value everywhere)."""

    kind = "toy"
    opened: list[ToyEngine] = []  # every instance, so a test sees what was opened and closed

    def __init__(self, bundle, score: float = 0.0, **opts) -> None:
        super().__init__(bundle, **opts)
        self.score, self.closed = score, False
        ToyEngine.opened.append(self)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, (h, w) = batch.shape[0], self.input_size
        return np.full((b, h, w), self.score, np.float32), np.full((b,), self.score, np.float32)

    def close(self) -> None:
        super().close()
        self.closed = True


@pytest.fixture
def toy():
    register_engine("toy", ToyEngine, ToyOptions)
    ToyEngine.opened.clear()
    yield
    ENGINES.pop("toy")


@pytest.fixture
def bundle(tmp_path):
    make_brightness_bundle(tmp_path / "bundle", SIZE, threshold=0.5)
    return tmp_path / "bundle"


def _config(tmp_path, bundle, options: str, kind: str = "toy") -> Path:
    return write_config(tmp_path, bundle, size=SIZE, engine=kind, engine_options=options)


def test_config_validates_a_registered_kind_and_its_options(tmp_path, bundle, toy):
    cfg = load_config(_config(tmp_path, bundle, "score = 0.9"))
    assert cfg.engine.kind == "toy" and isinstance(cfg.engine.options, ToyOptions)
    assert cfg.engine.open_options() == {"score": 0.9}

    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, bundle, "scor = 0.9"))
    assert "engine.options.scor: unknown key" in str(e.value), e.value
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, bundle, "score = 2.0"))
    assert "engine.options.score: Input should be less than or equal to 1" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, bundle, "", kind="tyo"))
    (line,) = [x for x in str(e.value).splitlines() if "engine.kind: expected" in x]
    assert line.endswith(" or 'toy'") and all(repr(k) in line for k in ENGINES), line


def test_an_unregistered_kind_is_refused_naming_the_registered_ones(tmp_path, bundle):
    assert "toy" not in ENGINES  # the fixture above took it out again
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, bundle, "score = 0.9"))
    (line,) = [x for x in str(e.value).splitlines() if "engine.kind: expected" in x]
    assert all(repr(k) in line for k in ENGINES) and "toy" not in line, line


def test_config_check_opens_the_registered_engine(tmp_path, bundle, toy, capsys):
    good = _config(tmp_path, bundle, "score = 0.9")
    assert afrd_main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: OK"
    assert [(e.score, e.closed) for e in ToyEngine.opened] == [(0.9, True)]  # opened, closed

    bad = _config(tmp_path, bundle, "scor = 0.9")
    assert afrd_main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "engine.options.scor: unknown key" in err and "Traceback" not in err, err


@pytest.mark.parametrize("score, verdict", [(0.9, "fail"), (0.1, "pass")])
def test_the_pipeline_judges_parts_with_the_registered_engine(
    tmp_path, bundle, toy, score, verdict
):
    from afrd.sim.cell import SimCell

    book = load_book(load_config(_config(tmp_path, bundle, f"score = {score}")))
    out: list[dict] = []
    done = threading.Event()

    def sink(job, msg):
        out.append(validate_result(msg, "u1"))
        if len(out) == 3:
            done.set()

    with SimCell(size=SIZE, seed=3) as cell:
        p = Pipeline("u1", cell.sequencer().acquire, book, sink)
        p.start()
        for i in range(3):
            p.trigger(f"p{i}", "x")
        assert done.wait(60), out
        p.stop()
    book.retire()
    assert [(m["verdict"], m["score"]) for m in out] == [(verdict, pytest.approx(score))] * 3
    assert all(m["model"]["name"] == "test-brightness" for m in out)
    assert [e.closed for e in ToyEngine.opened] == [True]


def test_checking_a_config_imports_no_backend(tmp_path, bundle):
    """Every built-in kind's options are validated from their own modules: no torch, no
    onnxruntime, no tensorrt (the engines import those when they open)."""
    cfgs = []
    for kind in ENGINES:
        (tmp_path / kind).mkdir()
        cfgs.append(_config(tmp_path / kind, bundle, "", kind=kind))
    code = (
        "import sys\nfrom afrd.config.cell import load_config\n"
        + "".join(f"load_config({str(c)!r})\n" for c in cfgs)
        + "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr + p.stdout
