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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from afrd.acquire.devices import DEVICE_TAGS, CameraConfig, ControllerConfig, simulated
from afrd.acquire.lighting import LightingCondition
from afrd.config.endpoints import check_endpoint
from afrd.config.engine import EngineConfig, default_engine, engine_tags, validate_engine
from afrd.config.lifecycle import DriftConfig, ModelsConfig
from afrd.config.mqtt import MqttConfig
from afrd.config.plc import ModbusConfig, OpcUaConfig
from afrd.config.roles import AccessConfig
from afrd.errors import AfrdError, ConfigError
from afrd.runtime.bundle import check_threshold


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- model
class BundleConfig(_Strict):
    path: Path


class TriggerConfig(_Strict):
    """Where parts come from: the control socket, the camera's hardware line, or a timer."""

    mode: Literal["control", "hardware", "free-run"] = "control"
    interval_s: float = Field(1.0, ge=0.001, le=86400.0, description="free-run period")
    product: str = "default"  # product name for hardware / free-run parts


class SocketsConfig(_Strict):
    pub: str = "tcp://*:5556"
    control: str = "tcp://127.0.0.1:5557"
    curve_keys_dir: Path | None = None  # server.key_secret (+ authorized_clients/*.key)
    allow_any_client: bool = Field(
        False, description="CURVE without authorized_clients/: accept any client key"
    )
    heartbeat_s: float = Field(1.0, ge=0.01, le=3600.0)
    sndhwm: int = Field(
        100, ge=1, le=1_000_000, description="messages queued per subscriber before dropping"
    )
    max_request_bytes: int = Field(
        65536, ge=1024, le=16 * 1024**2, description="control requests larger are refused"
    )

    @field_validator("pub", "control")
    @classmethod
    def _endpoint(cls, v: str, info: Any) -> str:
        try:
            return check_endpoint(v, f"sockets.{info.field_name}")
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @model_validator(mode="after")
    def _distinct(self) -> SocketsConfig:
        if self.pub == self.control:
            raise ValueError(f"pub and control are both {self.pub!r}; give each its own endpoint")
        return self


class RecorderConfig(_Strict):
    enabled: bool = False
    dir: Path = Path("/var/lib/afrd/captures")
    pass_sample_rate: float = Field(0.01, ge=0.0, le=1.0, description="share of passes kept")
    max_bytes: int = Field(10 * 1024**3, gt=0, le=2**62)
    max_age_days: float = Field(30.0, gt=0, le=36500.0)
    min_free_bytes: int = Field(512 * 1024**2, ge=0, le=2**62)
    queue: int = Field(16, ge=1, le=10_000)


class LightsPreviewConfig(_Strict):
    """``[lights_preview]``: publish a small JPEG mosaic of each part's lights (``lights.<cell>``)."""

    enabled: bool = False
    max_px: int = Field(160, ge=16, le=1024, description="longest side of each light's tile")
    quality: int = Field(80, ge=10, le=100, description="JPEG quality")


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0 = any free port (tests)
    max_connections: int = Field(16, ge=1, le=1024, description="scrapers served at once")
    timeout_s: float = Field(5.0, gt=0, le=300.0, description="per-connection read/write limit")


class QueuesConfig(_Strict):
    triggers: int = Field(16, ge=1, le=100_000, description="triggers waiting for acquisition")
    acquired: int = Field(2, ge=1, le=1000, description="image sets waiting for inference")
    results: int = Field(16, ge=1, le=100_000, description="results waiting to be published")


class ProductConfig(_Strict):
    """``[[product]]``: a recipe the trigger's ``product`` picks. Unset keys take the cell's
    (top-level) value; ``lighting`` lists the conditions whose levels this product changes
    (by name; the cell's other conditions stay as they are)."""

    name: str = Field(..., min_length=1, max_length=256)
    bundle: Path | None = Field(None, description="model bundle (default: the cell's [bundle])")
    threshold: float | None = Field(None, description="default: the cell's, else the bundle's")
    flatfield: Path | None = Field(None, description="afrd calibrate flatfield output (.npz)")
    exposure: Path | None = Field(None, description="afrd calibrate exposure output (.json)")
    lighting: list[LightingCondition] = Field(default_factory=list)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float | None) -> float | None:
        return _check_threshold(v, "threshold")


def _check_threshold(v: float | None, key: str) -> float | None:
    if v is None:
        return v
    try:
        return check_threshold(v, key)
    except AfrdError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None


