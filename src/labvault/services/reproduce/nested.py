"""Nested runs: a nested run is reproduced by rerunning the process that made it (its top run) and
comparing it with the run at the same place in the rerun's tree (same names, same order)."""

from __future__ import annotations

from labvault.entities import Run
from labvault.services.tracking.service import Tracking

__all__ = ["counterpart", "top_run"]

_MAX_DEPTH = 100


def top_run(runs: Tracking, run: Run) -> tuple[Run, list[Run]]:
    """The outermost ancestor of ``run``, and the chain below it down to ``run`` (empty for a top run)."""
    chain = [run]
    while chain[-1].parent_id is not None and len(chain) <= _MAX_DEPTH:
        chain.append(runs.get(chain[-1].parent_id))
    return chain[-1], list(reversed(chain[:-1]))


def _children(runs: Tracking, parent_id: str, like: Run) -> list[Run]:
    quoted = "'" + like.name.replace("'", "''") + "'"
    found = runs.list(project=like.project, filter=f"name = {quoted}")
    return sorted((r for r in found if r.parent_id == parent_id), key=lambda r: (r.started_at, r.id))


def counterpart(runs: Tracking, rerun_top: str, chain: list[Run]) -> Run | None:
    """The rerun's run at the place ``chain`` names: each step the child with the same name and the
    same position among its same-named siblings; None when the rerun made no such run."""
    current = rerun_top
    found: Run | None = None
    for original in chain:
        if original.parent_id is None:  # a chain lists nested runs only
            return None
        position = [r.id for r in _children(runs, original.parent_id, original)].index(original.id)
        candidates = _children(runs, current, original)
        if position >= len(candidates):
            return None
        found = candidates[position]
        current = found.id
    return found
