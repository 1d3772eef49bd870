"""Persisting a threshold into a cell config: comments and layout kept, the file still loads,
clear errors for a missing, unwritable or wrong file, and never a half-written config."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from afrd.config.cell import load_config
from afrd.config.persist import persist_threshold
from afrd.errors import ConfigError
from afrd.sim.launch import REPO, write_config

pytest.importorskip("tomlkit", reason="persisting needs tomlkit (the web extra)")


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    p = write_config(tmp_path, tmp_path / "bundle", header="# line 3, cell 1: keep me\n")
    text = p.read_text().replace("heatmaps = true", "heatmaps = true   # overlays for the MES")
    p.write_text(text)
    return p


def test_sets_the_top_level_threshold_and_keeps_every_other_line(cfg: Path) -> None:
    before = cfg.read_text()
    assert load_config(cfg).threshold is None
    persist_threshold(cfg, 0.4321)
    after = cfg.read_text()
    assert load_config(cfg).threshold == pytest.approx(0.4321)
    assert "# line 3, cell 1: keep me" in after
    assert "heatmaps = true   # overlays for the MES" in after
    # only the threshold line differs
    added = [ln for ln in after.splitlines() if ln not in before.splitlines()]
    assert added == ["threshold = 0.4321"]
    persist_threshold(cfg, -0.25)  # an existing key is replaced in place, not duplicated
    assert load_config(cfg).threshold == -0.25
    assert cfg.read_text().count("threshold =") == 1


def test_a_products_threshold(tmp_path: Path) -> None:
    p = write_config(tmp_path, tmp_path / "bundle")
    p.write_text(
        p.read_text() + '\n# the blue ones\n[[product]]\nname = "blue"\n\n'
        '[[product]]\nname = "red"\nthreshold = 0.9  # calibrated 2026-11\n'
    )
    persist_threshold(p, 0.7, product="red")
    persist_threshold(p, 0.2, product="blue")
    cfg = load_config(p)
    assert {r.name: r.threshold for r in cfg.product} == {"blue": 0.2, "red": 0.7}
    assert cfg.threshold is None and "# the blue ones" in p.read_text()
    with pytest.raises(ConfigError, match=r"no \[\[product\]\] with name = 'green'.*blue"):
        persist_threshold(p, 0.5, product="green")


def test_clear_errors_and_the_file_is_left_alone(cfg: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.toml: config file not found"):
        persist_threshold(tmp_path / "missing.toml", 0.5)
    with pytest.raises(ConfigError, match=r"no \[\[product\]\] recipes"):
        persist_threshold(cfg, 0.5, product="widget")
    with pytest.raises(ConfigError, match="finite number"):
        persist_threshold(cfg, float("nan"))
    before = cfg.read_text()
    with pytest.raises(ConfigError, match="would not load"):
        persist_threshold(cfg, 5e6)  # outside the +-1e6 the daemon accepts
    assert cfg.read_text() == before
    bad = tmp_path / "bad.toml"
    bad.write_text("cell = [\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        persist_threshold(bad, 0.5)


def _persist_read_only(cfg: Path, value: float, file_writable: bool) -> None:
    """``persist_threshold(cfg, value)`` with the config's folder read-only (and the file
    too unless ``file_writable``), as a unit's ProtectSystem=strict leaves it. Root (CI) writes
    through permission bits, so there the folder is a read-only bind mount in a private mount
    namespace, the file a writable bind mount on top (ReadWritePaths= for that file alone);
    a ConfigError raised there is raised here."""
    if os.geteuid() != 0:
        cfg.chmod(0o644 if file_writable else 0o444)
        cfg.parent.chmod(0o555)
        try:
            persist_threshold(cfg, value)
        finally:
            cfg.parent.chmod(0o755)
            cfg.chmod(0o644)
        return
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare(1): no way to make a folder read-only")
    outside = cfg.parent.parent / f"{cfg.name}.rw"
    shutil.copy(cfg, outside)
    d, q = cfg.parent, shlex.quote
    mounts = f"mount --bind {q(str(d))} {q(str(d))} && mount -o remount,bind,ro {q(str(d))}"
    if file_writable:
        mounts += f" && mount --bind {q(str(outside))} {q(str(cfg))}"
    code = (
        "import sys; from afrd.config.persist import persist_threshold\n"
        "from afrd.errors import ConfigError\n"
        f"try: persist_threshold({str(cfg)!r}, {value!r})\n"
        "except ConfigError as e: sys.exit('ConfigError: ' + str(e))"
    )
    p = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mounts} && exec {q(sys.executable)} -c {q(code)}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    if file_writable:
        shutil.copy(outside, cfg)  # what the writable file now holds
    if p.stderr.startswith("ConfigError: "):
        raise ConfigError(p.stderr.removeprefix("ConfigError: ").strip())
    assert p.returncode == 0, p.stderr


def test_unwritable_file_names_the_fix(cfg: Path) -> None:
    before = cfg.read_text()
    with pytest.raises(ConfigError, match="cannot write the threshold.*write access"):
        _persist_read_only(cfg, 0.5, file_writable=False)
    assert cfg.read_text() == before


def test_only_the_file_writable_is_rewritten_in_place(cfg: Path) -> None:
    """A unit that grants ReadWritePaths= to the config file alone: no temporary file beside it."""
    _persist_read_only(cfg, 0.3, file_writable=True)
    assert load_config(cfg).threshold == 0.3
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["cell.toml"]
