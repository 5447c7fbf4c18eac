"""Promotion policies from ``labvault.yaml``: parsed with line numbers, validated with pydantic.

::

    models:
      fraud/detector:          # project/model
        staging:               # alias
          metrics: {auc: ">= 0.90", latency_ms: "< 50"}
          checks: [{name: validation, run: "python checks/validate.py {model_dir}", timeout: 300}]
        prod:
          from: staging
          drift: {reference: "data:transactions@v3", max_psi: 0.2, max_record_change: 0.1}
          rollback_plan: required
          approvals: 1
          reproducible: {env: rebuild, rtol: 1e-6}   # or: reproducible: required

Errors name the file, the line and the key: ``labvault.yaml:7: models.fraud/detector.prod.approvals: ...``.
Other top-level sections (``stages:``, ...) belong to other parts of labvault and are not read here.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from labvault.errors import ValidationError
from labvault.refs import DataRef, parse_ref, validate_name
from labvault.safeload import compose_yaml, construct_yaml, read_limited

__all__ = [
    "POLICY_FILE",
    "AliasPolicy",
    "CheckSpec",
    "DriftSpec",
    "PolicyFile",
    "ReproducibleSpec",
    "Threshold",
    "load_policy",
]

POLICY_FILE = "labvault.yaml"
_HINT = f"fix {POLICY_FILE}; its format is in docs/registry.md"
_THRESHOLD_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Threshold:
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        m = _THRESHOLD_RE.match(text)
        if not m:
            raise ValueError(f"threshold {text!r} must be a comparison like '>= 0.90' or '< 50'")
        return cls(m.group(1), float(m.group(2)))

    def holds(self, measured: float) -> bool:
        return not math.isnan(measured) and _OPS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CheckSpec(_Strict):
    name: str = Field(min_length=1, max_length=128)
    run: str = Field(min_length=1)
    timeout: float = Field(300.0, gt=0, le=86400)

    @field_validator("run")
    @classmethod
    def _splits(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command like a shell would: {exc}") from None
        if not words:
            raise ValueError("the command is empty")
        return value


class DriftSpec(_Strict):
    reference: str
    max_psi: float | None = Field(None, ge=0)
    max_record_change: float | None = Field(None, ge=0)
    allow_schema_change: bool = False

    @field_validator("reference")
    @classmethod
    def _data_ref(cls, value: str) -> str:
        try:
            parse_ref(value, expect=DataRef)
        except ValidationError as err:
            raise ValueError(err.message) from None
        return value


class ReproducibleSpec(_Strict):
    """``reproducible: {env: rebuild, rtol: ..., atol: ...}``: the source run must have a passing
    reproduction (in a rebuilt environment with ``env: rebuild``), whose every metric is within
    ``atol + rtol * |recorded|`` of the recorded value when a tolerance is given."""

    env: Literal["any", "rebuild"] = "any"
    rtol: float | None = Field(None, ge=0, allow_inf_nan=False)
    atol: float | None = Field(None, ge=0, allow_inf_nan=False)


def _threshold_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"write the threshold as a quoted comparison, like '>= {value}'")
    Threshold.parse(value)
    return value


ThresholdText = Annotated[str, BeforeValidator(_threshold_text)]


class AliasPolicy(_Strict):
    metrics: dict[str, ThresholdText] = Field(default_factory=dict)
    checks: list[CheckSpec] = Field(default_factory=list)
    from_: str | None = Field(None, alias="from")
    drift: DriftSpec | None = None
    rollback_plan: Literal["required", "optional"] = "optional"
    approvals: int = Field(0, ge=0, le=100)
    reproducible: ReproducibleSpec | None = None

    @field_validator("from_")
    @classmethod
    def _alias_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_name(value, what="alias")
            except ValidationError as err:
                raise ValueError(err.message) from None
        return value

    @field_validator("reproducible", mode="before")
    @classmethod
    def _reproducible(cls, value: Any) -> Any:
        # `required` is the gate with its defaults (any environment, the reproduction's own verdict).
        if value == "required":
            return {}
        if value == "optional" or value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("write `required`, or a mapping like {env: rebuild, rtol: 1e-6, atol: 0}")
        return value

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, value: list[CheckSpec]) -> list[CheckSpec]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"check names must be unique; repeated: {', '.join(dupes)}")
        return value

    def thresholds(self) -> dict[str, Threshold]:
        return {name: Threshold.parse(text) for name, text in self.metrics.items()}

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_defaults=False, mode="json")


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: Path
    hash: str | None  # sha256 of the file's bytes; None when there is no file
    policies: dict[tuple[str, str], dict[str, AliasPolicy]] = field(default_factory=dict)

    def for_alias(self, project: str, model: str, alias: str) -> AliasPolicy | None:
        return self.policies.get((project, model), {}).get(alias)


# -- YAML with line numbers ---------------------------------------------------------------------
_Lines = dict[tuple[Any, ...], int]


def _construct(node: yaml.Node, path: tuple[Any, ...], lines: _Lines, file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, (*path, "<key>"), lines, file)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise ValidationError(
                    f"{file}:{key_node.start_mark.line + 1}: {_dotted(path) or 'top level'}: keys must be plain names"
                )
            key = str(key)
            if key in out:
                raise ValidationError(
                    f"{file}:{key_node.start_mark.line + 1}: {_dotted((*path, key))}: duplicate key",
                    hint="each key may appear once in a mapping",
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return construct_yaml(node, name=file, hint=_HINT)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _line_for(lines: _Lines, path: tuple[Any, ...]) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


def load_policy(root: Path) -> PolicyFile:
    """Read and validate ``ROOT/labvault.yaml``; a missing file means no policies.

    Read through :mod:`labvault.safeload`: its size, depth and alias limits apply.
    """
    path = root / POLICY_FILE
    hint = _HINT
    try:
        data = read_limited(path, name=POLICY_FILE, hint=hint)
    except FileNotFoundError:
        return PolicyFile(path=path, hash=None)
    digest = hashlib.sha256(data).hexdigest()
    node = compose_yaml(data, name=POLICY_FILE, hint=hint)
    if node is None:
        return PolicyFile(path=path, hash=digest)
    lines: _Lines = {}
    doc = _construct(node, (), lines, POLICY_FILE)
    if not isinstance(doc, dict):
        raise ValidationError(f"{POLICY_FILE}:1: the file must be a mapping of sections (models:, ...)", hint=hint)
    models = doc.get("models")
    if models is None:
        return PolicyFile(path=path, hash=digest)
    if not isinstance(models, dict):
        raise ValidationError(
            f"{POLICY_FILE}:{lines[('models',)]}: models: must be a mapping of project/model", hint=hint
        )
    policies: dict[tuple[str, str], dict[str, AliasPolicy]] = {}
    for name, aliases in models.items():
        where = f"{POLICY_FILE}:{lines[('models', name)]}: models.{name}"
        project, sep, model = name.partition("/")
        try:
            if not sep:
                raise ValidationError("a model is named project/model")
            validate_name(project, what="project name")
            validate_name(model, what="model name")
        except ValidationError as err:
            raise ValidationError(f"{where}: {err.message}", hint="name models as project/model") from None
        if not isinstance(aliases, dict):
            raise ValidationError(f"{where}: must be a mapping of alias -> policy", hint=hint)
        parsed: dict[str, AliasPolicy] = {}
        for alias, body in aliases.items():
            try:
                validate_name(alias, what="alias")
            except ValidationError as err:
                raise ValidationError(
                    f"{POLICY_FILE}:{lines[('models', name, alias)]}: {err.message}", hint=hint
                ) from None
            try:
                parsed[alias] = AliasPolicy.model_validate(body if body is not None else {})
            except pydantic.ValidationError as exc:
                raise _schema_error(exc, ("models", name, alias), lines, hint) from None
        policies[(project, model)] = parsed
    return PolicyFile(path=path, hash=digest, policies=policies)


def _schema_error(exc: pydantic.ValidationError, base: tuple[Any, ...], lines: _Lines, hint: str) -> ValidationError:
    errors = exc.errors()

    def path_of(err: Any) -> tuple[Any, ...]:
        return (*base, *("from" if p == "from_" else p for p in err["loc"]))

    # A misspelt key usually explains the "field required" next to it: report it first.
    first = min(errors, key=lambda e: (e["type"] != "extra_forbidden", _line_for(lines, path_of(e))))
    loc = path_of(first)[len(base) :]
    path = path_of(first)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key (allowed: {', '.join(sorted(_allowed(base, loc)))})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ValidationError(f"{POLICY_FILE}:{_line_for(lines, path)}: {_dotted(path)}: {message}{more}", hint=hint)


def _allowed(base: tuple[Any, ...], loc: tuple[Any, ...]) -> list[str]:
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    if parents and parents[-1] == "drift":
        return list(DriftSpec.model_fields)
    if parents and parents[-1] in ("reproducible", "ReproducibleSpec"):
        return list(ReproducibleSpec.model_fields)
    if (parents and parents[-1] == "checks") or (len(loc) >= 2 and isinstance(loc[-2], int)):
        return list(CheckSpec.model_fields)
    return [f.alias or n for n, f in AliasPolicy.model_fields.items()]
