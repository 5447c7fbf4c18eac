"""Model registry: labvault beside MLflow's model registry, both on SQLite, on the same machine.

Medians of single operations, reported as operations per second and as the ratio labvault / MLflow:

- register a version: labvault hashes and stores the files, writes metrics.json, run.json,
  data_manifest.json and checksum.txt, builds the PROJECT/MODEL/VERSION tree, makes the objects
  durable, and commits the version row with its audit event; MLflow's ``create_model_version``
  records the source URI of the same folder;
- set an alias with no policy: ``promote`` (gate evaluation, the alias move, its history row and
  its audit event in one transaction) against ``set_registered_model_alias``;
- resolve an alias: ``resolve("p/m@prod")`` against ``get_model_version_by_alias``;
- and labvault's promotions per second under a metrics-only policy (two metric gates).

MLflow is installed on first use into ``.bench/mlflow`` (``uv venv`` + ``uv pip install mlflow``).

    .venv/bin/python benchmarks/registry.py            # default: 200 operations of each kind
    .venv/bin/python benchmarks/registry.py -n 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import ensure_mlflow

WEIGHTS = 64 * 1024  # bytes of "model" per version
GOAL = 5.0


def _median_seconds(
    fn: Callable[[int], object], n: int, *, setup: Callable[[int], object] | None = None, warmup: int = 3
) -> float:
    """Median wall time of ``fn(i)``; ``setup(i)`` runs before each call, untimed."""
    for i in range(warmup):
        if setup:
            setup(-1 - i)
        fn(-1 - i)
    times = []
    for i in range(n):
        if setup:
            setup(i)
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model_folder(root: Path) -> Path:
    folder = root / "model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(os.urandom(WEIGHTS))
    (folder / "config.json").write_text('{"layers": 3}\n')
    return folder


def _set_metrics(folder: Path, i: int) -> None:
    # Different content each time, so each registration is a new version with new objects.
    (folder / "metrics.json").write_text(json.dumps({"auc": 0.9 + (i % 1000) / 100000, "latency_ms": 20, "i": i}))


# -- labvault -----------------------------------------------------------------------------------
def bench_labvault(n: int) -> dict[str, float]:
    from labvault.vault import Vault

    os.environ.setdefault("LABVAULT_USER", "bench@example.com")
    tmp = Path(tempfile.mkdtemp(prefix="lv-bench-registry-"))
    try:
        vault, _ = Vault.init(tmp)
        reg = vault.registry
        folder = _model_folder(tmp)

        def register(i: int) -> None:
            reg.register("bench/model", folder)

        out = {"register": _median_seconds(register, n, setup=lambda i: _set_metrics(folder, i))}
        versions = [v.version for v in reg.versions("bench/model")][:2]

        def set_alias(i: int) -> None:
            decision = reg.promote(f"bench/model@{versions[i % 2]}", "prod")
            assert decision.moved

        out["set_alias"] = _median_seconds(set_alias, n)
        out["resolve_alias"] = _median_seconds(lambda i: reg.resolve("bench/model@prod"), n)
        (tmp / "labvault.yaml").write_text(
            'models:\n  bench/model:\n    staging:\n      metrics:\n        auc: ">= 0.5"\n        latency_ms: "< 50"\n'
        )

        def promote_policy(i: int) -> None:
            decision = reg.promote(f"bench/model@{versions[i % 2]}", "staging")
            assert decision.moved
            assert len(decision.gates) == 2

        out["promote_policy"] = _median_seconds(promote_policy, n)
        assert reg.verify_audit().ok
        vault.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- MLflow (runs inside its own venv) ----------------------------------------------------------
def mlflow_worker(n: int) -> dict[str, float]:
    import logging

    logging.disable(logging.WARNING)
    from mlflow import MlflowClient, set_tracking_uri

    tmp = Path(tempfile.mkdtemp(prefix="mlflow-bench-registry-"))
    try:
        set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        client = MlflowClient()
        client.create_registered_model("model")
        folder = _model_folder(tmp)
        source = folder.as_uri()

        def register(i: int) -> None:
            client.create_model_version("model", source=source)

        out = {"register": _median_seconds(register, n, setup=lambda i: _set_metrics(folder, i))}
        out["set_alias"] = _median_seconds(
            lambda i: client.set_registered_model_alias("model", "prod", str(1 + i % 2)), n
        )
        out["resolve_alias"] = _median_seconds(lambda i: client.get_model_version_by_alias("model", "prod"), n)
        import mlflow

        out["version"] = mlflow.__version__  # type: ignore[assignment]
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_mlflow(n: int) -> dict[str, float]:
    python = ensure_mlflow()
    proc = subprocess.run(
        [str(python), __file__, "--mlflow-worker", "-n", str(n)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"MLflow worker failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="operations of each kind (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--mlflow-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mlflow_worker:
        print(json.dumps(mlflow_worker(args.n)))
        return
    ours = bench_labvault(args.n)
    theirs = bench_mlflow(args.n)
    rows = []
    for key, label in (
        ("register", "register a version"),
        ("set_alias", "set an alias (no policy)"),
        ("resolve_alias", "resolve an alias"),
    ):
        lv_ops, ml_ops = 1 / ours[key], 1 / theirs[key]
        rows.append(
            {
                "operation": label,
                "labvault_ops_s": round(lv_ops, 1),
                "mlflow_ops_s": round(ml_ops, 1),
                "ratio": round(lv_ops / ml_ops, 2),
                "goal_met": lv_ops / ml_ops >= GOAL,
            }
        )
    promotions = round(1 / ours["promote_policy"], 1)
    if args.json:
        print(json.dumps({"n": args.n, "mlflow": theirs.get("version"), "rows": rows, "promotions_s": promotions}))
        return
    print(f"model registry, SQLite, medians of {args.n} operations each (MLflow {theirs.get('version')})")
    print(f"{'operation':<28}{'labvault ops/s':>16}{'MLflow ops/s':>14}{'ratio':>8}  goal >= {GOAL:g}x")
    for r in rows:
        mark = "met" if r["goal_met"] else "MISSED"
        print(f"{r['operation']:<28}{r['labvault_ops_s']:>16}{r['mlflow_ops_s']:>14}{r['ratio']:>7}x  {mark}")
    print(f"{'promote, metrics-only policy':<28}{promotions:>16}{'-':>14}")


if __name__ == "__main__":
    main()
