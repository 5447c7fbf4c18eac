"""``/api/v1/data``: data snapshots: list, versions, show, manifest, diff, lock status."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from labvault.errors import NotFound
from labvault.server.deps import Caller, caller
from labvault.server.encode import to_json
from labvault.services.snapshots.uploaded import MAX_TARGET
from labvault.services.transfer import parse_full_digest

__all__ = ["router"]

router = APIRouter(prefix="/data", tags=["data"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
Ref = Annotated[str, Query(max_length=600, description="data:<name>@v<N>")]


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: dict[str, str] = Field(
        max_length=1_000_000, description="relative path -> sha256:<hex> of an uploaded object"
    )
    links: dict[str, Annotated[str, Field(max_length=MAX_TARGET)]] = Field(
        default_factory=dict, max_length=1_000_000, description="relative path -> target of a symbolic link (as text)"
    )
    dirs: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=1_000_000, description="folders kept even when empty (relative paths)"
    )
    message: str = Field("", max_length=10_000)
    kind: Literal["file", "dir"] = Field("dir", description='"file": a one-file snapshot, checked out as a file')
    path: str | None = Field(
        None, max_length=4096, description="where the client added it from, relative to its project root"
    )


def _snap(snapshot: Any) -> dict[str, Any]:
    """A snapshot's JSON with its ``kind``, which a client's checkout needs."""
    return dict(to_json(snapshot), kind=snapshot.kind)


@router.post("/{name}", status_code=201, summary="Snapshot uploaded objects as the next version of a dataset")
def create_snapshot(name: str, body: SnapshotCreate, who: Writer) -> Any:
    files = {path: parse_full_digest(digest) for path, digest in body.files.items()}
    snapshot, created = who.vault.data.add_objects(
        name, files, message=body.message, kind=body.kind, storage_uri=body.path, links=body.links, dirs=body.dirs
    )
    return dict(_snap(snapshot), created=created)


@router.get("", summary="Every dataset's latest snapshot and its number of versions")
def list_datasets(who: Reader) -> Any:
    return [dict(_snap(snap), versions=count) for snap, count in who.vault.data.datasets()]


@router.get("/diff", summary="Files added, removed and modified from snapshot a to b, with tabular drift")
def diff_snapshots(a: Ref, b: Ref, who: Reader) -> Any:
    return to_json(who.vault.data.diff(a, b))


@router.get("/lock", summary="Lock status: how each dataset the server's labvault.lock pins differs from its snapshot")
def lock_status(
    who: Reader,
    name: Annotated[str | None, Query(max_length=128, description="only this dataset")] = None,
    path: Annotated[str | None, Query(max_length=4096, description="only the lock entry with exactly this key")] = None,
) -> Any:
    """The server's own project root, as ``labvault data status`` would show it there. ``path`` is
    matched against the lock file's keys as text; the server never opens a path a client names."""
    found = who.vault.data.status(name)
    if path is not None:
        found = [s for s in found if s.path == path]
        if not found:
            raise NotFound(f"labvault.lock pins nothing at {path!r}", hint="GET /api/v1/data/lock lists what it pins")
    return to_json(found)


@router.get("/{name}", summary="Every version of a dataset, newest first")
def dataset_versions(name: str, who: Reader) -> Any:
    return [_snap(s) for s in who.vault.data.log(name)]


@router.get("/{name}/{version}", summary="One snapshot")
def show_snapshot(name: str, version: str, who: Reader) -> Any:
    return _snap(who.vault.data.resolve(f"data:{name}@{version}"))


@router.get("/{name}/{version}/manifest", summary="A snapshot with its files (path, sha256, size)")
def snapshot_manifest(name: str, version: str, who: Reader) -> Any:
    manifest = who.vault.data.get(f"data:{name}@{version}")
    return dict(to_json(manifest), kind=manifest.snapshot.kind)
