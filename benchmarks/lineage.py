"""Lineage: ``downstream`` of a snapshot read by 90% of the runs, and ``upstream`` of a prod model.

A vault of 100,000 runs and 10,000 snapshots (``--runs``/``--snapshots`` to change), 1,000 model
versions registered from runs and a ``prod`` alias, written straight into the tables (building it
through the service would take far longer than what is measured). Medians of in-process calls to
``vault.lineage`` (printing aside), on SQLite and on PostgreSQL when it is reachable.

Targets: under 50 ms for the model, under 500 ms for the snapshot.

Beside it, the anchor: MLflow on SQLite, on a smaller vault built the same way through its client
(``--anchor-runs``, 1,000 by default: MLflow creates a run in milliseconds, so 100,000 would take
long), with labvault measured on a vault of that size too. MLflow's lineage is the same walk by
hand: ``get_model_version_by_alias`` -> ``get_run`` -> its dataset inputs for the model, and
``search_runs`` on ``datasets.name``/``datasets.digest`` -> the model versions of those runs -> their
aliases for the snapshot. MLflow is installed on first use into ``.bench/mlflow``.

    .venv/bin/python benchmarks/lineage.py
    .venv/bin/python benchmarks/lineage.py --quick --json
    .venv/bin/python benchmarks/lineage.py --no-anchor
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import ensure_mlflow

# labvault and SQLAlchemy are imported where they are used: the MLflow worker runs this file in
# MLflow's own venv, where labvault is not installed.
PG = os.environ.get("LABVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
GOALS = {"model_upstream": 0.050, "snapshot_downstream": 0.500}
_BATCH = 5_000


def _fill(vault: Any, n_runs: int, n_snapshots: int, n_versions: int) -> tuple[str, str]:
    import sqlalchemy as sa

    from labvault.storage.meta.tables import data_snapshots, runs
    from labvault.storage.meta.tables.registry import registry_aliases, registry_models, registry_versions

    now = datetime.now(UTC)
    digest = "ab" * 32
    snaps = [
        {
            "name": f"ds{i % 100}",
            "version": i // 100 + 1,
            "content_hash": digest,
            "kind": "dir",
            "storage_uri": f"ds{i % 100}",
            "file_count": 1,
            "total_bytes": 1,
            "tabular": False,
            "record_count": None,
            "schema_hash": None,
            "created_at": now,
            "created_by": "bench",
            "message": "",
            "source_url": None,
            "source_version": None,
            "notes": "[]",
        }
        for i in range(n_snapshots)
    ]
    hot = "data:ds0@v1"
    run_ids = [f"{i:012x}" for i in range(n_runs)]
    # About the size of a real capture document (command, cwd, git, environment, config, warnings):
    # the readers' scan reads every run's row, so a toy document would flatter it.
    capture = json.dumps(
        {
            "git": {"commit": "c" * 40, "branch": "main", "remote": "git@example.com:shop/ranker.git"},
            "environment": "sha256:" + "e" * 64,
            "config": [{"path": "conf/train.yaml", "sha256": "sha256:" + "f" * 64, "size": 812}],
            "command": ["python", "train.py", "--epochs", "20", "--lr", "0.001"],
            "cwd": "/home/user/projects/shop",
            "warnings": ["git: 2 untracked files above the size limit were left out of the patch"] * 8,
        }
    )
    rows = []
    for i, run_id in enumerate(run_ids):
        other = f"data:ds{1 + i % 99}@v{1 + i % max(1, n_snapshots // 100)}"
        inputs = [hot, other] if i % 10 else [other]
        rows.append(
            {
                "id": run_id,
                "project": "shop",
                "name": "train",
                "status": "finished",
                "parent_id": None,
                "user": "bench",
                "host": "bench",
                "started_at": now,
                "ended_at": now,
                "exit_code": 0,
                "error": None,
                "seed": None,
                "inputs": json.dumps(inputs),
                "capture": capture,
                "deleted_at": None,
            }
        )
    with vault.meta.transaction() as conn:
        for i in range(0, len(snaps), _BATCH):
            conn.execute(sa.insert(data_snapshots), snaps[i : i + _BATCH])
        for i in range(0, len(rows), _BATCH):
            conn.execute(sa.insert(runs), rows[i : i + _BATCH])
        model_id = conn.execute(
            sa.insert(registry_models).values(project="shop", name="ranker", created_at=now, created_by="bench")
        ).inserted_primary_key[0]
        step = max(1, n_runs // n_versions)
        versions = [
            {
                "model_id": model_id,
                "version": f"0.{v}.0",
                "major": 0,
                "minor": v,
                "patch": 0,
                "tree": digest,
                "content": digest,
                "size": 1,
                "files": 1,
                "run_id": run_ids[1 + v * step],
                "source": "{}",
                "message": None,
                "notes": "[]",
                "created_at": now,
                "created_by": "bench",
            }
            for v in range(n_versions)
        ]
        conn.execute(sa.insert(registry_versions), versions)
        top = conn.execute(sa.select(sa.func.max(registry_versions.c.id))).scalar_one()
        conn.execute(
            sa.insert(registry_aliases).values(
                model_id=model_id, name="prod", version_id=top, lock_version=1, updated_at=now, updated_by="bench"
            )
        )
    return "shop/ranker@prod", hot


def _median(fn: Any, n: int, *, clock: Any = time.perf_counter) -> float:
    """Median wall time (or, with ``clock=time.process_time``, this process's CPU time: on a shared
    machine it tells the work done from the time spent waiting for a core)."""
    fn()  # warm: the first call opens the engine and compiles statements
    times = []
    for _ in range(n):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _measure(vault: Any, n: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    model, hot = _fill(vault, args.runs, args.snapshots, args.versions)
    built = time.perf_counter() - started
    down = vault.lineage.downstream(hot)
    readers = sum(1 for node in down.nodes if node.kind == "run")
    return {
        "build_s": round(built, 1),
        "readers": readers,
        "model_upstream": _median(lambda: vault.lineage.upstream(model), n),
        "snapshot_downstream": _median(lambda: vault.lineage.downstream(hot), max(3, n // 4)),
        "snapshot_downstream_cpu": _median(
            lambda: vault.lineage.downstream(hot), max(3, n // 4), clock=time.process_time
        ),
    }


def _pg_schema() -> tuple[str, Any, str] | None:
    import sqlalchemy as sa

    admin = "postgresql+psycopg://" + PG.split("://", 1)[1]
    try:
        engine = sa.create_engine(admin)
        schema = f"lv_bench_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except Exception:  # no PostgreSQL here: SQLite only
        return None
    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}options=-csearch_path%3D{schema}", engine, schema


# -- MLflow, the anchor (runs inside its own venv) ----------------------------------------------------
def mlflow_worker(n_runs: int, n_versions: int, n: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput

    tmp = Path(tempfile.mkdtemp(prefix="mlflow-bench-lineage-"))
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        client = MlflowClient()
        exp = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
        started = time.perf_counter()

        def dataset(name: str, version: int) -> DatasetInput:
            return DatasetInput(Dataset(name=name, digest=f"{name}v{version}", source_type="local", source=name))

        run_ids = []
        versions_per_name = max(1, n_runs // 10 // 100)
        for i in range(n_runs):
            run_id = client.create_run(exp).info.run_id
            other = dataset(f"ds{1 + i % 99}", 1 + i % versions_per_name)
            client.log_inputs(run_id, [dataset("ds0", 1), other] if i % 10 else [other])
            client.set_terminated(run_id)
            run_ids.append(run_id)
        client.create_registered_model("ranker")
        step = max(1, n_runs // n_versions)
        last = None
        for v in range(n_versions):
            rid = run_ids[1 + v * step]
            last = client.create_model_version("ranker", source=f"runs:/{rid}/model", run_id=rid)
        assert last is not None
        client.set_registered_model_alias("ranker", "prod", last.version)
        built = time.perf_counter() - started

        def upstream() -> int:
            version = client.get_model_version_by_alias("ranker", "prod")
            run = client.get_run(version.run_id)
            return len(run.inputs.dataset_inputs)

        def downstream() -> tuple[int, int]:
            readers: set[str] = set()
            token = None
            while True:
                page = client.search_runs(
                    [exp], "datasets.name = 'ds0' AND datasets.digest = 'ds0v1'", max_results=50_000, page_token=token
                )
                readers.update(r.info.run_id for r in page)
                token = page.token
                if not token:
                    break
            made = [v for v in client.search_model_versions("name = 'ranker'") if v.run_id in readers]
            aliases = [a for v in made for a in v.aliases]
            return len(readers), len(made) + len(aliases)

        readers, _ = downstream()
        return {
            "version": mlflow.__version__,
            "build_s": round(built, 1),
            "readers": readers,
            "model_upstream": _median(upstream, n),
            "snapshot_downstream": _median(downstream, max(3, n // 4)),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _anchor(args: argparse.Namespace) -> dict[str, Any]:
    """labvault and MLflow on the same smaller vault: ``anchor_runs`` runs, a tenth as many snapshots."""
    from labvault import Vault

    python = ensure_mlflow()
    n_versions = max(1, args.anchor_runs // 100)
    command = [str(python), __file__, "--mlflow-worker", "--anchor-runs", str(args.anchor_runs), "-n", str(args.n)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"MLflow worker failed:\n{proc.stderr}")
    theirs = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    small = argparse.Namespace(runs=args.anchor_runs, snapshots=max(100, args.anchor_runs // 10), versions=n_versions)
    with tempfile.TemporaryDirectory() as tmp:
        vault, _ = Vault.init(Path(tmp))
        with vault:
            ours = _measure(vault, args.n, small)
    return {"runs": args.anchor_runs, "versions": n_versions, "labvault": ours, "mlflow": theirs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=1_000)
    parser.add_argument("-n", type=int, default=20, help="timed calls per figure")
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 1,000 snapshots: checks the script")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--anchor-runs", type=int, default=1_000, help="runs in the vault MLflow is compared on")
    parser.add_argument("--no-anchor", action="store_true", help="labvault alone")
    parser.add_argument("--mlflow-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mlflow_worker:
        print(json.dumps(mlflow_worker(args.anchor_runs, max(1, args.anchor_runs // 100), args.n)))
        return
    from labvault import Vault

    if args.quick:
        args.runs, args.snapshots, args.versions, args.n, args.anchor_runs = 10_000, 1_000, 100, 5, 500
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        vault, _ = Vault.init(Path(tmp) / "sqlite")
        with vault:
            results["sqlite"] = _measure(vault, args.n, args)
        pg = _pg_schema()
        if pg is not None:
            url, engine, schema = pg
            try:
                vault, _ = Vault.init(Path(tmp) / "postgres", database_url=url)
                with vault:
                    results["postgresql"] = _measure(vault, args.n, args)
            finally:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                engine.dispose()
    anchor = None if args.no_anchor else _anchor(args)
    if args.json:
        print(json.dumps({**results, "anchor": anchor}, indent=2))
        return
    print(f"{args.runs:,} runs, {args.snapshots:,} snapshots, {args.versions:,} versions")
    for backend, figures in results.items():
        print(f"{backend}: built in {figures['build_s']} s; the hot snapshot has {figures['readers']:,} readers")
        for key, goal in GOALS.items():
            took = figures[key]
            verdict = "ok" if took < goal else "OVER"
            print(f"  {key:<20} {took * 1000:8.1f} ms  (target {goal * 1000:.0f} ms: {verdict})")
        cpu = figures["snapshot_downstream_cpu"] * 1000
        print(f"  {'  of which CPU here':<20} {cpu:8.1f} ms  (this process; the database server's is apart)")
    print(f"load average when done: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if anchor is not None:
        ours, theirs = anchor["labvault"], anchor["mlflow"]
        print(
            f"beside MLflow {theirs['version']} (SQLite), {anchor['runs']:,} runs, {anchor['versions']:,} versions, "
            f"the hot snapshot read by {ours['readers']:,} (MLflow: {theirs['readers']:,}); MLflow built in "
            f"{theirs['build_s']} s"
        )
        print(f"  {'':<20} {'labvault':>10} {'MLflow':>10} {'ratio':>8}")
        for key in GOALS:
            ratio = theirs[key] / ours[key]
            print(f"  {key:<20} {ours[key] * 1000:8.1f}ms {theirs[key] * 1000:8.1f}ms {ratio:7.1f}x")


if __name__ == "__main__":
    main()
