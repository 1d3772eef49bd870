"""scripts/fetch_test_assets.py: cached runs do nothing, a failure fails `make test` loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "fetch_test_assets.py"
# Nowhere to download from: no config files (extra indexes), no find-links, a dead index.
OFFLINE = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_FIND_LINKS": "",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_NO_CACHE_DIR": "1",
}
CACHE = REPO / ".cache" / "genicam" / "1.5.0"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cached_run_does_nothing_and_prints_paths() -> None:
    if not (CACHE / "TLSimu.cti").is_file():
        pytest.skip(f"TLSimu.cti not cached in {CACHE}; run scripts/fetch_test_assets.py")
    before = {p.name: p.stat().st_mtime_ns for p in CACHE.iterdir()}
    # An unreachable index proves no download is attempted when the cache is complete.
    proc = run(env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    assert f"TLSimu.cti: {CACHE / 'TLSimu.cti'}" in proc.stdout
    assert "viky.cti: " in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in CACHE.iterdir()} == before


def test_failed_fetch_exits_1_and_records_why(tmp_path) -> None:
    cache = tmp_path / "1.5.0"
    env = OFFLINE
    proc = run("--cache", str(cache), env=env)
    assert proc.returncode == 1  # `make test` stops here instead of skipping the camera tests
    assert "fetching genicam==1.5.0 for TLSimu.cti failed" in proc.stderr
    assert not (cache / "TLSimu.cti").exists()
    reason = (tmp_path / "1.5.0.error").read_text()
    assert "genicam==1.5.0" in reason
    assert run("--cache", str(cache), "--allow-missing", env=env).returncode == 0