class CellConfig(_Strict):
    cell: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+$", description="cell id, used in topics")
    camera: CameraConfig
    controller: ControllerConfig
    lighting: list[LightingCondition] = Field(..., min_length=1)
    bundle: BundleConfig
    engine: SerializeAsAny[EngineConfig] = Field(default_factory=default_engine)
    allow_null_engine: bool = Field(
        False, description="let engine.kind = 'null' (every part passes) judge a real camera"
    )
    threshold: float | None = Field(None, description="override the bundle's threshold")
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    sockets: SocketsConfig = Field(default_factory=SocketsConfig)
    heatmaps: bool = True
    lights_preview: LightsPreviewConfig = Field(default_factory=LightsPreviewConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    queues: QueuesConfig = Field(default_factory=QueuesConfig)
    flatfield: Path | None = Field(None, description="afrd calibrate flatfield output (.npz)")
    exposure: Path | None = Field(None, description="afrd calibrate exposure output (.json)")
    product: list[ProductConfig] = Field(default_factory=list, description="[[product]] recipes")
    opcua: OpcUaConfig | None = Field(None, description="OPC UA server (afrd.config.plc)")
    modbus: ModbusConfig | None = Field(None, description="Modbus TCP server (afrd.config.plc)")
    mqtt: MqttConfig | None = Field(None, description="the plant's MQTT broker (afrd.config.mqtt)")
    access: AccessConfig = Field(
        default_factory=AccessConfig, description="roles and the audit log (afrd.config.roles)"
    )
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="kept bundles, shadow")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="score drift watch")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float | None) -> float | None:
        return _check_threshold(v, "threshold")

    @field_validator("engine", mode="plain")
    @classmethod
    def _engine(cls, v: Any) -> EngineConfig:
        return validate_engine(v)  # the kinds registered now (afrd.config.engine)

    @model_validator(mode="after")
    def _recipes(self) -> CellConfig:
        names = [p.name for p in self.product]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"product: recipe names must be unique, repeated: {dup}")
        have = {c.name for c in self.lighting}
        for i, p in enumerate(self.product):
            unknown = [c.name for c in p.lighting if c.name not in have]
            if unknown:
                raise ValueError(
                    f"product[{i}] ({p.name!r}).lighting: {unknown} are not conditions of the "
                    f"cell's [[lighting]] (have {sorted(have)}); a recipe re-levels those"
                )
        if self.exposure is None and any(p.exposure for p in self.product):
            bare = [p.name for p in self.product if p.exposure is None]
            if bare:
                raise ValueError(
                    f"product: {bare} set no exposure while other products do, and the cell has "
                    "no top-level exposure: their parts would be imaged at whatever exposure the "
                    "previous part left; give the cell (or each product) an exposure file"
                )
        if names and self.trigger.mode != "control" and self.trigger.product not in names:
            raise ValueError(
                f"trigger.product: {self.trigger.product!r} names no [[product]] (have {names});"
                f" {self.trigger.mode} parts are inspected with that recipe"
            )
        return self

    @model_validator(mode="after")
    def _null_engine(self) -> CellConfig:
        if self.engine.kind == "null" and not simulated(self.camera) and not self.allow_null_engine:
            raise ValueError(
                "engine.kind: 'null' judges no image (every part passes); it is for the "
                "simulated camera, or set allow_null_engine = true to commission a real one"
            )
        return self

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


_TAGS = DEVICE_TAGS  # the device unions' tags: the registered kinds (afrd.acquire.registry)


def _loc(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and loc[i - 1] == "engine" and part in engine_tags():
            continue  # the engine union's tag: a registered kind (afrd.config.engine)
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
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r});"
            f" expected a UTF-8 TOML file"
        ) from None
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
    for holder in (cfg, *cfg.product):
        for key in ("bundle", "flatfield", "exposure"):
            v = getattr(holder, key)
            if isinstance(v, Path) and not v.is_absolute():
                setattr(holder, key, base / v)
    if not cfg.recorder.dir.is_absolute():
        cfg.recorder.dir = base / cfg.recorder.dir
    if cfg.opcua is not None:
        cfg.opcua.resolve_paths(base)
    if cfg.mqtt is not None:
        cfg.mqtt.resolve_paths(base)
    cfg.access.resolve_paths(base)
    cfg.models.resolve_paths(base)
    line = getattr(cfg.camera, "line", None)
    if line is not None and not line.is_absolute():
        cfg.camera.line = base / line
    if cfg.sockets.curve_keys_dir is not None and not cfg.sockets.curve_keys_dir.is_absolute():
        cfg.sockets.curve_keys_dir = base / cfg.sockets.curve_keys_dir
    return cfg
