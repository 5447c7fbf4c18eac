"""Bulk seeding shared by the benchmarks: many finished runs written straight through the metadata
store, in batches of a few thousand per transaction, as ``labvault pull`` writes the records it
receives (one multi-row insert per table; ``repos.transfer.RUN_PARTS``). Seconds for 100,000 runs,
where creating them one by one through an API takes minutes (MLflow: hours). And the small files
that the data benchmarks snapshot, push and pull."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BATCH = 2000
START = datetime(2026, 1, 1, tzinfo=UTC)


def specs(n: int) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The same N runs for every tool: 10 params and 5 metrics each."""
    rng = random.Random(7)
    return [
        (
            {"depth": str(rng.choice([2, 4, 6, 8])), "lr": f"{rng.choice([0.1, 0.03, 0.01])}"}
            | {f"p{j}": str(j) for j in range(8)},
            {"auc": rng.random(), **{f"m{j}": rng.random() for j in range(4)}},
        )
        for _ in range(n)
    ]


def make_files(root: Path, count: int, *, per_dir: int = 200, seed: int = 0, repeatable: bool = False) -> None:
    """``count`` files of 1-8 KiB of random bytes, ``per_dir`` to a folder, their sizes drawn from
    ``seed``; with ``repeatable`` their bytes too, the same on every call."""
    rng = random.Random(seed)
    for i in range(count):
        d = root / f"d{i // per_dir:04}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 8192)
        (d / f"f{i % per_dir:04}.bin").write_bytes(rng.randbytes(size) if repeatable else os.urandom(size))


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def bulk_rows(i: int, params: dict[str, str], values: dict[str, float], started: datetime) -> dict[str, Any]:
    """One finished run as the rows ``labvault pull`` writes (``repos.transfer.RUN_PARTS``)."""
    run_id = f"{i:012x}"
    ts = int(started.timestamp() * 1000)
    return {
        "run": {
            "id": run_id,
            "project": "bench",
            "name": f"r{i}",
            "status": "finished",
            "parent_id": None,
            "user": "bench@example.com",
            "host": "bench",
            "started_at": started,
            "ended_at": started + timedelta(seconds=1),
            "exit_code": None,
            "error": None,
            "seed": None,
            "inputs": "[]",
            "capture": '{"config": [], "warnings": []}',
            "deleted_at": None,
        },
        "params": [
            {"run_id": run_id, "key": k, "value": json.dumps(v), "text": v, "num": number(v)} for k, v in params.items()
        ],
        "tags": [],
        "metrics": [
            {"run_id": run_id, "key": k, "step": 0, "ts_ms": ts, "value": v, "kind": 0} for k, v in values.items()
        ],
        "latest": [{"run_id": run_id, "key": k, "step": 0, "value": v, "kind": 0} for k, v in values.items()],
        "artifacts": [],
    }


def insert_runs(root: Path, runs: list[tuple[dict[str, str], dict[str, float]]], batch: int = BATCH) -> None:
    """``runs`` (params, metrics) written into the vault at ``root`` as finished runs, ``batch`` per
    transaction, whatever its metadata store (SQLite or PostgreSQL: the vault's config says).

    On PostgreSQL the tables are then analyzed, as autovacuum does within a minute of such a load on
    a running server: right after it, the planner still believes the tables nearly empty and picks
    plans that take 0.4 s for a search it answers in 20 ms once it knows their sizes."""
    import sqlalchemy as sa

    from labvault.storage.meta.repos.transfer import RUN_PARTS
    from labvault.storage.meta.tables import runs as runs_table
    from labvault.vault import Vault

    with Vault.open(root) as vault:
        for first in range(0, len(runs), batch):
            docs = [
                bulk_rows(i, *runs[i], START + timedelta(seconds=i))
                for i in range(first, min(len(runs), first + batch))
            ]
            with vault.meta.transaction() as conn:
                conn.execute(sa.insert(runs_table), [d["run"] for d in docs])
                for part, table in RUN_PARTS.items():
                    rows = [r for d in docs for r in d[part]]
                    if rows:
                        conn.execute(sa.insert(table), rows)
        if not vault.meta.is_sqlite:
            with vault.meta.transaction() as conn:
                for table in (runs_table, *RUN_PARTS.values()):
                    conn.exec_driver_sql(f"ANALYZE {table.name}")
