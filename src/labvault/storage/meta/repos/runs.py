"""Run rows <-> :class:`~labvault.entities.Run`. Repositories never commit: callers own the transaction."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities import Artifact, MetricPoint, Run
from labvault.errors import Conflict
from labvault.storage.meta import lean_records
from labvault.storage.meta.tables import run_artifacts, run_latest, run_metrics, run_params, run_tags, runs

__all__ = [
    "MetricRow",
    "Points",
    "add_artifact",
    "add_params",
    "as_utc",
    "decode_metric",
    "encode_metric",
    "end_run",
    "envelope_with",
    "insert_run",
    "load_runs",
    "match_prefix",
    "max_steps",
    "metric_envelope",
    "metric_history",
    "run_row",
    "run_status",
    "set_tags",
    "status_and_capture",
    "update_run",
]

_CHUNK = 500
# (run_id, key, step, ts_ms, value)
MetricRow = tuple[str, str, int, int, float]


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they are UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_metric(value: float) -> tuple[float | None, int]:
    if math.isfinite(value):
        return value, 0
    if math.isnan(value):
        return None, 1
    return None, 2 if value > 0 else 3


_NON_FINITE = {1: math.nan, 2: math.inf, 3: -math.inf}


def decode_metric(value: float | None, kind: int) -> float:
    return float(value) if kind == 0 and value is not None else _NON_FINITE.get(kind, math.nan)


def number_of(value: object) -> float | None:
    """The value as a finite number if it is one (``4``, ``4.5``, ``"4"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        num = float(value)
    elif isinstance(value, str):
        try:
            num = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return num if math.isfinite(num) else None


# -- writes ----------------------------------------------------------------------------------------
def insert_run(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(_INSERT_RUN, [dict(row)])


def update_run(conn: Connection, run_id: str, **values: Any) -> int:
    return conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values)).rowcount


# Statements of the hot paths, built once (building and coercing a statement costs more than running it).
_STATUS = sa.select(runs.c.status).where(runs.c.id == sa.bindparam("b_id"))
_STATUS_CAPTURE = sa.select(runs.c.status, runs.c.capture).where(runs.c.id == sa.bindparam("b_id"))
_PARAMS_OF = sa.select(run_params.c.key, run_params.c.text).where(run_params.c.run_id == sa.bindparam("b_id"))
_INSERT_PARAMS = sa.insert(run_params)
_INSERT_RUN = sa.insert(runs)
_END = (
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        ended_at=sa.bindparam("b_ended_at"),
        exit_code=sa.bindparam("b_exit_code"),
        error=sa.bindparam("b_error"),
    )
)


def run_status(conn: Connection, run_id: str) -> str | None:
    return conn.execute(_STATUS, {"b_id": run_id}).scalar()


def status_and_capture(conn: Connection, run_id: str) -> tuple[str, str] | None:
    row = conn.execute(_STATUS_CAPTURE, {"b_id": run_id}).first()
    return (row[0], row[1]) if row is not None else None


def capture_for_update(conn: Connection, run_id: str) -> str | None:
    """A run's capture document, its row locked until the transaction ends (PostgreSQL)."""
    return conn.execute(sa.select(runs.c.capture).where(runs.c.id == run_id).with_for_update()).scalar()


def end_run(
    conn: Connection, run_id: str, *, status: str, ended_at: datetime, exit_code: int | None, error: str | None
) -> None:
    conn.execute(
        _END, {"b_id": run_id, "b_status": status, "b_ended_at": ended_at, "b_exit_code": exit_code, "b_error": error}
    )


def add_params(conn: Connection, run_id: str, params: Mapping[str, tuple[str, str]]) -> None:
    """Insert params given as ``key -> (json, text)``; the same value again is a no-op, another is Conflict."""
    if not params:
        return
    existing = {k: t for k, t in conn.execute(_PARAMS_OF, {"b_id": run_id}) if k in params}
    for key, old in existing.items():
        if old != params[key][1]:
            raise Conflict(
                f"param {key!r} of run:{run_id} is already {old!r}; it cannot become {params[key][1]!r}",
                hint="params are immutable: log the new value under another key, or start a new run",
            )
    new = [
        {"run_id": run_id, "key": k, "value": v, "text": t, "num": number_of(t)}
        for k, (v, t) in params.items()
        if k not in existing
    ]
    if new:
        conn.execute(_INSERT_PARAMS, new)


def set_tags(conn: Connection, run_id: str, tags: Mapping[str, str]) -> None:
    if not tags:
        return
    conn.execute(sa.delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.key.in_(list(tags))))
    conn.execute(
        sa.insert(run_tags),
        [{"run_id": run_id, "key": k, "text": v, "num": number_of(v)} for k, v in tags.items()],
    )


def add_artifact(conn: Connection, run_id: str, artifact: Artifact, *, role: str, now: datetime) -> None:
    """Record an artifact; logging a name again while the run is open replaces it."""
    conn.execute(
        sa.delete(run_artifacts).where(run_artifacts.c.run_id == run_id, run_artifacts.c.name == artifact.name)
    )
    conn.execute(
        sa.insert(run_artifacts),
        [
            {
                "run_id": run_id,
                "name": artifact.name,
                "role": role,
                "kind": artifact.kind,
                "digest": artifact.digest.hex,
                "size": artifact.size,
                "path": artifact.path,
                "created_at": now,
            }
        ],
    )


