"""One log request (params, tags, metric points) stored in one transaction, with its idempotency key.

A request sent with an ``Idempotency-Key`` records the key and its answer in the same transaction as
what it logged: a server killed at any point stored both or neither, so a retry never stores a batch
twice. (A key claimed in one transaction and answered in a later one left a window: a server killed
between the two left the claim pending, a retry took it over two minutes later and stored the batch
again.) A concurrent retry waits for the first request's transaction, then gets its answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labvault.entities import utcnow
from labvault.entities.access import ApiToken
from labvault.errors import Conflict, LabvaultError
from labvault.services.access import ABANDONED_CLAIM, check_request_key
from labvault.services.tracking.names import validate_key
from labvault.services.tracking.values import encode_param, metric_step, metric_value
from labvault.storage.meta.repos import access as requests_repo
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.metric_appender import GateOf, append_in
from labvault.storage.meta.repos.runs import MetricRow

if TYPE_CHECKING:
    from labvault.services.tracking.records import RunRecords

__all__ = ["GatedPoints", "gate_points", "log_batch"]


def log_batch(
    records: RunRecords,
    run_id: str,
    *,
    params: Mapping[str, object],
    tags: Mapping[str, object],
    points: Sequence[tuple[str, object, int]],
    once: tuple[str, str | None],
) -> Any:
    """Store params, tags and ``(key, value, step)`` points in one transaction; the answer counts them.
    ``once`` is ``(scope, key)``: with a key, a retry gets the first answer and stores nothing."""
    scope, key = once
    if key is not None:
        check_request_key(key)
    encoded = {validate_key(k, what="param"): encode_param(k, v) for k, v in params.items()}
    values = records._check_tags(tags) if tags else {}
    stamp = time.time_ns() // 1_000_000
    rows = [(run_id, k, metric_step(k, s), stamp, metric_value(k, v)) for k, v, s in points]
    for k in {k for k, _, _ in points}:
        validate_key(k, what="metric")
    answer = {"params": len(params), "tags": len(tags), "metrics": len(points)}
    with records.meta.transaction() as conn:
        if key is not None:
            now = utcnow()
            found = requests_repo.claim_request(conn, scope[:300], key, now, stale_before=now - ABANDONED_CLAIM)
            if found is not None:
                state, result = found
                if state == "done" and result is not None:
                    return json.loads(result)
                raise Conflict("a request with this idempotency key is still running", hint="retry in a moment")
        records._require_open(conn, run_id)
        if encoded:
            repo.add_params(conn, run_id, encoded)
        if values:
            repo.set_tags(conn, run_id, values)
        append_in(conn, rows)
        if key is not None:
            requests_repo.finish_request(conn, scope[:300], key, json.dumps(answer))
    return answer


@dataclass(frozen=True, slots=True)
class GatedPoints:
    """A log request's points, ready to append behind their gate, and the request's answer."""

    rows: list[MetricRow]
    gate: GateOf
    answer: dict[str, int]


def gate_points(
    records: RunRecords,
    run_id: str,
    points: Sequence[tuple[str, object, int]],
    *,
    token_id: str,
    authorize: Callable[[tuple[ApiToken, str, str] | None], None],
) -> GatedPoints:
    """``(key, value, step)`` points to append to a running run for the holder of the token ``token_id``.

    The transaction that appends them reads the token and the run's status with one statement, hands
    the token to ``authorize`` (which raises to refuse), checks the run is running, and appends the
    points (the metric appender's prepared statements). Refusals come in the order a log request's
    do: the token first, then the points' keys and values, then the run's state."""
    stamp = time.time_ns() // 1_000_000
    rows: list[MetricRow] = []
    invalid: LabvaultError | None = None
    keys = records._keys
    try:
        for key, value, step in points:
            if key not in keys:
                validate_key(key, what="metric")
                if len(keys) < 100_000:
                    keys.add(key)
            rows.append((run_id, key, metric_step(key, step), stamp, metric_value(key, value)))
    except LabvaultError as err:  # raised once the token is known to be good
        invalid, rows = err, []

    def gate(token: tuple[Any, ...] | None, status: str | None) -> None:
        authorize(None if token is None else requests_repo.token_from_columns(token))
        if invalid is not None:
            raise invalid
        records._check_status(run_id, status)

    return GatedPoints(rows, (run_id, token_id, gate), {"params": 0, "tags": 0, "metrics": len(points)})
