"""``run.yaml``: a run as one self-contained, sorted document; and side-by-side comparison."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from labvault.entities import Run, format_time, json_safe
from labvault.errors import LabvaultError
from labvault.refs import Digest
from labvault.safeload import loads_json
from labvault.services.capture.environment import environment_summary

if TYPE_CHECKING:
    from labvault.services.tracking.service import Tracking
    from labvault.storage.objects.protocol import ObjectStore

__all__ = ["EXPORT_FORMAT", "RunSources", "compare_runs", "export_run", "run_header"]

EXPORT_FORMAT = "labvault.run/1"


class RunSources(Protocol):
    """What exporting a run reads besides its record: the tracking service, or the lean
    ``runs show`` (``cli/lean_runs.py``), which must not import the service's database layer."""

    @property
    def objects(self) -> ObjectStore: ...

    @property
    def resolve_input(self) -> Callable[[str], str | None] | None: ...


def _environment(service: RunSources, run: Run) -> dict[str, Any] | None:
    ref = run.capture.get("environment")
    if not isinstance(ref, str):
        return None
    try:
        doc = loads_json(service.objects.get_bytes(Digest(ref.removeprefix("sha256:"))), name=f"environment {ref}")
    except (LabvaultError, ValueError) as exc:
        return {"sha256": ref, "error": str(exc)}
    if not isinstance(doc, dict):
        return {"sha256": ref, "error": f"environment {ref} is not a JSON object"}
    return {"sha256": ref, **environment_summary(doc)}


def _config(service: RunSources, run: Run) -> list[dict[str, Any]]:
    out = []
    for entry in run.capture.get("config") or []:
        item = dict(entry)
        try:
            data = service.objects.get_bytes(Digest(entry["sha256"].removeprefix("sha256:")))
            try:
                item["content"] = data.decode("utf-8")
            except UnicodeDecodeError:
                item["content"] = None  # binary: fetch it with `labvault object cat <sha256>`
        except LabvaultError as exc:
            item["error"] = str(exc)
        out.append(item)
    return out


def _inputs(service: RunSources, run: Run) -> list[dict[str, Any]]:
    out = []
    for ref in run.inputs:
        item: dict[str, Any] = {"ref": ref}
        if service.resolve_input is not None:
            try:
                item["manifest_sha256"] = service.resolve_input(ref)
            except LabvaultError as exc:
                item["error"] = str(exc)
        out.append(item)
    return out


def run_header(run: Run) -> dict[str, Any]:
    """What names a run and how it ended: the fields every JSON form of a run starts with."""
    return {
        "id": run.id,
        "ref": run.ref,
        "project": run.project,
        "name": run.name,
        "status": run.status,
        "parent": f"run:{run.parent_id}" if run.parent_id else None,
        "user": run.user,
        "host": run.host,
        "started_at": format_time(run.started_at),
        "ended_at": format_time(run.ended_at) if run.ended_at else None,
        "duration_seconds": run.duration,
        "exit_code": run.exit_code,
        "error": run.error,
    }


def export_run(service: RunSources, run: Run) -> dict[str, Any]:
    cap = run.capture
    git = cap.get("git") or {}
    return {
        "format": EXPORT_FORMAT,
        **run_header(run),
        "command": cap.get("command"),
        "cwd": cap.get("cwd"),
        "pid": cap.get("pid"),
        "code": {
            "commit": git.get("commit"),
            "branch": git.get("branch"),
            "remote": git.get("remote"),
            "dirty": git.get("dirty"),
            "patch": cap.get("patch"),
            **({"left_out": git["left_out"]} if git.get("left_out") else {}),  # not in the patch, on purpose
        },
        "inputs": _inputs(service, run),
        "config": _config(service, run),
        "seed": run.seed,
        "seeds": cap.get("seeds"),
        "pythonhashseed": cap.get("pythonhashseed"),
        "environment": _environment(service, run),
        "params": run.params,
        "metrics": {k: json_safe(v) for k, v in run.metrics.items()},
        "tags": run.tags,
        "artifacts": [
            {
                "name": a.name,
                "kind": a.kind,
                "sha256": str(a.digest),
                "size": a.size,
                "output": a in run.outputs,
            }
            for a in run.artifacts
        ],
        "stdout": cap.get("stdout"),
        "stderr": cap.get("stderr"),
        "capture_warnings": list(cap.get("warnings") or []),
        "deleted_at": format_time(run.deleted_at) if run.deleted_at else None,
    }


def _row(values: Sequence[Any]) -> dict[str, Any]:
    norm = [json.dumps(v, sort_keys=True, default=str) for v in values]
    return {"values": list(values), "differs": len(set(norm)) > 1}


def compare_runs(service: Tracking, runs: Sequence[Run]) -> dict[str, Any]:
    """Params, metrics, inputs, artifacts, code and environment side by side; ``differs`` marks differences."""
    docs = [export_run(service, r) for r in runs]
    sections: dict[str, dict[str, Any]] = {
        "params": {},
        "metrics": {},
        "attributes": {},
        "artifacts": {},
        "code": {},
        "environment": {},
    }
    for key in sorted({k for r in runs for k in r.params}):
        sections["params"][key] = _row([r.params.get(key) for r in runs])
    for key in sorted({k for r in runs for k in r.metrics}):
        sections["metrics"][key] = _row([json_safe(r.metrics[key]) if key in r.metrics else None for r in runs])
    # Start times and durations always differ; they are in `runs show`, not worth a row here.
    for key in ("project", "name", "status", "exit_code", "seed"):
        sections["attributes"][key] = _row([d[key] for d in docs])
    sections["attributes"]["inputs"] = _row([list(r.inputs) for r in runs])
    # By content: "is the model file the same?" is answered by its sha256 (a tree's for a folder).
    for name in sorted({a.name for r in runs for a in r.artifacts}):
        sections["artifacts"][name] = _row(
            [next((str(a.digest) for a in r.artifacts if a.name == name), None) for r in runs]
        )
    for key in ("commit", "branch", "dirty", "patch"):
        sections["code"][key] = _row([d["code"][key] for d in docs])
    env_keys = ("sha256", "python", "os", "cpu", "gpus", "cuda", "container", "packages", "lock_files")
    for key in env_keys:
        sections["environment"][key] = _row([(d["environment"] or {}).get(key) for d in docs])
    sections["environment"]["package_versions"] = _package_diff(service, runs)
    return {"runs": [{"id": r.id, "ref": r.ref, "name": r.name} for r in runs], **sections}


def _package_diff(service: Tracking, runs: Sequence[Run]) -> dict[str, Any]:
    """Packages whose version differs between the runs' environments (or that only some have)."""
    versions: list[dict[str, str]] = []
    for run in runs:
        ref = run.capture.get("environment")
        pkgs: dict[str, str] = {}
        if isinstance(ref, str):
            try:
                doc = loads_json(
                    service.objects.get_bytes(Digest(ref.removeprefix("sha256:"))), name=f"environment {ref}"
                )
                pkgs = {p["name"]: p["version"] for p in doc.get("packages") or []}
            except (LabvaultError, ValueError, KeyError, TypeError, AttributeError):
                pkgs = {}
        versions.append(pkgs)
    names = sorted({n for v in versions for n in v})
    return {
        n: {"values": [v.get(n) for v in versions], "differs": True}
        for n in names
        if len({v.get(n) for v in versions}) > 1
    }
