"""The cell config: one TOML file, typed models that forbid unknown keys.

The camera and controller sections are the drivers' own config models (``afrd.acquire``),
chosen by ``kind``; this module composes them with the model, trigger, sockets and outputs.

``load_config(path)`` returns a :class:`CellConfig` or raises :class:`afrd.errors.ConfigError`
whose message names the file, every wrong key path (``lighting[2].channels[0].level``) and what
was expected. Nothing here opens a device or loads a model: checking a config is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from afrd.acquire.devices import CameraConfig, ControllerConfig
from afrd.acquire.lighting import LightingCondition
from afrd.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- model
class BundleConfig(_Strict):
    path: Path


class EngineConfig(_Strict):
    kind: Literal["onnxruntime", "tensorrt", "pytorch", "null"] = "onnxruntime"
    options: dict[str, Any] = Field(default_factory=dict)


class TriggerConfig(_Strict):
    """Where parts come from: the control socket, the camera's hardware line, or a timer."""

    mode: Literal["control", "hardware", "free-run"] = "control"
    interval_s: float = Field(1.0, gt=0, description="free-run period")
    product: str = "default"  # product name for hardware / free-run parts


class SocketsConfig(_Strict):
    pub: str = "tcp://*:5556"
    control: str = "tcp://127.0.0.1:5557"
    curve_keys_dir: Path | None = None  # server.key_secret (+ authorized_clients/*.key)
    heartbeat_s: float = Field(1.0, gt=0)
    sndhwm: int = Field(100, ge=1, description="messages queued per subscriber before dropping")


class RecorderConfig(_Strict):
    enabled: bool = False
    dir: Path = Path("/var/lib/afrd/captures")
    pass_sample_rate: float = Field(0.01, ge=0.0, le=1.0, description="share of passes kept")
    max_bytes: int = Field(10 * 1024**3, gt=0)
    max_age_days: float = Field(30.0, gt=0)
    min_free_bytes: int = Field(512 * 1024**2, ge=0)
    queue: int = Field(16, ge=1)


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0 = any free port (tests)


class QueuesConfig(_Strict):
    triggers: int = Field(16, ge=1, description="triggers waiting for acquisition")
    acquired: int = Field(2, ge=1, description="image sets waiting for inference")
    results: int = Field(16, ge=1, description="results waiting to be published")


class CellConfig(_Strict):
    cell: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+$", description="cell id, used in topics")
    camera: CameraConfig
    controller: ControllerConfig
    lighting: list[LightingCondition] = Field(..., min_length=1)
    bundle: BundleConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    threshold: float | None = Field(None, description="override the bundle's threshold")
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    sockets: SocketsConfig = Field(default_factory=SocketsConfig)
    heatmaps: bool = True
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    queues: QueuesConfig = Field(default_factory=QueuesConfig)

    @model_validator(mode="after")
    def _unique_lights(self) -> CellConfig:
        names = [c.name for c in self.lighting]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"lighting: condition names must be unique, repeated: {dup}")
        return self

    def condition(self, name: str) -> LightingCondition:
        for c in self.lighting:
            if c.name == name:
                return c
        raise KeyError(name)

    def conditions_for(self, lights: tuple[str, ...] | list[str], source: str = "bundle") -> list:
        """The lighting conditions in ``lights`` order; ConfigError if one is not configured."""
        have = {c.name for c in self.lighting}
        missing = [n for n in lights if n not in have]
        if missing:
            raise ConfigError(
                f"lighting: the {source} needs lights {list(lights)}, the config has no condition "
                f"named {missing} (configured: {sorted(have)})"
            )
        return [self.condition(n) for n in lights]


_TAGS = {"sim", "genicam", "gardasoft"}


def _loc(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and part in _TAGS and loc[i - 1] in ("camera", "controller"):
            continue  # pydantic puts the union tag in the path; the user never wrote it
        elif part.startswith("function-") or part.startswith("tagged-union"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid cell config ({exc.error_count()} error(s))"]
    for err in exc.errors():
        got = err.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {_loc(err['loc'])}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {_loc(err['loc'])}: required key missing")
        else:
            lines.append(f"  {_loc(err['loc'])}: {err['msg']}{got_s}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> CellConfig:
    try:
        cfg = CellConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None
    return cfg


def load_config(path: str | Path) -> CellConfig:
    """Read and validate a cell config. Relative paths in it are relative to the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    cfg = parse_config(data, str(path))
    base = path.resolve().parent
    if not cfg.bundle.path.is_absolute():
        cfg.bundle.path = base / cfg.bundle.path
    if not cfg.recorder.dir.is_absolute():
        cfg.recorder.dir = base / cfg.recorder.dir
    line = getattr(cfg.camera, "line", None)
    if line is not None and not line.is_absolute():
        cfg.camera.line = base / line
    if cfg.sockets.curve_keys_dir is not None and not cfg.sockets.curve_keys_dir.is_absolute():
        cfg.sockets.curve_keys_dir = base / cfg.sockets.curve_keys_dir
    return cfg


def check_bundle_lights(cfg: CellConfig, source: str = "config") -> list:
    """Load the bundle's metadata and check the config's lighting covers its lights."""
    from afrd.runtime.bundle import Bundle

    bundle = Bundle.load(cfg.bundle.path)
    return cfg.conditions_for(tuple(bundle.lights), f"bundle {cfg.bundle.path}")
