"""The systemd units as systemd reads them (issue 21, item 14): each parses without a warning
(`systemd-analyze verify`), its exposure (`systemd-analyze security --offline=true`) stays at
or below 3.0, and the hardening still lets the daemon reach what it needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = ("afrd.service", "afrd-web.service")
MAX_EXPOSURE = 3.0
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
pytestmark = pytest.mark.timeout(60)


def installed_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart on this checkout's `afrd` (verify checks the binary exists)."""
    afrd = Path(sys.executable).parent / "afrd"
    text = (REPO / "systemd" / unit).read_text()
    assert "/opt/afrd/.venv/bin/afrd" in text
    out = tmp_path / unit
    out.write_text(text.replace("/opt/afrd/.venv/bin/afrd", str(afrd)))
    return out


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=30)


def directives(unit: str, key: str) -> list[str]:
    """Every value of ``key=`` in the unit's own file, in order."""
    text = (REPO / "systemd" / unit).read_text()
    return re.findall(rf"(?m)^{re.escape(key)}=(.*)$", text)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_warnings(unit: str, tmp_path: Path) -> None:
    r = analyze("verify", str(installed_copy(unit, tmp_path)))
    if r.returncode != 0 and re.search(r"bus|not been booted", r.stderr, re.I):
        pytest.skip(f"systemd-analyze verify needs a running systemd here: {r.stderr.strip()}")
    # verify exits 0 on an unknown key or syscall group, so its warnings are the check
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_at_most_3(unit: str, tmp_path: Path) -> None:
    r = analyze("security", "--offline=true", "--no-pager", str(installed_copy(unit, tmp_path)))
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+(?:\.\d+)?)", r.stdout)
    assert m, f"no overall exposure in systemd-analyze's output:\n{r.stdout}\n{r.stderr}"
    exposure = float(m.group(1))
    failing = [ln for ln in r.stdout.splitlines() if ln.startswith("✗")]
    assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure}:\n" + "\n".join(failing)
    assert "Unknown" not in r.stderr, r.stderr


def test_daemon_unit_keeps_what_the_cell_needs() -> None:
    unit = "afrd.service"
    families = directives(unit, "RestrictAddressFamilies")[-1].split()
    # sd_notify and ipc:// (unix), every TCP server and GigE Vision (inet), interface lookup
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    devices = {d.split()[0] for d in directives(unit, "DeviceAllow")}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyS", "char-usb_device", "/dev/bus/usb"} <= devices
    filters = directives(unit, "SystemCallFilter")
    assert filters[0] == "@system-service" and filters[1].startswith("~")
    # the daemon raises its own soft RLIMIT_NOFILE at start: allowed back after ~@resources
    assert "setrlimit" in filters[2].split()
    # a shadow candidate lowers its own priority (afrd.runtime.isolated.lowest_priority)
    assert {"sched_setscheduler", "setpriority"} <= set(filters[2].split())
    assert directives(unit, "SystemCallErrorNumber") == ["EPERM"]  # refuse, do not kill
    assert directives(unit, "CapabilityBoundingSet") == [""]
    assert directives(unit, "MemoryDenyWriteExecute") == ["false"]  # CUDA: see the unit


def test_web_unit_has_only_web_sockets() -> None:
    families = directives("afrd-web.service", "RestrictAddressFamilies")[-1].split()
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert directives("afrd-web.service", "MemoryDenyWriteExecute") == ["true"]
