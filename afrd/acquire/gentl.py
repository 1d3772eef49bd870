"""GenTL producers through harvesters: finding the .cti files, one shared Harvester per producer
set, and keeping the process's signal handlers while harvesters creates objects."""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from afrd.errors import DeviceError

log = logging.getLogger(__name__)

ENV_PATH = "GENICAM_GENTL64_PATH"


def producer_files(producer: str | Sequence[str] | None) -> list[Path]:
    """Every .cti named by ``producer`` (files or folders, os.pathsep-separated) or, when it is
    None, by the GENICAM_GENTL64_PATH environment variable."""
    if producer is None:
        spec = os.environ.get(ENV_PATH, "")
        source = f"${ENV_PATH}={spec!r}"
    else:
        spec = producer if isinstance(producer, str) else os.pathsep.join(producer)
        source = f"camera producer {spec!r}"
    found: list[Path] = []
    for entry in filter(None, spec.split(os.pathsep)):
        path = Path(entry).expanduser()
        if path.is_dir():
            found.extend(sorted(Path(p) for p in glob.glob(str(path / "*.cti"))))
        elif path.is_file():
            found.append(path)
    if not found:
        hint = "" if producer is not None or spec else f" (set camera.producer or ${ENV_PATH})"
        raise DeviceError(f"no GenTL producer (.cti) found from {source}{hint}")
    return list(dict.fromkeys(p.resolve() for p in found))


@contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore SIGINT/SIGTERM handlers that harvesters replaces (it does so in the main thread
    when an ImageAcquirer is created)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


class _Shared:
    def __init__(self, harvester: Any, infos: list[Any]) -> None:
        self.harvester, self.infos, self.users = harvester, infos, 0


# One Harvester per producer set in the process: a GenTL producer is a process-wide library, and
# a second Harvester loading the same .cti sees no devices (TLSimu), while Harvester.update()
# invalidates every acquirer it created. So cameras on the same producers share one Harvester,
# enumerated when the first opens and reset when the last closes.
_HARVESTERS: dict[tuple[Path, ...], _Shared] = {}
_HARVESTERS_LOCK = threading.Lock()


def acquire_harvester(files: list[Path]) -> tuple[Any, list[Any]]:
    from harvesters.core import Harvester  # heavy import; only when a real camera is used

    key = tuple(files)
    with _HARVESTERS_LOCK:
        shared = _HARVESTERS.get(key)
        if shared is None:
            h = Harvester()
            try:
                for f in files:
                    h.add_file(str(f))
                h.update()
            except Exception as exc:
                h.reset()
                raise DeviceError(
                    f"loading GenTL producer(s) {', '.join(map(str, files))} failed: {exc}"
                ) from exc
            shared = _HARVESTERS[key] = _Shared(h, list(h.device_info_list))
        shared.users += 1
        return shared.harvester, shared.infos


def release_harvester(harvester: Any) -> None:
    with _HARVESTERS_LOCK:
        for key, shared in list(_HARVESTERS.items()):
            if shared.harvester is harvester:
                shared.users -= 1
                if shared.users <= 0:
                    del _HARVESTERS[key]
                    try:
                        harvester.reset()
                    except Exception as exc:
                        log.debug("Harvester.reset failed: %s", exc)
                return


def prop(info: Any, key: str) -> Any:
    """A device-info property; None when the producer does not support it (viky has no
    user-defined name and raises on direct access)."""
    return getattr(info, "property_dict", {}).get(key)


def describe(info: Any) -> str:
    return " ".join(
        f"{label}={prop(info, key)!r}"
        for label, key in (
            ("model", "model"),
            ("serial", "serial_number"),
            ("user_name", "user_defined_name"),
            ("vendor", "vendor"),
        )
    )
