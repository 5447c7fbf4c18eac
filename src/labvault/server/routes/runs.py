"""``/api/v1/runs``: create, log in batches (idempotent with a key), artifacts, end, list, show,
compare, export, delete/restore, metric history, reproduction records."""

from __future__ import annotations

import socket
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from labvault.entities import Artifact, Run
from labvault.errors import Conflict, NotFound
from labvault.safeload import loads_json
from labvault.server.capture import CaptureIn, record_capture
from labvault.server.deps import Caller, caller
from labvault.server.encode import to_json
from labvault.server.fields import HostName, ProcessId
from labvault.server.routes.run_log import LogBatch, store_batch
from labvault.services.tracking.artifacts import artifact_name, stored_tree_size
from labvault.services.transfer import parse_full_digest

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
REPORT_NAME = "reproduce.json"  # the report `labvault reproduce` stores on its (first) rerun
MAX_REPORT = 16 * 1024 * 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    project: str | None = Field(None, max_length=128)
    name: str | None = Field(None, max_length=256)
    parent: str | None = Field(None, max_length=64, description="run:<id> of the parent run")
    inputs: list[str] = Field(default_factory=list, max_length=1000, description="data:<name>@<v> references")
    seed: int | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=1000)
    params: dict[str, Any] = Field(default_factory=dict, max_length=10_000)
    command: list[str] = Field(default_factory=list, max_length=1000, description="the client's command line")
    host: HostName | None = Field(None, description="the host the client's process runs on")
    pid: ProcessId | None = Field(None, description="the client's process id (its liveness is judged on its host)")


class ArtifactIn(_Body):
    name: str = Field(max_length=255)
    digest: str = Field(max_length=71, description="sha256:<hex> of an object uploaded to /api/v1/objects")
    kind: Literal["file", "tree"] = Field("file", description='"tree": a folder, every object of it uploaded')
    role: Literal["artifact", "output"] = Field("artifact", description='"output": declared by `labvault run -o`')
    path: str | None = Field(None, max_length=4096, description="the path the client stored it from, as text")


class RunInputs(_Body):
    inputs: list[str] = Field(max_length=1000, description="data:<name>@<v> references the run read")


class RunEnd(_Body):
    status: Literal["finished", "failed", "killed"] = "finished"
    exit_code: int | None = None
    error: str | None = Field(None, max_length=10_000)


@router.post("", status_code=201, summary="Create a running run")
def create_run(body: RunCreate, who: Writer) -> Any:
    runs = who.vault.runs
    run = runs.create(
        project=body.project,
        name=body.name or "api",
        parent_id=body.parent,
        inputs=body.inputs,
        seed=body.seed,
        tags=body.tags,
        command=body.command or ["api"],
        cwd=who.vault.root,
        capture=False,
        origin=_origin(body.host, body.pid),
    )
    if body.params:
        runs.log_params(run.id, body.params)
    return to_json(runs.get(run.id))


@router.get("", summary="List runs (the filter language of docs/tracking.md)")
def list_runs(
    who: Reader,
    filter: Annotated[str | None, Query(max_length=10_000)] = None,
    project: Annotated[str | None, Query(max_length=128)] = None,
    sort: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    deleted: bool = False,
) -> Any:
    return to_json(who.vault.runs.list(project=project, filter=filter, sort=sort, limit=limit, deleted=deleted))


@router.get("/compare", summary="Compare runs side by side")
def compare_runs(who: Reader, ref: Annotated[list[str], Query(min_length=1, max_length=100)]) -> Any:
    return to_json(who.vault.runs.compare(ref))


@router.get("/{ref}", summary="Show one run")
def show_run(ref: str, who: Reader) -> Any:
    return to_json(who.vault.runs.get(ref))


@router.get("/{ref}/export", summary="The run's self-contained run.yaml document")
def export_run(ref: str, who: Reader) -> Any:
    return to_json(who.vault.runs.export(ref))


@router.get("/{ref}/history", summary="Metric histories (one key, or all)")
def metric_history(ref: str, who: Reader, key: Annotated[str | None, Query(max_length=250)] = None) -> Any:
    return to_json(who.vault.runs.history(ref, key))


@router.get("/{ref}/reproductions", summary="The run's reproductions (reruns by `labvault reproduce`), oldest first")
def list_reproductions(ref: str, who: Reader) -> Any:
    runs = who.vault.runs
    original = runs.get(ref)
    found = runs.list(filter=f"tags.reproduces = '{original.ref}'", sort="started")
    return [_reproduction(r, original.ref) for r in found]


@router.get("/{ref}/reproductions/{rerun}", summary="One reproduction of the run, with its report")
def show_reproduction(ref: str, rerun: str, who: Reader) -> Any:
    """The report is the ``reproduce.json`` the rerun stored (null for a second rerun of ``--twice``,
    whose report is on the first)."""
    runs = who.vault.runs
    original = runs.get(ref)
    run = runs.get(rerun)
    if run.tags.get("reproduces") != original.ref:
        raise NotFound(
            f"{run.ref} is not a reproduction of {original.ref}",
            hint=f"list them: GET /api/v1/runs/{original.id}/reproductions",
        )
    return dict(_reproduction(run, original.ref), report=_report(who, run))


