"""What a client captured for a run it wraps (``labvault run -- CMD`` through a server): its folder,
code, environment, config files, seeds, stdout and stderr, recorded in the run's capture document.

The document is untrusted input: every field is typed and bounded here, paths are plain text the
server never opens, and every object it names must already be stored (objects first), after which
it is kept with the run (``object_refs``), as a local run keeps what it captured.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labvault.entities import Run
from labvault.errors import Conflict, NotFound
from labvault.refs import Digest
from labvault.server.fields import PlainPath
from labvault.services.tracking.values import check_seed
from labvault.services.transfer import parse_full_digest
from labvault.vault import Vault

__all__ = ["CaptureIn", "record_capture"]

_DIGEST = 71  # len("sha256:") + 64
_TEXT = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UntrackedIn(_Body):
    path: PlainPath
    size: int = Field(ge=0)
    sha256: str = Field(max_length=_DIGEST)


class LeftOutIn(_Body):
    pinned: list[PlainPath] = Field(default_factory=list, max_length=10_000)
    untracked: list[UntrackedIn] = Field(default_factory=list, max_length=10_000)


class GitIn(_Body):
    commit: str | None = Field(None, max_length=64)
    branch: str | None = Field(None, max_length=1000)
    remote: str | None = Field(None, max_length=4096)
    dirty: bool | None = None
    root: PlainPath | None = Field(None, description="the client's work tree, as text")
    left_out: LeftOutIn | None = None


class ConfigIn(_Body):
    path: PlainPath
    sha256: str = Field(max_length=_DIGEST)
    size: int = Field(ge=0)


class SeedsIn(_Body):
    """What ``seed_everything`` did (or which variables ``labvault run --seed`` exported)."""

    seed: int
    deterministic: bool | None = None
    seeded: list[str] | None = Field(None, max_length=64)
    unavailable: list[str] | None = Field(None, max_length=64)
    failed: dict[str, str] | None = Field(None, max_length=64)
    settings: dict[str, Any] | None = Field(None, max_length=64)
    exported: list[str] | None = Field(None, max_length=16)
    pythonhashseed: str | None = Field(None, max_length=32)


class CaptureIn(_Body):
    cwd: PlainPath | None = Field(None, description="the client's working folder, as text")
    pythonhashseed: str | None = Field(None, max_length=32)
    environment: str | None = Field(None, max_length=_DIGEST, description="sha256:<hex> of the environment document")
    git: GitIn | None = None
    patch: str | None = Field(None, max_length=_DIGEST, description="sha256:<hex> of the dirty diff")
    config: list[ConfigIn] = Field(default_factory=list, max_length=1000)
    seeds: SeedsIn | None = None
    stdout: str | None = Field(None, max_length=_DIGEST)
    stderr: str | None = Field(None, max_length=_DIGEST)
    warnings: list[str] = Field(default_factory=list, max_length=1000)


def record_capture(vault: Vault, ref: str, body: CaptureIn) -> Run:
    """Merge ``body`` into the running run's capture document; its objects must be stored."""
    runs = vault.runs
    run = runs.get(ref)
    if run.status != "running":
        raise Conflict(f"{run.ref} is {run.status}; an ended run is never changed", hint="start a new run")
    refs: list[tuple[Digest, Any]] = []

    def stored(text: str) -> str:
        digest = parse_full_digest(text)
        if not vault.objects.has(digest):
            raise NotFound(f"no object {digest}", hint="upload it first: PUT /api/v1/objects/{digest}")
        refs.append((digest, "blob"))
        return str(digest)

    update: dict[str, Any] = {}
    for key in ("cwd", "pythonhashseed"):
        if key in body.model_fields_set:  # a null sent is the client's (no PYTHONHASHSEED), not the server's
            update[key] = getattr(body, key)
    for key in ("environment", "patch", "stdout", "stderr"):
        value = getattr(body, key)
        if value is not None:
            update[key] = stored(value)
    if body.git is not None:
        update["git"] = body.git.model_dump(exclude_unset=True)  # the client's nulls kept, as git gave them
    if body.config:
        update["config"] = [{"path": c.path, "sha256": stored(c.sha256), "size": c.size} for c in body.config]
    if body.warnings:
        update["warnings"] = [w[:_TEXT] for w in body.warnings]
    if update:
        runs.update_capture(run.id, update, refs=refs)
    if body.seeds is not None:
        check_seed(body.seeds.seed)
        runs.record_seed(run.id, body.seeds.model_dump(exclude_unset=True))
    return runs.get(run.id)
