"""Chart envelopes of runs: computed once for a finished run, when it ends, and stored.

A finished run never changes (storage rule 4), so its metric envelope (``repos.runs.metric_envelope``:
each long history as its step ranges' minimum and maximum) is computed when the run ends and stored in
``run_envelopes``; a run page then reads a few rows instead of grouping every point of the history. Only
histories longer than ``2 * buckets`` points are stored (a shorter one is its own envelope), so ending an
ordinary run costs one index-only query.

The stored envelope is derived data: when it is missing (a run that ended before it existed, a crash
between the end and the store, a row that does not decode) it is computed as for a running run and
stored again; deleting a run removes it; push and pull do not carry it (the receiving vault computes it
on first view). A running, failed or killed run (the last two can be resumed) is always read live.
"""

from __future__ import annotations

from labvault.errors import LockedError, StorageError
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.envelopes import load_envelopes, store_envelopes
from labvault.storage.meta.store import MetaStore

__all__ = ["ENVELOPE_BUCKETS", "Envelope", "read_envelope", "store_run_envelope"]

ENVELOPE_BUCKETS = 1000  # the run and compare pages' bucket count, the one stored when a run ends
Envelope = dict[str, list[tuple[int, float | None]]]


def store_run_envelope(meta: MetaStore, run_id: str, *, buckets: int = ENVELOPE_BUCKETS) -> None:
    """Compute and store the envelope of a finished run's long histories (none: nothing written)."""
    with meta.read() as conn:
        _, computed = repo.envelope_with(conn, run_id, buckets=buckets, stored={}, long_only=True)
    _store(meta, run_id, computed, buckets=buckets)


def read_envelope(meta: MetaStore, run_id: str, *, buckets: int) -> Envelope:
    """``run_id``'s envelope: a finished run's long histories from their stored rows (the missing ones
    computed and stored), any other run's computed by the database."""
    with meta.read() as conn:
        finished = repo.run_status(conn, run_id) == "finished"
        stored = load_envelopes(conn, run_id, buckets=buckets) if finished else {}
        envelope, computed = repo.envelope_with(conn, run_id, buckets=buckets, stored=stored)
    if finished and computed:
        _store(meta, run_id, computed, buckets=buckets)
    return envelope


def _store(meta: MetaStore, run_id: str, computed: Envelope, *, buckets: int) -> None:
    if not computed:
        return
    try:
        with meta.transaction() as conn:
            row = repo.run_row(conn, run_id)
            # Checked again in the writing transaction: a run deleted meanwhile keeps no envelope.
            if row is not None and row.status == "finished" and row.deleted_at is None:
                store_envelopes(conn, run_id, computed, buckets=buckets)
    except (LockedError, StorageError):
        pass  # derived data: the next view computes it again; the run's end or the page must not fail for it
