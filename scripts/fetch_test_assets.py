#!/usr/bin/env python3
"""Fetch the GenTL producers the GenICam tests run against, and say where they are.

- TLSimu.cti: a simulated GenTL producer (software trigger) that ships only in the
  ``genicam==1.5.0`` wheel. We download that wheel from the package registry by name with pip
  and extract TLSimu.cti plus the library it links to (libVirtualFG.so, found through its
  RPATH $ORIGIN) into ``.cache/genicam/1.5.0/`` in the repo (ignored by git).
- viky.cti: the free-running producer in the installed ``genicam`` (1.6) package.

Idempotent: when the cache is complete nothing is downloaded. On error it prints why, writes the
reason to ``.cache/genicam/1.5.0.error`` (the tests' skip message quotes it) and exits 1, so
`make test` stops loudly instead of passing with the camera driver untested;
``--allow-missing`` exits 0 instead (the GenICam tests then skip, saying why).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.5.0"
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "genicam" / VERSION
# TLSimu.cti's DT_NEEDED beside libc/libstdc++: only libVirtualFG.so (RPATH $ORIGIN).
NEEDED = ("TLSimu.cti", "libVirtualFG.so")
PIP_TIMEOUT_S = 180


def tlsimu_path(cache: Path = CACHE) -> Path | None:
    """TLSimu.cti in the cache when every file it needs is there, else None."""
    if all((cache / name).is_file() for name in NEEDED):
        return cache / "TLSimu.cti"
    return None


def viky_path() -> Path | None:
    """viky.cti from the installed genicam package (1.6 ships it), or None."""
    try:
        import genicam
    except ImportError:
        return None
    path = Path(genicam.__file__).resolve().parent / "viky.cti"
    return path if path.is_file() else None


def _pip_download(dest: Path, extra: list[str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        f"genicam=={VERSION}",
        "-d",
        str(dest),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = [ln for ln in lines if ln.startswith("ERROR")][-2:] or lines[-2:]
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {' | '.join(tail)}")


def download_wheel(dest: Path) -> Path:
    """Download the genicam 1.5.0 wheel for this interpreter/platform into ``dest``.

    TLSimu.cti does not depend on the Python ABI, so when this Python has no 1.5.0 wheel we
    fall back to the cp311 manylinux wheel of the same machine architecture.
    """
    try:
        _pip_download(dest, [])
    except RuntimeError as first:
        machine = platform.machine()
        if sys.platform != "linux" or machine not in ("x86_64", "aarch64"):
            raise
        try:
            _pip_download(
                dest,
                [
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                    "--platform",
                    f"manylinux2014_{machine}",
                ],
            )
        except RuntimeError as second:
            raise RuntimeError(f"{first}; fallback: {second}") from None
    wheels = sorted(dest.glob(f"genicam-{VERSION}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip reported success but no genicam-{VERSION} wheel in {dest}")
    return wheels[0]


def extract(wheel: Path, cache: Path) -> Path:
    """Extract the files TLSimu needs from ``wheel`` into ``cache`` (atomically per file)."""
    with zipfile.ZipFile(wheel) as zf:
        members = {Path(n).name: n for n in zf.namelist() if Path(n).name in NEEDED}
        missing = [n for n in NEEDED if n not in members]
        if missing:
            raise RuntimeError(f"{wheel.name} has no {', '.join(missing)}")
        cache.mkdir(parents=True, exist_ok=True)
        for name, member in members.items():
            tmp = cache / f".{name}.part"
            with zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.chmod(0o755)
            os.replace(tmp, cache / name)
    path = tlsimu_path(cache)
    assert path is not None
    return path


def fetch(cache: Path = CACHE) -> Path:
    """TLSimu.cti path, downloading and extracting it when the cache is incomplete."""
    cached = tlsimu_path(cache)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="afrd-genicam-") as tmp:
        wheel = download_wheel(Path(tmp))
        return extract(wheel, cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0 when TLSimu cannot be fetched (its tests skip) instead of 1",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"default: {CACHE}")
    args = parser.parse_args(argv)
    error_file = args.cache.parent / f"{args.cache.name}.error"
    ok = True
    try:
        path = fetch(args.cache)
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        ok = False
        reason = f"fetching genicam=={VERSION} for TLSimu.cti failed: {exc}"
        print(f"fetch_test_assets: {reason}", file=sys.stderr)
        try:
            error_file.parent.mkdir(parents=True, exist_ok=True)
            error_file.write_text(reason + "\n")
        except OSError:
            pass
    else:
        error_file.unlink(missing_ok=True)
        print(f"TLSimu.cti: {path}")
    viky = viky_path()
    print(f"viky.cti: {viky}" if viky else "viky.cti: not found (genicam 1.6 not installed)")
    return 0 if (ok or args.allow_missing) else 1


if __name__ == "__main__":
    sys.exit(main())
