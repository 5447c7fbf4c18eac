"""The values of a lineage diff (``lineage diff A B``): one frozen dataclass per section, each with its
JSON form. Built by :mod:`labvault.services.lineage.diff`, decoded from a server's answer by the client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labvault.entities import json_safe

__all__ = ["CodeChange", "ConfigChange", "DataChange", "LineageDiff", "MetricRow", "PackageChange", "SeedRow"]


@dataclass(frozen=True, slots=True)
class DataChange:
    """One dataset on both sides: ``a`` and ``b`` are snapshot refs (None where that side read none)."""

    dataset: str
    a: str | None
    b: str | None
    files_added: int = 0
    files_removed: int = 0
    files_modified: int = 0
    records: tuple[int | None, int | None] = (None, None)
    schema: tuple[str, ...] = ()  # "added country", "removed x", "retyped amount int64->double"
    max_psi: float | None = None
    max_psi_column: str | None = None
    verdict: str = "no change"  # no change | no drift | drift | schema changed | added | removed | unknown
    note: str | None = None  # why it could not be compared

    @property
    def changed(self) -> bool:
        return self.a != self.b

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "a": self.a,
            "b": self.b,
            "verdict": self.verdict,
            "files": {"added": self.files_added, "removed": self.files_removed, "modified": self.files_modified},
            "records": {"a": self.records[0], "b": self.records[1]},
            "schema": list(self.schema),
            "max_psi": json_safe(self.max_psi),
            "max_psi_column": self.max_psi_column,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class CodeChange:
    a: str | None  # commit
    b: str | None
    commits: int | None = None  # commits reachable from b and not from a (git rev-list --count a..b)
    commits_back: int | None = None  # and the other way (b..a): b is older than a when only this is set
    files: tuple[tuple[str, str], ...] = ()  # (git status letter, path), a bounded list (diff._MAX_FILES)
    files_changed: int | None = None  # None when git could not tell
    patch_a: str | None = None  # the uncommitted changes each run recorded (sha256:...)
    patch_b: str | None = None
    note: str | None = None

    @property
    def changed(self) -> bool:
        return self.a != self.b or self.patch_a != self.patch_b

    @property
    def range(self) -> str | None:
        return f"{self.a[:12]}..{self.b[:12]}" if self.a and self.b and self.a != self.b else None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "range": self.range,
            "commits": self.commits,
            "commits_back": self.commits_back,
            "files_changed": self.files_changed,
            "files": [{"status": s, "path": p} for s, p in self.files],
            "patch": {"a": self.patch_a, "b": self.patch_b},
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A key whose value differs: ``source`` is a config file's recorded path, or ``params``."""

    source: str
    key: str  # dotted for nested keys; "" for a file that is not a mapping
    a: Any
    b: Any
    change: str  # changed | added | removed

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key,
            "a": json_safe(self.a),
            "b": json_safe(self.b),
            "change": self.change,
        }


@dataclass(frozen=True, slots=True)
class PackageChange:
    name: str  # "python" for the interpreter
    a: str | None
    b: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class SeedRow:
    name: str  # seed, pythonhashseed
    a: Any
    b: Any

    @property
    def changed(self) -> bool:
        return bool(self.a != self.b)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "a": self.a, "b": self.b, "differs": self.changed}


@dataclass(frozen=True, slots=True)
class MetricRow:
    name: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return self.b - self.a

    @property
    def changed(self) -> bool:
        same = self.a == self.b or (
            self.a is not None and self.b is not None and math.isnan(self.a) and math.isnan(self.b)
        )
        return not same

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a": json_safe(self.a),
            "b": json_safe(self.b),
            "delta": json_safe(self.delta),
            "differs": self.changed,
        }


@dataclass(frozen=True, slots=True)
class LineageDiff:
    """What differs between the lineage of ``a`` and ``b`` (model version or run refs)."""

    a: str
    b: str
    run_a: str  # run:<id>
    run_b: str
    data: tuple[DataChange, ...]
    code: CodeChange
    config: tuple[ConfigChange, ...]
    environment: tuple[PackageChange, ...]
    environment_note: str | None
    seeds: tuple[SeedRow, ...]
    metrics: tuple[MetricRow, ...]

    @property
    def changed(self) -> dict[str, bool]:
        """Which sections differ."""
        return {
            "data": any(d.changed for d in self.data),
            "code": self.code.changed,
            "config": bool(self.config),
            "environment": bool(self.environment),
            "seeds": any(s.changed for s in self.seeds),
            "metrics": any(m.changed for m in self.metrics),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "runs": {"a": self.run_a, "b": self.run_b},
            "changed": self.changed,
            "data": [d.to_json() for d in self.data],
            "code": self.code.to_json(),
            "config": [c.to_json() for c in self.config],
            "environment": {"packages": [p.to_json() for p in self.environment], "note": self.environment_note},
            "seeds": [s.to_json() for s in self.seeds],
            "metrics": [m.to_json() for m in self.metrics],
        }
