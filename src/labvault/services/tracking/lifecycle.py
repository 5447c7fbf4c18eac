"""Soft delete and restore of runs.

Deleting a run hides it from listings and drops its rows from ``object_refs``; its objects'
modification times are refreshed at that moment, so that ``gc`` reclaims them only once the grace
period has passed since the deletion (gc's grace is counted from an object's last write). Restoring
re-adds the references, provided gc has not collected the objects yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labvault.entities import Run, utcnow
from labvault.errors import Conflict, IntegrityError
from labvault.refs import Digest
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.envelopes import delete_envelopes
from labvault.storage.meta.repos.object_refs import RefKind, add_refs, remove_owner
from labvault.storage.objects.tree import iter_reachable

if TYPE_CHECKING:
    from labvault.services.tracking.service import Tracking

__all__ = ["delete_run", "restore_run", "run_objects"]


def run_objects(run: Run) -> list[tuple[Digest, RefKind]]:
    """Every object a run points at, as ``object_refs`` records them."""
    refs: list[tuple[Digest, RefKind]] = []
    cap = run.capture
    for key in ("environment", "patch", "stdout", "stderr"):
        if isinstance(cap.get(key), str):
            refs.append((Digest(cap[key].removeprefix("sha256:")), "blob"))
    for entry in cap.get("config") or []:
        refs.append((Digest(entry["sha256"].removeprefix("sha256:")), "blob"))
    for art in run.artifacts:
        refs.append((art.digest, "tree" if art.kind == "tree" else "blob"))
    return refs


def delete_run(service: Tracking, run_id: str) -> Run:
    run = service.get(run_id)
    if run.deleted:
        return run  # idempotent
    if run.status == "running":
        raise Conflict(f"{run.ref} is still running", hint="end it first, or wait for it to finish")
    # Refresh ages first, holding the store's gc lock shared: gc then keeps these objects for a
    # full grace period from the deletion, and cannot run between the refresh and the commit.
    with service.objects.batch():
        for digest, kind in run_objects(run):
            digests = iter_reachable(service.objects, digest, missing=[]) if kind == "tree" else [digest]
            for d in digests:
                service.objects.touch(d)
        with service.meta.transaction() as conn:
            repo.update_run(conn, run_id, deleted_at=utcnow())
            remove_owner(conn, run.ref)
            delete_envelopes(conn, run_id)
    return service.get(run_id)


def restore_run(service: Tracking, run_id: str) -> Run:
    run = service.get(run_id)
    if not run.deleted:
        return run
    refs = run_objects(run)
    # Under the gc lock (shared), so gc cannot collect an object between the check and the commit.
    with service.objects.batch():
        missing: list[Digest] = []
        for digest, kind in refs:
            if kind == "tree":
                list(iter_reachable(service.objects, digest, missing=missing))
            elif not service.objects.has(digest):
                missing.append(digest)
        if missing:
            raise IntegrityError(
                f"{run.ref} cannot be restored: gc already reclaimed {len(missing)} of its objects (e.g. {missing[0]})",
                hint="restore those objects from a remote or a backup first",
            )
        with service.meta.transaction() as conn:
            repo.update_run(conn, run_id, deleted_at=None)
            add_refs(conn, run.ref, refs)
    return service.get(run_id)