# -- reads -----------------------------------------------------------------------------------------
def run_row(conn: Connection, run_id: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()


def match_prefix(conn: Connection, prefix: str, *, limit: int = 11) -> list[str]:
    # Ids are lowercase hex, so a prefix holds no LIKE wildcard; it is bound, never spliced.
    return list(
        conn.execute(
            sa.select(runs.c.id).where(runs.c.id.like(prefix + "%")).order_by(runs.c.id).limit(limit)
        ).scalars()
    )


def max_steps(conn: Connection, run_id: str) -> dict[str, int]:
    return dict(conn.execute(sa.select(run_latest.c.key, run_latest.c.step).where(run_latest.c.run_id == run_id)).all())


def metric_history(conn: Connection, run_id: str, key: str | None = None) -> dict[str, list[MetricPoint]]:
    q = sa.select(
        run_metrics.c.key, run_metrics.c.step, run_metrics.c.ts_ms, run_metrics.c.value, run_metrics.c.kind
    ).where(run_metrics.c.run_id == run_id)
    if key is not None:
        q = q.where(run_metrics.c.key == key)
    out: dict[str, list[MetricPoint]] = defaultdict(list)
    for k, step, ts_ms, value, kind in conn.execute(
        q.order_by(run_metrics.c.key, run_metrics.c.step, run_metrics.c.id)
    ):
        out[k].append(MetricPoint(k, int(step), datetime.fromtimestamp(ts_ms / 1000, UTC), decode_metric(value, kind)))
    return dict(out)


Points = list[tuple[int, float | None]]


def metric_envelope(conn: Connection, run_id: str, *, buckets: int) -> dict[str, Points]:
    """Each metric's ``(step, value)`` history in about ``2 * buckets`` points at most, for a chart: a
    short history as it is (non-finite values as None), a longer one as the minimum and the maximum
    of each of at most ``buckets`` equal step ranges, computed by the database (non-finite values left
    out). ``envelope_with`` with nothing stored."""
    return envelope_with(conn, run_id, buckets=buckets, stored={})[0]


def envelope_with(
    conn: Connection, run_id: str, *, buckets: int, stored: Mapping[str, Points], long_only: bool = False
) -> tuple[dict[str, Points], dict[str, Points]]:
    """``metric_envelope``, taking each long history's envelope from ``stored`` when it is there; also
    returns the long histories' envelopes it computed (what ``stored`` lacked). ``long_only`` leaves the
    short histories out (they are their own envelope: nothing to store).

    Only the long histories' points are read, once: which histories are long, and their first and
    last steps, come from the ``(run_id, key, step)`` index without a scan (the run's keys from
    ``run_latest``), so a run of 10 metrics x 100,000 points reads its 1,000,000 rows once, not twice.
    """
    m = run_metrics.c
    cap = 2 * buckets
    in_run = sa.and_(m.run_id == run_latest.c.run_id, m.key == run_latest.c.key)
    past_cap = sa.select(m.step).where(in_run).order_by(m.step).offset(cap).limit(1).scalar_subquery()
    first = sa.select(sa.func.min(m.step)).where(in_run).scalar_subquery()
    last = sa.select(sa.func.max(m.step)).where(in_run).scalar_subquery()
    shapes = conn.execute(
        sa.select(run_latest.c.key, past_cap, first, last)
        .where(run_latest.c.run_id == run_id)
        .order_by(run_latest.c.key)
    ).all()
    out: dict[str, Points] = {}
    computed: dict[str, Points] = {}
    short = [k for k, beyond, _, _ in shapes if beyond is None]
    if short and not long_only:
        for k, step, value, kind in conn.execute(
            sa.select(m.key, m.step, m.value, m.kind)
            .where(m.run_id == run_id, m.key.in_(short))
            .order_by(m.key, m.step, m.id)
        ):
            v = decode_metric(value, kind)
            out.setdefault(k, []).append((int(step), v if math.isfinite(v) else None))
    for k, beyond, lo, hi in shapes:
        if beyond is None:
            continue
        if k in stored:
            out[k] = stored[k]
            continue
        # A division, never a multiplication: steps are 64-bit and step * buckets could overflow.
        width = -(-(int(hi) - int(lo) + 1) // buckets)
        bucket = ((m.step - int(lo)) // width).label("bucket")
        points = out[k] = computed[k] = []
        for _, low_step, high_step, low, high in conn.execute(
            sa.select(bucket, sa.func.min(m.step), sa.func.max(m.step), sa.func.min(m.value), sa.func.max(m.value))
            .where(m.run_id == run_id, m.key == k, m.kind == 0)
            # By the label: PostgreSQL does not see two copies of the expression, each with its own
            # parameters, as the same grouping.
            .group_by(sa.literal_column("bucket"))
            .order_by(sa.literal_column("bucket"))
        ):
            points.append((int(low_step), float(low)))
            if high_step != low_step:
                points.append((int(high_step), float(high)))
    return out, computed


def load_runs(conn: Connection, ids: Sequence[str]) -> list[Run]:
    """Full records for ``ids``, in the order given (missing ids are skipped): the lean reader's
    statements, on the driver's own connection inside the caller's transaction."""
    sqlite = conn.dialect.name == "sqlite"
    return lean_records.load_runs(cast(Any, conn.connection.driver_connection), ids, sqlite=sqlite)
