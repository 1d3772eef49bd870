"""Device kinds: each camera and lighting-controller kind declares its config model and how it
opens (a :class:`DeviceKind`), and registers it under the ``afrd.devices`` entry points::

    [project.entry-points."afrd.devices"]
    genicam = "afrd.acquire.kinds:GENICAM"

The ``[camera]`` and ``[controller]`` config unions are built from what is registered, so a new
kind is its module plus one entry-point line (in afrd's pyproject.toml or any installed
package's), and acquisition names no kind's package: the simulator registers its own kinds.
Entry points are read once, the first time a kind or a union is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, field_validator
from pydantic_core import PydanticCustomError

from afrd.errors import ConfigError

log = logging.getLogger(__name__)

Role = Literal["camera", "controller"]
ROLES: tuple[Role, ...] = ("camera", "controller")
GROUP = "afrd.devices"
UNKNOWN = "(unregistered kind)"  # the union's tag for a kind nobody registered
# what Devices reads from every config of a role (grab timeout; settle time after switching)
_NEEDS = {"camera": ("timeout_s",), "controller": ("settle_s",)}


@dataclass(frozen=True)
class DeviceKind:
    """One camera or controller kind. ``config``: the pydantic model of its config section, whose
    ``kind: Literal["<name>"] = "<name>"`` names the kind (a camera's has ``timeout_s``, a
    controller's ``settle_s``). ``open(config, devices)``: the driver, not yet opened, for an
    :class:`afrd.acquire.devices.Devices` (its ``trigger`` mode; a camera's also sees the
    controller built before it, and may wrap ``devices.controller``). ``simulated``: images no
    real part (``engine.kind = "null"`` may judge it). ``frame_shape(config)``: the (H, W, 3)
    the config fixes, or None. ``conditions(lights, pulse_us)``: a controller with a fixed
    wiring (the simulated cell) gives the lighting conditions of named lights."""

    role: Role
    config: type[BaseModel]
    open: Callable[[Any, Any], Any]
    simulated: bool = False
    frame_shape: Callable[[Any], tuple[int, int, int] | None] | None = None
    conditions: Callable[..., list] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise TypeError(f"DeviceKind role {self.role!r}: expected one of {ROLES}")
        field = self.config.model_fields.get("kind")
        if field is None or not isinstance(field.default, str) or field.default == UNKNOWN:
            raise TypeError(f"{self.config.__name__}: needs kind: Literal['<name>'] = '<name>'")
        if get_args(field.annotation) != (field.default,):
            raise TypeError(f"{self.config.__name__}.kind: annotate it Literal[{field.default!r}]")
        missing = [f for f in _NEEDS[self.role] if f not in self.config.model_fields]
        if missing:
            raise TypeError(f"{self.config.__name__}: a {self.role} config needs {missing}")

    @property
    def kind(self) -> str:
        return self.config.model_fields["kind"].default


_KINDS: dict[str, dict[str, DeviceKind]] | None = None


def _discover() -> dict[str, dict[str, DeviceKind]]:
    found: dict[str, dict[str, DeviceKind]] = {r: {} for r in ROLES}
    for ep in entry_points(group=GROUP):
        try:
            dk = ep.load()
        except Exception as exc:  # a broken plugin must not take the cell's other kinds down
            log.warning("device kind %s = %s not loaded: %s", ep.name, ep.value, exc)
            continue
        if not isinstance(dk, DeviceKind):
            log.warning("device kind %s = %s is not a DeviceKind; ignored", ep.name, ep.value)
            continue
        have = found[dk.role].setdefault(dk.kind, dk)
        if have is not dk:
            log.warning("%s kind %r registered twice; %s ignored", dk.role, dk.kind, ep.value)
    return {r: dict(sorted(found[r].items())) for r in ROLES}


def kinds(role: Role) -> dict[str, DeviceKind]:
    """The registered kinds of ``role`` by name, sorted."""
    global _KINDS
    if _KINDS is None:
        _KINDS = _discover()
    return _KINDS[role]


def device_kind(role: Role, kind: str) -> DeviceKind:
    """The registered ``kind`` of ``role``; ConfigError naming the registered ones if none."""
    have = kinds(role)
    if kind not in have:
        raise ConfigError(f"{role}.kind: {kind!r} is not registered; expected {_expected(role)}")
    return have[kind]


def kind_of(config: BaseModel) -> DeviceKind:
    """The registered kind whose config model ``config`` is."""
    for role in ROLES:
        for dk in kinds(role).values():
            if isinstance(config, dk.config):
                return dk
    raise ConfigError(f"{type(config).__name__}: the config of no registered device kind")


def _expected(role: Role) -> str:
    names = [repr(k) for k in kinds(role)]
    if not names:
        return (
            f"a registered {role} kind, and none is (no {GROUP!r} entry points: is afrd "
            "installed? pip install -e .)"
        )
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _unknown(role: Role) -> type[BaseModel]:
    """What an unregistered (or missing) kind validates as: one error at ``<role>.kind`` that
    lists the registered kinds (pydantic's own names the union's tags and no key)."""
    expected = _expected(role)

    class Unregistered(BaseModel):
        model_config = ConfigDict(extra="allow")  # the kind is wrong: its keys mean nothing yet

        kind: Any  # required: a missing kind is "required key missing"

        @field_validator("kind")
        @classmethod
        def _registered(cls, v: Any) -> Any:
            raise PydanticCustomError("device_kind", "expected {kinds}", {"kinds": expected})

    return Unregistered


def config_union(role: Role) -> Any:
    """The type of a ``[camera]``/``[controller]`` section: the registered kinds' config models,
    chosen by ``kind``."""
    registered = kinds(role)
    members: Sequence[Any] = [Annotated[k.config, Tag(n)] for n, k in registered.items()]
    if not members:
        return _unknown(role)

    def tag(v: Any) -> str | None:
        if not isinstance(v, (dict, BaseModel)):
            return None  # not a table: the discriminator's own error below
        kind = v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None)
        return kind if isinstance(kind, str) and kind in registered else UNKNOWN

    return Annotated[
        Union[(*members, Annotated[_unknown(role), Tag(UNKNOWN)])],  # noqa: UP007 - built at run time
        Discriminator(
            tag,
            custom_error_type="device_table",
            custom_error_message=f"expected a table with kind = {_expected(role)}",
        ),
    ]


def tags() -> frozenset[str]:
    """Every tag the device unions put into an error's path (the registered kind names)."""
    return frozenset(k for role in ROLES for k in kinds(role)) | {UNKNOWN}
