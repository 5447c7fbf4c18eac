"""``/api/v1/models``: register, list, show, versions, check, promote, approve, rollback, archive,
alias set/unset, history. Promotions run the server's own ``labvault.yaml`` policies; clients send
no policy."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from labvault.server.deps import Caller, caller
from labvault.server.encode import to_json
from labvault.server.fields import PlainPath
from labvault.services.registry.layout import write_version
from labvault.services.transfer import parse_full_digest

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
Maintainer = Annotated[Caller, Depends(caller("maintainer"))]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Register(_Body):
    run: str | None = Field(None, max_length=64, description="run:<id> whose artifact (or output) is registered")
    artifact: str | None = Field(None, max_length=255, description="the artifact's name on that run")
    tree: str | None = Field(
        None, max_length=71, description="sha256:<hex> of an uploaded folder tree to register (a client's local folder)"
    )
    allow_modified: bool = Field(
        False, description="with tree and run: register it even if the run recorded other files"
    )
    path: PlainPath | None = Field(
        None, description="with tree: the client's folder, recorded as source.path (never opened)"
    )
    version: str | None = Field(None, max_length=64)
    bump: Literal["major", "minor", "patch"] | None = None
    message: str | None = Field(None, max_length=10_000)


class Promote(_Body):
    version: str = Field(max_length=64)
    reason: str | None = Field(None, max_length=10_000)
    waive_rollback_plan: str | None = Field(None, max_length=10_000)
    raise_on_refusal: bool = Field(True, description="false: a refusal is the 200 answer (action refuse), not 422")


class Approve(_Body):
    version: str = Field(max_length=64)
    message: str | None = Field(None, max_length=10_000)


class Reason(_Body):
    reason: str | None = Field(None, max_length=10_000)


def _name(project: str, model: str) -> str:
    return f"{project}/{model}"


@router.get("", summary="Registered models")
def list_models(who: Reader) -> Any:
    return to_json(who.vault.registry.models())


@router.post("/{project}/{model}/versions", status_code=201, summary="Register a run's artifact as a version")
def register_version(project: str, model: str, body: Register, who: Writer) -> Any:
    registry = who.vault.registry
    options: dict[str, Any] = {"version": body.version, "bump": body.bump, "message": body.message}
    if body.tree is None:
        version, created = registry.register(_name(project, model), run=body.run, artifact=body.artifact, **options)
        return dict(to_json(version), created=created)
    # A client's folder: its objects were uploaded; lay them out here and register that folder.
    tree = parse_full_digest(body.tree)
    with tempfile.TemporaryDirectory(prefix="labvault-register-") as tmp:
        folder = write_version(who.vault.objects, tree, Path(tmp), "model")
        version, created = registry.register(
            _name(project, model),
            folder,
            run=body.run,
            allow_modified=body.allow_modified,
            source_path=body.path,
            **options,
        )
    return dict(to_json(version), created=created)


@router.get("/{project}/{model}", summary="A model: its versions and aliases")
def show_model(project: str, model: str, who: Reader) -> Any:
    registry = who.vault.registry
    name = _name(project, model)
    return {
        "name": name,
        "versions": to_json(registry.versions(name, include_archived=True)),
        "aliases": registry.aliases(name),
    }


@router.get("/{project}/{model}/versions", summary="A model's versions")
def list_versions(project: str, model: str, who: Reader, archived: bool = False) -> Any:
    return to_json(who.vault.registry.versions(_name(project, model), include_archived=archived))


@router.get("/{project}/{model}/versions/{version}", summary="One version (or the one an alias points at)")
def show_version(project: str, model: str, version: str, who: Reader) -> Any:
    registry = who.vault.registry
    found = registry.resolve(f"{_name(project, model)}@{version}")
    # ``files`` is the file list here; ``file_count`` keeps the version's own count.
    return dict(to_json(found), files=to_json(registry.files(found)), file_count=found.files)


@router.post("/{project}/{model}/versions/{version}/archive", summary="Archive a version no alias points at")
def archive_version(project: str, model: str, version: str, body: Reason, who: Maintainer) -> Any:
    found, changed = who.vault.registry.archive(f"{_name(project, model)}@{version}", reason=body.reason)
    return dict(to_json(found), changed=changed)


@router.get("/{project}/{model}/history", summary="Alias moves, oldest first")
def alias_history(
    project: str, model: str, who: Reader, alias: Annotated[str | None, Query(max_length=128)] = None
) -> Any:
    return to_json(who.vault.registry.history(_name(project, model), alias))


@router.get("/{project}/{model}/aliases/{alias}/check", summary="Evaluate the promotion gates without moving")
def check_promotion(
    project: str,
    model: str,
    alias: str,
    who: Reader,
    version: Annotated[str, Query(max_length=64)],
    waive_rollback_plan: Annotated[str | None, Query(max_length=10_000)] = None,
) -> Any:
    return to_json(
        who.vault.registry.check(f"{_name(project, model)}@{version}", alias, waive_rollback_plan=waive_rollback_plan)
    )


@router.post("/{project}/{model}/aliases/{alias}", summary="Set (promote) an alias under the server's policy")
def promote(project: str, model: str, alias: str, body: Promote, who: Maintainer) -> Any:
    decision = who.vault.registry.promote(
        f"{_name(project, model)}@{body.version}",
        alias,
        reason=body.reason,
        waive_rollback_plan=body.waive_rollback_plan,
        raise_on_refusal=body.raise_on_refusal,
    )
    return to_json(decision)


@router.post("/{project}/{model}/aliases/{alias}/approve", summary="Approve a version for an alias")
def approve(project: str, model: str, alias: str, body: Approve, who: Maintainer) -> Any:
    added = who.vault.registry.approve(f"{_name(project, model)}@{body.version}", alias, message=body.message)
    return {"approved": True, "new": added, "by": who.user}


@router.post("/{project}/{model}/aliases/{alias}/rollback", summary="Move an alias back to its previous version")
def rollback(project: str, model: str, alias: str, body: Reason, who: Maintainer) -> Any:
    return to_json(who.vault.registry.rollback(_name(project, model), alias, reason=body.reason))


@router.delete("/{project}/{model}/aliases/{alias}", summary="Unset an alias")
def unset_alias(
    project: str,
    model: str,
    alias: str,
    who: Maintainer,
    reason: Annotated[str | None, Query(max_length=10_000)] = None,
) -> Any:
    return to_json(who.vault.registry.unset_alias(_name(project, model), alias, reason=reason))
