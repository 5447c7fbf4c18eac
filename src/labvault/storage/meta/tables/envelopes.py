"""``run_envelopes``: a finished run's long metric histories, downsampled for charts (derived data).

One row per (run, metric key, bucket count): ``points`` is the JSON list of ``[step, value]`` pairs that
``repos.runs.metric_envelope`` computes for that history (each step range's minimum and maximum). Only
histories longer than ``2 * buckets`` points have a row; a shorter one is its own envelope.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table, Text

from labvault.storage.meta.tables.core import metadata

__all__ = ["run_envelopes"]

run_envelopes = Table(
    "run_envelopes",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("buckets", Integer, primary_key=True),
    Column("points", Text, nullable=False),
)