def _reproduction(run: Run, original: str) -> dict[str, Any]:
    return {
        "ref": run.ref,
        "id": run.id,
        "reproduces": original,
        "verdict": run.tags.get("reproduce_verdict"),
        "status": run.status,
        "started_at": to_json(run.started_at),
        "ended_at": to_json(run.ended_at),
        "has_report": any(a.name == REPORT_NAME for a in run.artifacts),
    }


def _report(who: Caller, run: Run) -> Any:
    artifact = next((a for a in run.artifacts if a.name == REPORT_NAME and a.kind == "file"), None)
    if artifact is None:
        return None
    if artifact.size > MAX_REPORT:
        raise Conflict(f"{run.ref}'s {REPORT_NAME} is {artifact.size} bytes", hint="download the artifact instead")
    with who.vault.objects.open(artifact.digest, verify=True) as f:
        data = f.read(MAX_REPORT + 1)
    return loads_json(data, name=f"{run.ref}:{REPORT_NAME}", hint="download the artifact and inspect it")


@router.post("/{ref}/log", response_model=None, summary="Log params, tags and metric points in one batch")
def log_batch(
    ref: str,
    body: LogBatch,
    who: Writer,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:
    """A retry with the same ``Idempotency-Key`` header (per user and run) is stored once and gets the
    first answer back: the batch and the key's answer commit in one transaction.

    Served by :class:`~labvault.server.routes.run_log.FastLog`, below the framework; this declaration
    is its schema, with the same behaviour."""
    return JSONResponse(store_batch(who.vault.runs, who.user, ref, body, idempotency_key))


@router.post("/{ref}/artifacts", status_code=201, summary="Record an uploaded object as an artifact of the run")
def add_artifact(ref: str, body: ArtifactIn, who: Writer) -> Any:
    runs = who.vault.runs
    run_id = runs.resolve(ref)
    digest = parse_full_digest(body.digest)
    objects = who.vault.objects
    if not objects.has(digest):
        raise NotFound(f"no object {digest}", hint="upload it first: PUT /api/v1/objects/{digest}")
    size = stored_tree_size(objects, digest) if body.kind == "tree" else objects.info(digest).size
    artifact = Artifact(body.name, digest, body.kind, size, body.path)
    runs.record_artifact(run_id, _named(artifact), role=body.role)
    return to_json(artifact)


@router.get("/{ref}/artifacts", summary="The run's artifacts")
def list_artifacts(ref: str, who: Reader) -> Any:
    return to_json(who.vault.runs.get(ref).artifacts)


@router.post("/{ref}/end", summary="End a running run")
def end_run(ref: str, body: RunEnd, who: Writer) -> Any:
    runs = who.vault.runs
    run_id = runs.resolve(ref)
    runs.finish(run_id, status=body.status, exit_code=body.exit_code, error=body.error)
    return to_json(runs.get(run_id))


@router.post("/{ref}/capture", summary="Record what the client captured for a run it wraps (`labvault run`)")
def add_capture(ref: str, body: CaptureIn, who: Writer) -> Any:
    return to_json(record_capture(who.vault, ref, body))


class RunResume(_Body):
    host: HostName | None = Field(None, description="the host the resuming client's process runs on")
    pid: ProcessId | None = Field(None, description="the resuming client's process id")


@router.post("/{ref}/resume", summary="Reopen a run that did not finish (running, failed or killed)")
def resume_run(ref: str, who: Writer, body: RunResume | None = None) -> Any:
    """The run's process becomes the resuming client's (``host``, ``pid``; no known process without them)."""
    origin = _origin(body.host, body.pid) if body is not None else _origin(None, None)
    return to_json(who.vault.runs.resume(ref, origin=origin))


@router.post("/{ref}/inputs", summary="Record data references the running run read")
def add_inputs(ref: str, body: RunInputs, who: Writer) -> Any:
    runs = who.vault.runs
    run_id = runs.resolve(ref)
    runs.add_inputs(run_id, body.inputs)
    return to_json(runs.get(run_id))


@router.delete("/{ref}", summary="Delete a run (restorable)")
def delete_run(ref: str, who: Writer) -> Any:
    return to_json(who.vault.runs.delete(ref))


@router.post("/{ref}/restore", summary="Restore a deleted run")
def restore_run(ref: str, who: Writer) -> Any:
    run = who.vault.runs.restore(ref)
    if run.deleted:
        raise Conflict(f"{run.ref} is still deleted", hint="retry")
    return to_json(run)


def _origin(host: str | None, pid: int | None) -> tuple[str, int | None]:
    """The client's process, never this server's: a reader on the client's host tells when it is
    gone. A pid means nothing without its host: a client that names no host has no known process."""
    return (socket.gethostname(), None) if host is None else (host, pid)


def _named(artifact: Artifact) -> Artifact:
    return Artifact(artifact_name(artifact.name), artifact.digest, artifact.kind, artifact.size, artifact.path)
