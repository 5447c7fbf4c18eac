"""``/api/v1/data``: data snapshots: list, versions, show, manifest, diff."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from labvault.server.deps import Caller, caller
from labvault.server.encode import to_json

__all__ = ["router"]

router = APIRouter(prefix="/data", tags=["data"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Ref = Annotated[str, Query(max_length=600, description="data:<name>@v<N>")]


@router.get("", summary="Every dataset's latest snapshot and its number of versions")
def list_datasets(who: Reader) -> Any:
    return [dict(to_json(snap), versions=count) for snap, count in who.vault.data.datasets()]


@router.get("/diff", summary="Files added, removed and modified from snapshot a to b, with tabular drift")
def diff_snapshots(a: Ref, b: Ref, who: Reader) -> Any:
    return to_json(who.vault.data.diff(a, b))


@router.get("/{name}", summary="Every version of a dataset, newest first")
def dataset_versions(name: str, who: Reader) -> Any:
    return to_json(who.vault.data.log(name))


@router.get("/{name}/{version}", summary="One snapshot")
def show_snapshot(name: str, version: str, who: Reader) -> Any:
    return to_json(who.vault.data.resolve(f"data:{name}@{version}"))


@router.get("/{name}/{version}/manifest", summary="A snapshot with its files (path, sha256, size)")
def snapshot_manifest(name: str, version: str, who: Reader) -> Any:
    return to_json(who.vault.data.get(f"data:{name}@{version}"))
