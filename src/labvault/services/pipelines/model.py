"""The schema of one stage in ``labvault.yaml`` (pydantic, at this edge only).

Imported only when the definition must be parsed again (the spec cache answers otherwise), so that a
no-op ``pipeline status`` does not pay for pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from labvault.errors import ValidationError

__all__ = ["StageModel", "validate_stage"]

Scalar = str | int | float | bool


class StageModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cmd: str | list[str]
    deps: list[str] = Field(default_factory=list)
    outs: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    params: list[str | dict[str, list[str]]] = Field(default_factory=list)
    wdir: str = "."
    frozen: bool = False
    always_changed: bool = False
    env: Literal["ignore"] | None = None
    matrix: dict[str, list[Scalar]] | None = None
    desc: str | None = None


def validate_stage(body: Any, *, where: Callable[..., str], hint: str) -> StageModel:
    """The validated stage; an error names the file, line and key through ``where(key...)``."""
    if not isinstance(body, dict):
        raise ValidationError(f"{where()}: a stage is a mapping (cmd:, deps:, outs:, ...)", hint=hint)
    try:
        return StageModel.model_validate(body)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
        loc = [str(p) for p in first["loc"]]
        key = loc[0] if loc else ""
        if first["type"] == "extra_forbidden":
            message = f"unknown key (allowed: {', '.join(StageModel.model_fields)})"
        elif first["type"] == "missing":
            message = "is required"
        else:
            message = first["msg"]
        shown = where(key) + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        raise ValidationError(f"{shown}: {message}", hint=hint) from None
