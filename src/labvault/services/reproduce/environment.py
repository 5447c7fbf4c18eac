"""The recorded environment against the one a rerun uses: Python and every package version."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.errors import LabvaultError
from labvault.refs import Digest
from labvault.safeload import loads_json
from labvault.services.capture.environment import capture_environment
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["EnvironmentDrift", "current_environment", "environment_drift", "load_environment"]


@dataclass(frozen=True, slots=True)
class EnvironmentDrift:
    python: tuple[str, str] | None  # (recorded, current) when they differ
    added: tuple[str, ...]  # name==version present now, not recorded
    removed: tuple[str, ...]  # name==version recorded, absent now
    changed: tuple[tuple[str, str, str], ...]  # (name, recorded, current)

    @property
    def empty(self) -> bool:
        return not (self.python or self.added or self.removed or self.changed)

    def packages(self) -> list[str]:
        """One line per difference: ``numpy 1.26.4 -> 2.0.0``, ``+rich 13.7.1``, ``-torch 2.3.0``."""
        return (
            [f"{n} {a} -> {b}" for n, a, b in self.changed]
            + [f"+{p}" for p in self.added]
            + [f"-{p}" for p in self.removed]
        )


def load_environment(objects: ObjectStore, digest: Digest | None) -> dict[str, Any] | None:
    if digest is None:
        return None
    try:
        doc = loads_json(objects.get_bytes(digest), name=f"environment {digest}")
    except LabvaultError:  # unreadable, or malformed (too deep included): no environment to compare
        return None
    return doc if isinstance(doc, dict) else None


def current_environment(root: Path) -> dict[str, Any]:
    data, _ = capture_environment(root)
    doc: dict[str, Any] = json.loads(data)  # labvault's own capture: always a JSON object
    return doc


def _packages(doc: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for p in doc.get("packages") or []:
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            out[p["name"].lower().replace("_", "-")] = str(p.get("version"))
    return out


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def environment_drift(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> EnvironmentDrift:
    """Python major.minor.patch and packages; labvault itself is left out (the rerun uses this copy)."""
    py_a = str((recorded.get("python") or {}).get("version", ""))
    py_b = str((current.get("python") or {}).get("version", ""))
    a, b = _packages(recorded), _packages(current)
    a.pop("labvault", None)
    b.pop("labvault", None)
    return EnvironmentDrift(
        python=(py_a, py_b) if py_a != py_b else None,
        added=tuple(f"{n}=={b[n]}" for n in sorted(set(b) - set(a))),
        removed=tuple(f"{n}=={a[n]}" for n in sorted(set(a) - set(b))),
        changed=tuple((n, a[n], b[n]) for n in sorted(set(a) & set(b)) if a[n] != b[n]),
    )


def same_python_minor(drift: EnvironmentDrift) -> bool:
    return drift.python is None or _minor(drift.python[0]) == _minor(drift.python[1])
