"""The ``[engine]`` section: the engine kind and its options, typed by the engine's own options
model (``afrd.runtime.engines.ENGINES``), so a misspelt or mistyped option is a config error,
not a TypeError (or a silently ignored keyword) when the engine opens.

The kinds accepted are the registry's when a config is validated: the tagged union of one model
per kind is built from ``ENGINES`` when first needed and again once a kind is added
(``register_engine``). Only the options models are imported, never an engine.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, create_model

from afrd.runtime.engines import DEFAULT_ENGINE, ENGINES, engine_options
from afrd.runtime.engines.options import EngineOptions


class EngineConfig(BaseModel):
    """``[engine]``. Validated configs hold one kind's model, whose ``kind`` is that kind and
    whose ``options`` are its options model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str = DEFAULT_ENGINE
    options: EngineOptions = Field(default_factory=EngineOptions)

    def open_options(self) -> dict[str, Any]:
        """The options as the engine's keyword arguments (only those the config sets)."""
        return self.options.model_dump(exclude_unset=True)


@cache
def _kind_model(kind: str, options: type[EngineOptions]) -> type[EngineConfig]:
    return create_model(
        f"EngineConfig[{kind}]",
        __base__=EngineConfig,
        kind=(Literal[kind], kind),
        options=(options, Field(default_factory=options)),
    )


def _kind_of(v: Any) -> Any:
    return v.get("kind", DEFAULT_ENGINE) if isinstance(v, dict) else getattr(v, "kind", None)


@lru_cache(maxsize=4)
def _adapter(engines: tuple[tuple[str, Any], ...]) -> TypeAdapter:
    kinds = [k for k, _ in engines]
    quoted = [repr(k) for k in kinds]
    expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
    members = tuple(Annotated[_kind_model(k, engine_options(k)), Tag(k)] for k in kinds)
    return TypeAdapter(
        Annotated[
            Union[members],  # noqa: UP007 (a union of a runtime tuple)
            Discriminator(
                _kind_of,
                custom_error_type="engine_kind",
                custom_error_message=f"engine.kind: expected {expected}",
            ),
        ]
    )


def validate_engine(value: Any) -> EngineConfig:
    """``[engine]`` as one registered kind's model; pydantic's ValidationError otherwise (its
    paths carry the kind as a union tag, which ``engine_tags`` lets messages drop)."""
    return _adapter(tuple(ENGINES.items())).validate_python(value)


def default_engine() -> EngineConfig:
    """A config without ``[engine]``: ONNX Runtime with its default options."""
    return _kind_model(DEFAULT_ENGINE, engine_options(DEFAULT_ENGINE))()


def engine_tags() -> set[str]:
    """The registered kinds: the union tags pydantic puts after ``engine`` in error paths."""
    return set(ENGINES)
