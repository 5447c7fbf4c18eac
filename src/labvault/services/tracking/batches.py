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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from labvault.entities import utcnow
from labvault.errors import Conflict
from labvault.services.access import ABANDONED_CLAIM, check_request_key
from labvault.services.tracking.names import validate_key
from labvault.services.tracking.values import encode_param, metric_step, metric_value
from labvault.storage.meta.repos import access as requests_repo
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.metric_appender import append_in

if TYPE_CHECKING:
    from labvault.services.tracking.records import RunRecords

__all__ = ["log_batch"]


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
