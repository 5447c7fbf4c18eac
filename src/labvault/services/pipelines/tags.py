"""Named pipeline versions ``pipeline:NAME`` (labvault.yaml + labvault.lock + commit, immutable), and the log."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.entities import utcnow
from labvault.errors import Conflict, NotFound
from labvault.refs import validate_name
from labvault.services.pipelines.spec import PIPELINE_FILE
from labvault.services.snapshots.lockfile import LOCK_NAME
from labvault.storage.meta.repos import pipelines as repo
from labvault.storage.meta.repos.object_refs import add_refs
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.services.tracking import Tracking
    from labvault.storage.meta.store import MetaStore

__all__ = ["definition_tags", "pipeline_log", "tag_pipeline", "tags_for_definition"]


def tag_pipeline(
    objects: ObjectStore, meta: MetaStore, root: Path, name: str, *, message: str, user: str
) -> dict[str, Any]:
    """Store both files (objects first), then the tag row and its references in one transaction.

    The same content under the same name again is a no-op; other content is a conflict (exit 4).
    """
    validate_name(name, what="pipeline tag")
    try:
        definition = (root / PIPELINE_FILE).read_bytes()
        lock = (root / LOCK_NAME).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"{exc.filename} does not exist", hint="run the pipeline once before tagging it") from None
    with objects.batch():
        d1 = objects.put_bytes(definition)
        d2 = objects.put_bytes(lock)
    row = {
        "name": name,
        "definition": d1.hex,
        "lock": d2.hex,
        "commit": _git_commit(root),
        "message": message,
        "created_at": utcnow(),
        "created_by": user,
    }
    with meta.transaction() as conn:
        existing = repo.get_tag(conn, name)
        if existing is not None:
            if existing["definition"] == d1.hex and existing["lock"] == d2.hex:
                return _tag_json(existing)
            raise Conflict(f"pipeline:{name} exists with other content", hint="tags are immutable; pick a new name")
        if not repo.insert_tag(conn, row):
            raise Conflict(f"pipeline:{name} was just made by another process", hint="look at `labvault pipeline log`")
        add_refs(conn, f"pipeline:{name}", [(d1, "blob"), (d2, "blob")])
    return _tag_json(row)


def definition_tags(objects: ObjectStore, meta: MetaStore, root: Path) -> dict[str, str]:
    """The tags a pipeline run and its stage runs carry: ``pipeline.definition`` (labvault.yaml, stored)
    and ``pipeline.tag`` naming the newest ``pipeline:NAME`` made from that definition, if any. A tag made
    later is found by lineage through the definition."""
    try:
        definition = (root / PIPELINE_FILE).read_bytes()
    except FileNotFoundError:
        return {}
    digest = objects.put_bytes(definition)
    out = {"pipeline.definition": f"sha256:{digest.hex}"}
    named = tags_for_definition(meta, digest.hex)
    if named:
        out["pipeline.tag"] = f"pipeline:{named[0]['name']}"
    return out


def tags_for_definition(meta: MetaStore, definition: str) -> list[dict[str, Any]]:
    """The pipeline tags (rows, newest first) whose definition is ``definition`` (hex or sha256:hex)."""
    hexdigest = definition.removeprefix("sha256:")
    with meta.read() as conn:
        return [t for t in repo.list_tags(conn) if t["definition"] == hexdigest]


def pipeline_log(meta: MetaStore, runs: Tracking) -> dict[str, Any]:
    with meta.read() as conn:
        tags = [_tag_json(t) for t in repo.list_tags(conn)]
    named: dict[str, list[str]] = {}
    for t in tags:  # newest first
        named.setdefault(t["definition"], []).append(t["ref"])
    listed = [
        {
            "id": r.id,
            "ref": f"run:{r.id}",
            "status": r.status,
            "started_at": _iso(r.started_at),
            "definition": r.tags.get("pipeline.definition"),
            "versions": named.get(r.tags.get("pipeline.definition") or "", []),  # tags made from it
        }
        for r in runs.list(filter="tags.pipeline = 'run'", limit=100)
    ]
    return {"tags": tags, "runs": listed}


def _iso(moment: Any) -> str:
    return str(moment.isoformat()).replace("+00:00", "Z")


def _tag_json(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["name"],
        "ref": f"pipeline:{t['name']}",
        "definition": f"sha256:{t['definition']}",
        "lock": f"sha256:{t['lock']}",
        "commit": t["commit"],
        "message": t["message"],
        "created_at": _iso(t["created_at"]),
        "created_by": t["created_by"],
    }


def _git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, timeout=30, check=False, text=True
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return str(commit) if done.returncode == 0 and commit else None
