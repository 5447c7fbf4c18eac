"""Stored chart envelopes of finished runs (``run_envelopes``): derived data, rebuilt when missing.

A stored row is read back as untrusted input: one that does not decode to a list of ``[step, value]``
pairs (steps whole, values finite) is left out, so the caller computes that history's envelope again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from labvault.storage.meta.repos.runs import Points
from labvault.storage.meta.tables.envelopes import run_envelopes

__all__ = ["delete_envelopes", "load_envelopes", "store_envelopes"]

_STEP_LIMIT = 2**63


def load_envelopes(conn: Connection, run_id: str, *, buckets: int) -> dict[str, Points]:
    t = run_envelopes.c
    out: dict[str, Points] = {}
    for key, text in conn.execute(
        sa.select(t.key, t.points).where(t.run_id == run_id, t.buckets == buckets).order_by(t.key)
    ):
        points = _decode(text)
        if points is not None:
            out[key] = points
    return out


def store_envelopes(conn: Connection, run_id: str, envelopes: Mapping[str, Points], *, buckets: int) -> None:
    """Store ``envelopes``; a history already stored keeps its row (two writers compute the same)."""
    if not envelopes:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(run_envelopes).on_conflict_do_nothing(index_elements=["run_id", "key", "buckets"]),
        [
            {
                "run_id": run_id,
                "key": key,
                "buckets": buckets,
                "points": json.dumps([[s, v] for s, v in points], separators=(",", ":"), allow_nan=False),
            }
            for key, points in sorted(envelopes.items())
        ],
    )


def delete_envelopes(conn: Connection, run_id: str) -> None:
    conn.execute(sa.delete(run_envelopes).where(run_envelopes.c.run_id == run_id))


def _decode(text: object) -> Points | None:
    try:
        raw = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if not isinstance(raw, list):
        return None
    points: Points = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2):
            return None
        step, value = pair
        if not (type(step) is int and -_STEP_LIMIT <= step < _STEP_LIMIT):
            return None
        if type(value) not in (int, float) or not math.isfinite(value):
            return None
        points.append((step, float(value)))
    return points
