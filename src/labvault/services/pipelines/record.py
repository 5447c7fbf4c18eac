"""What a stage leaves in tracking: one child run of the ``pipeline`` run per stage that ran or was
restored (command, log, timings, params, ``data:`` inputs, outputs, metrics, the environment key)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.entities import Artifact
from labvault.errors import ValidationError
from labvault.refs import Digest
from labvault.safeload import load_json, load_yaml
from labvault.services.pipelines.plan import Decision
from labvault.services.pipelines.spec import Stage
from labvault.services.snapshots.lockfile import read_lock

if TYPE_CHECKING:
    from labvault.services.tracking import Tracking

__all__ = ["read_metrics", "record_stage_run"]


def record_stage_run(
    runs: Tracking,
    root: Path,
    parent: str,
    stage: Stage,
    decision: Decision,
    outs: dict[str, tuple[str, str]],
    *,
    restored: bool,
    outcome: Any,
    error: str | None,
    env: str | None,
    version: dict[str, str] | None = None,
) -> str:
    names = {d.removeprefix("data:").partition("@")[0] for d in stage.deps if d.startswith("data:")}
    inputs = [str(e.ref) for e in read_lock(root).values() if e.ref.name in names]
    tags = {
        "pipeline.stage": stage.name,
        "pipeline.key": decision.key or "",
        "pipeline.status": "restored from cache" if restored else ("failed" if error else "ran"),
    }
    if env:
        tags["pipeline.env"] = env
    tags.update(version or {})
    run = runs.create(
        name=stage.name,
        parent_id=parent,
        command=["sh", "-c", stage.cmd],
        cwd=root / stage.wdir,
        inputs=inputs,
        tags=tags,
        capture=False,
    )
    params = {_param_key(k): v for k, v in stage.params.items()}
    if params:
        runs.log_params(run.id, params)
    doc: dict[str, Any] = {
        "stage": stage.name,
        "key": decision.key,
        "reasons": decision.reasons,
        "deps": decision.deps,
        "outs": {p: d for p, (d, _k) in outs.items()},
        "restored": restored,
        "environment": env,
    }
    if outcome is not None:
        doc.update(started=outcome.started, ended=outcome.ended, worker=outcome.worker)
        runs.log_bytes(run.id, outcome.log.encode("utf-8", "replace"), name="log.txt")
    runs.update_capture(run.id, {"pipeline": doc})
    for path, (digest, kind) in outs.items():
        size = os.path.getsize(root / path) if kind == "file" and (root / path).is_file() else 0
        art = Artifact(
            path.replace("/", "_"),
            Digest(digest.removeprefix("sha256:")),
            "tree" if kind == "dir" else "file",
            size,
            path,
        )
        runs.record_artifact(run.id, art, role="output")
    if not error:
        metrics = read_metrics(root, stage)
        if metrics:
            runs.log_metrics(run.id, [(k, v, 0) for k, v in metrics.items()])
    runs.finish(
        run.id,
        status="failed" if error else "finished",
        exit_code=getattr(outcome, "returncode", 0) if outcome is not None else 0,
        error=error,
    )
    return run.id


def read_metrics(root: Path, stage: Stage) -> dict[str, float]:
    """The numeric leaves of the stage's metrics files (JSON or YAML, read through the safe loader)."""
    out: dict[str, float] = {}
    for path in stage.metrics:
        full = root / path
        try:
            doc = load_json(full, name=path) if path.endswith(".json") else load_yaml(full, name=path)
        except (FileNotFoundError, ValidationError):
            continue
        _flatten(doc, "", out)
    return out


def _param_key(key: str) -> str:
    file, _, name = key.partition(":")
    return name if file == "params.yaml" else f"{file}/{name}"


def _flatten(doc: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(doc, bool):
        return
    if isinstance(doc, int | float):
        if prefix:
            out[prefix] = float(doc)
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
