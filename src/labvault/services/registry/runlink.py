"""Linking a version to the run that produced it, through tracking's public API (``vault.runs``).

Without a run, ``metrics.json`` is ``{}``, ``run.json`` is ``{}`` and ``data_manifest.json`` is ``[]``
(a user ``metrics.json`` in the model folder is kept and read by the metric gates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.layout import FileEntry, dump_json

__all__ = ["RunSourceInfo", "artifact_content", "check_recorded_output", "generated_files", "load_run"]


@dataclass(frozen=True, slots=True)
class RunSourceInfo:
    id: str
    ref: str
    run: Any
    record: dict[str, Any]


def load_run(ctx: RegistryContext, run: str) -> RunSourceInfo:
    runs = ctx.runs()
    if runs is None:
        raise ValidationError(
            "this labvault has no run tracking, so --from run:ID cannot be used", hint="register from a folder"
        )
    found = runs.get(run)
    return RunSourceInfo(id=found.id, ref=found.ref, run=found, record=runs.export(found.ref))


def artifact_content(ctx: RegistryContext, source: RunSourceInfo, artifact: str | None) -> Any:
    raise ValidationError("registering from a run's artifact needs run tracking", hint="register from a folder")


def check_recorded_output(
    ctx: RegistryContext,
    source: RunSourceInfo,
    path: Path,
    files: list[FileEntry],
    allow_modified: bool,
    notes: list[str],
) -> None:
    return None


def generated_files(ctx: RegistryContext, source: RunSourceInfo | None, files: list[FileEntry]) -> dict[str, bytes]:
    if source is None:
        return {"metrics.json": dump_json({}), "run.json": dump_json({}), "data_manifest.json": dump_json([])}
    metrics = dict(getattr(source.run, "metrics", {}) or {})
    return {
        "metrics.json": dump_json(metrics),
        "run.json": dump_json(source.record),
        "data_manifest.json": dump_json([]),
    }
