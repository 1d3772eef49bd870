"""The base of every engine's options model: strict, so a misspelt or mistyped option is a
config error naming the key, not a TypeError (or a silently ignored keyword) when the engine
opens. Each engine declares its model in its own torch-free ``<kind>_options`` module, which
the config reads without importing the backend."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EngineOptions(BaseModel):
    """An engine's ``[engine] options``; the set ones become the engine's keyword arguments."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
