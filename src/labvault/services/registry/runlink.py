"""Linking a version to the run that produced it, through tracking's public API (``vault.runs``).

- ``metrics.json``: the run's latest value of each metric; ``run.json``: ``vault.runs.export``;
  ``data_manifest.json``: the manifests of the run's input snapshots (``vault.data.get``), a list.
- Without a run: ``metrics.json`` is ``{}``, ``run.json`` is ``{}``, ``data_manifest.json`` is ``[]``
  (a user ``metrics.json`` in the model folder is kept and is what the metric gates read).
- When PATH is one of the run's recorded artifacts, its files must still match what the run
  recorded (else Conflict, unless ``allow_modified``, which records the mismatch as a note).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.entities import json_safe
from labvault.errors import Conflict, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.layout import CHECKSUM, FileEntry, dump_json, iter_tree_files

__all__ = ["RunSourceInfo", "artifact_content", "check_recorded_output", "generated_files", "load_run"]


@dataclass(frozen=True, slots=True)
class RunSourceInfo:
    id: str
    ref: str
    run: Any
    record: dict[str, Any]


@dataclass
class ArtifactContent:
    files: list[FileEntry]
    source: dict[str, Any]
    run_id: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    links: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> target, kept as links


def load_run(ctx: RegistryContext, run: str) -> RunSourceInfo:
    runs = ctx.runs()
    if runs is None:
        raise ValidationError(
            "this labvault has no run tracking, so --from run:ID cannot be used", hint="register from a folder"
        )
    if not run.startswith("run:"):
        run = f"run:{run}"
    found = runs.get(run)
    return RunSourceInfo(id=found.id, ref=found.ref, run=found, record=runs.export(found.ref))


def _artifacts(source: RunSourceInfo) -> list[Any]:
    seen: dict[str, Any] = {}
    for a in (*getattr(source.run, "outputs", ()), *getattr(source.run, "artifacts", ())):
        seen.setdefault(a.name, a)
    return list(seen.values())


def _files_of_artifact(ctx: RegistryContext, artifact: Any) -> list[FileEntry]:
    digest = Digest(artifact.digest.hex) if not isinstance(artifact.digest, Digest) else artifact.digest
    if artifact.kind == "tree":
        return sorted(iter_tree_files(ctx.objects, digest), key=lambda f: f.path)
    return [FileEntry(artifact.name.rsplit("/", 1)[-1], digest, int(artifact.size))]


def artifact_content(ctx: RegistryContext, source: RunSourceInfo, artifact: str | None) -> ArtifactContent:
    """The files of one of the run's recorded artifacts (no working folder needed)."""
    arts = _artifacts(source)
    names = ", ".join(sorted(a.name for a in arts)) or "none"
    if artifact is None:
        if len(arts) != 1:
            raise ValidationError(
                f"{source.ref} has {len(arts)} artifacts ({names}); say which to register",
                hint="add --artifact NAME, or give the model's folder",
            )
        chosen = arts[0]
    else:
        chosen = next((a for a in arts if a.name == artifact), None)
        if chosen is None:
            raise NotFound(f"{source.ref} has no artifact {artifact!r} (it has: {names})", hint="check the name")
    files = _files_of_artifact(ctx, chosen)
    if not files:
        raise ValidationError(f"artifact {chosen.name} of {source.ref} holds no files", hint="nothing to register")
    for f in files:
        if not ctx.objects.has(f.digest):
            raise NotFound(f"artifact {chosen.name} of {source.ref}: object {f.digest} is missing", hint="run fsck")
    files = [f for f in files if f.path != CHECKSUM]
    return ArtifactContent(files=files, source={"run": source.ref, "artifact": chosen.name})


def _same_path(ctx: RegistryContext, recorded: str | None, path: Path) -> bool:
    if not recorded:
        return False
    target = path.resolve()
    candidates = [Path(recorded)] if Path(recorded).is_absolute() else [ctx.root / recorded, Path.cwd() / recorded]
    return any(c.resolve() == target for c in candidates)


def check_recorded_output(
    ctx: RegistryContext,
    source: RunSourceInfo,
    path: Path,
    files: list[FileEntry],
    allow_modified: bool,
    notes: list[str],
) -> None:
    """If PATH is one of the run's recorded artifacts, its content must match the record."""
    for art in _artifacts(source):
        if not _same_path(ctx, getattr(art, "path", None), path):
            continue
        recorded = {f.path: f.digest for f in _files_of_artifact(ctx, art) if f.path != CHECKSUM}
        current = {f.path: f.digest for f in files}
        if recorded == current:
            notes.append(f"content matches artifact {art.name} recorded by {source.ref}")
            return
        changed = sorted({p for p in recorded.keys() | current.keys() if recorded.get(p) != current.get(p)})
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        if not allow_modified:
            raise Conflict(
                f"{path} differs from artifact {art.name} that {source.ref} recorded ({shown})",
                hint="register what the run recorded with --from RUN --artifact NAME, or pass --allow-modified",
            )
        notes.append(f"modified after {source.ref} recorded it as artifact {art.name}: {shown} (--allow-modified)")
        return


def _plain(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return json.loads(json.dumps(value.to_json(), default=str))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return json.loads(json.dumps(value, default=str))


def generated_files(
    ctx: RegistryContext, source: RunSourceInfo | None, files: list[FileEntry], notes: list[str] | None = None
) -> dict[str, bytes]:
    if source is None:
        return {"metrics.json": dump_json({}), "run.json": dump_json({}), "data_manifest.json": dump_json([])}
    metrics = {k: json_safe(v) for k, v in dict(getattr(source.run, "metrics", {}) or {}).items()}
    data = ctx.data()
    manifests: list[Any] = []
    for ref in getattr(source.run, "inputs", ()):
        try:
            manifest = _plain(data.get(ref)) if data is not None else None
        except LabvaultError as err:
            # The run's record stands; a snapshot that cannot be read is named, not fatal.
            manifests.append({"ref": ref, "error": err.message})
            if notes is not None:
                notes.append(f"input {ref} of {source.ref}: {err.message}")
            continue
        if isinstance(manifest, dict):
            manifest.setdefault("ref", ref)
            manifests.append(manifest)
        else:
            manifests.append({"ref": ref})
    return {
        "metrics.json": dump_json(metrics),
        "run.json": dump_json(_plain(source.record)),
        "data_manifest.json": dump_json(manifests),
    }
