"""Comparison tolerances: ``labvault.yaml``'s ``reproduce:`` section, overridden by the command line.

```yaml
reproduce:
  rtol: 0
  atol: 0
  metrics:
    auc: {atol: 1e-6}
  ignore_metrics: [train_seconds]
  ignore_artifacts: [logs]
```

Only the ``reproduce`` node is constructed (through :mod:`labvault.safeload`), so other sections
neither cost nor fail anything here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labvault.errors import ValidationError
from labvault.safeload import compose_yaml, construct_yaml, read_limited

__all__ = ["Tolerance", "Tolerances", "load_tolerances"]

_FILE = "labvault.yaml"
_HINT = "reproduce: {rtol: 0, atol: 0, metrics: {auc: {atol: 1e-6}}, ignore_metrics: [...], ignore_artifacts: [...]}"


@dataclass(frozen=True, slots=True)
class Tolerance:
    rtol: float = 0.0
    atol: float = 0.0

    def allows(self, recorded: float, rerun: float) -> bool:
        return abs(rerun - recorded) <= self.atol + self.rtol * abs(recorded)


@dataclass(frozen=True, slots=True)
class Tolerances:
    default: Tolerance = Tolerance()
    metrics: Mapping[str, Tolerance] = field(default_factory=dict)
    ignore_metrics: frozenset[str] = frozenset()
    ignore_artifacts: frozenset[str] = frozenset()

    def for_metric(self, key: str) -> Tolerance:
        return self.metrics.get(key, self.default)


def check_tolerance(value: object, *, what: str) -> float:
    """A tolerance is a finite number >= 0 (``--rtol -1`` is a usage error, exit 2)."""
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as text
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValidationError(f"{what} must be a finite number >= 0, not {value!r}", hint=_HINT)
    return float(value)


def _section(root: Path) -> tuple[dict[str, Any], int]:
    try:
        data = read_limited(root / _FILE, name=_FILE, hint=f"fix {_FILE}")
    except FileNotFoundError:
        return {}, 0
    node = compose_yaml(data, name=_FILE, hint=f"fix {_FILE}")
    if not isinstance(node, yaml.MappingNode):
        return {}, 0
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "reproduce":
            line = value_node.start_mark.line + 1
            value = construct_yaml(value_node, name=_FILE, hint=f"fix {_FILE}")
            if value is None:
                return {}, line
            if not isinstance(value, dict):
                raise ValidationError(f"{_FILE}:{line}: reproduce must be a mapping", hint=_HINT)
            return value, line
    return {}, 0


def _names(value: object, *, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{where} must be a list of names", hint=_HINT)
    return frozenset(value)


def load_tolerances(
    root: Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    ignore_metrics: Sequence[str] = (),
    ignore_artifacts: Sequence[str] = (),
) -> Tolerances:
    """The project's settings, then the command line's: given ``rtol``/``atol`` replace every default."""
    doc, line = _section(root)
    where = f"{_FILE}:{line}: reproduce"
    unknown = sorted(set(doc) - {"rtol", "atol", "metrics", "ignore_metrics", "ignore_artifacts"})
    if unknown:
        raise ValidationError(f"{where}: unknown key {unknown[0]!r}", hint=_HINT)
    default = Tolerance(
        check_tolerance(doc.get("rtol", 0), what=f"{where}.rtol"),
        check_tolerance(doc.get("atol", 0), what=f"{where}.atol"),
    )
    per_metric: dict[str, Tolerance] = {}
    metrics = doc.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ValidationError(f"{where}.metrics must map metric names to {{rtol, atol}}", hint=_HINT)
    for key, spec in metrics.items():
        if not isinstance(spec, dict) or set(spec) - {"rtol", "atol"}:
            raise ValidationError(f"{where}.metrics.{key} must be {{rtol: R, atol: A}}", hint=_HINT)
        per_metric[str(key)] = Tolerance(
            check_tolerance(spec.get("rtol", default.rtol), what=f"{where}.metrics.{key}.rtol"),
            check_tolerance(spec.get("atol", default.atol), what=f"{where}.metrics.{key}.atol"),
        )
    if rtol is not None or atol is not None:
        cli_rtol = check_tolerance(rtol, what="--rtol") if rtol is not None else None
        cli_atol = check_tolerance(atol, what="--atol") if atol is not None else None
        default = Tolerance(
            default.rtol if cli_rtol is None else cli_rtol, default.atol if cli_atol is None else cli_atol
        )
        per_metric = {}  # the command line speaks for every metric
    return Tolerances(
        default=default,
        metrics=per_metric,
        ignore_metrics=_names(doc.get("ignore_metrics"), where=f"{where}.ignore_metrics") | frozenset(ignore_metrics),
        ignore_artifacts=_names(doc.get("ignore_artifacts"), where=f"{where}.ignore_artifacts")
        | frozenset(ignore_artifacts),
    )
