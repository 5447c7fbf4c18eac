"""Tracking benchmark: labvault against MLflow on the same workload, both on SQLite.

    python benchmarks/tracking.py [--quick]

MLflow is installed into its own virtual environment under ``.bench/mlflow`` when absent
(``uv venv`` + ``uv pip install mlflow``). Each workload runs in a fresh process per tool inside a
throw-away git repository (so both record a commit), and every figure is the median of 5 repetitions:

1. synchronous ``log_metric`` calls/s (durable on return);
2. batched logging: ``log_metrics`` of 1,000 values per call against MLflow's ``log_batch`` of 1,000;
3. creating runs with 10 params and 5 metrics each, with full capture (5 batches of 400 runs: 2,000);
4. a filtered search (``metrics.auc > 0.9 and params.depth = 4``; median of 21, wall clock and CPU
   seconds, after one warm-up query on each side) and listing all runs, over those 2,000 runs;
   labvault alone also over 10,000 and 100,000 runs (extra runs bulk-inserted). Both sides return
   full run records: MLflow's ``search_runs`` its Run entities (info, params, metrics,
   tags), labvault its Run records with the capture document decoded too. The two sides are
   timed paired: both workers wait with their runs created, and each query on one side is
   followed by the same query on the other (the first side alternating), so a change in the
   machine's load falls on both alike; the ratio is also given as the median of the pairs' ratios;
5. start-up: ``import`` and ``--help`` of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import clean_env, ensure_mlflow

REPS = 5
SEARCH_REPS = 21  # a search takes milliseconds: more pairs, so a busy machine moves the medians less

COMMON = r"""
import json, random, statistics, sys, time
REPS = 5
SYNC_CALLS = int(sys.argv[2])
BATCHES, BATCH = 10, 1000
RUNS_PER_REP = int(sys.argv[3])
FILTER_RUNS = RUNS_PER_REP * REPS
def median(xs): return statistics.median(xs)
out = {}
def serve(searches):
    # Paired timing: report what was measured so far, then run the searches the parent asks for,
    # one at a time, so that the two tools' queries alternate.
    print("@@ " + json.dumps(out), flush=True)
    for line in sys.stdin:
        what, clock = line.split()
        if what == "done":
            return
        tick = time.process_time if clock == "cpu" else time.perf_counter
        t = tick(); found = searches[what](); took = tick() - t
        print("@@ " + json.dumps([took, len(found)]), flush=True)
"""

LABVAULT = (
    COMMON
    + r"""
import labvault as lv
from labvault.vault import Vault
vault, _ = Vault.init(sys.argv[1])
# 1. synchronous log_metric
rates = []
for rep in range(REPS):
    with lv.start_run(name=f"sync{rep}") as run:
        t = time.perf_counter()
        for i in range(SYNC_CALLS):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        rates.append(SYNC_CALLS / (time.perf_counter() - t))
out["sync_calls_per_s"] = median(rates)
# 2. batched
rates = []
for rep in range(REPS):
    with lv.start_run(name=f"batch{rep}") as run:
        t = time.perf_counter()
        for b in range(BATCHES):
            run.log_metrics({f"m{k}": k * 0.001 + b for k in range(BATCH)}, step=b)
        rates.append(BATCHES * BATCH / (time.perf_counter() - t))
out["batch_metrics_per_s"] = median(rates)
vault.runs.delete  # noqa: B018 - keep the service warm
# 3. run creation with full capture (git, environment, stdout), 10 params + 5 metrics
random.seed(7)
rates = []
for rep in range(REPS):
    t = time.perf_counter()
    for i in range(RUNS_PER_REP):
        with lv.start_run(project="bench", name=f"r{rep}-{i}") as run:
            run.log_params({"depth": random.choice([2, 4, 6, 8]), **{f"p{j}": j for j in range(9)}})
            run.log_metrics({"auc": random.random(), **{f"m{j}": random.random() for j in range(4)}})
    rates.append(RUNS_PER_REP / (time.perf_counter() - t))
out["runs_per_s"] = median(rates)
# 4. search over the FILTER_RUNS runs of project "bench", timed paired with MLflow's (serve)
f = "metrics.auc > 0.9 and params.depth = 4"
def full(found):
    # Like MLflow's Run entities: every field decoded, the capture document (git, command,
    # environment, ...: MLflow's system tags) included, which labvault otherwise decodes on first use.
    for run in found:
        dict(run.capture)
    return found
search = lambda: full(vault.runs.list(project="bench", filter=f))
search()  # warm, as MLflow's first query is
serve({"filtered": search, "all": lambda: full(vault.runs.list(project="bench"))})
out = {}
def timed(fn, reps=REPS):
    times = []
    for _ in range(reps):
        t = time.perf_counter(); res = fn(); times.append(time.perf_counter() - t)
    return median(times), len(res)
# Scale: bulk-insert synthetic runs (same shape) to reach 10,000 and 100,000 in the project.
import json as _json
from labvault.entities import utcnow
from labvault.storage.meta.repos import runs as repo
import sqlalchemy as sa
from labvault.storage.meta.tables import runs as T, run_params as P, run_metrics as M, run_latest as L
def bulk(n):
    now = utcnow()
    base = {"project": "bench", "status": "finished", "parent_id": None, "user": "bench", "host": "bench",
            "started_at": now, "ended_at": now, "exit_code": 0, "error": None, "seed": None, "inputs": "[]",
            "capture": "{}", "deleted_at": None}
    with vault.meta.transaction() as conn:
        for start in range(0, n, 5000):
            rows, params, metrics = [], [], []
            for i in range(start, min(n, start + 5000)):
                rid = f"{random.getrandbits(48):012x}"
                rows.append({**base, "id": rid, "name": f"s{i}"})
                values = {"depth": random.choice([2, 4, 6, 8]), **{f"p{j}": j for j in range(9)}}
                for k, val in values.items():
                    params.append({"run_id": rid, "key": k, "value": str(val), "text": str(val), "num": float(val)})
                for k in ["auc", "m0", "m1", "m2", "m3"]:
                    metrics.append({"run_id": rid, "key": k, "step": 0, "value": random.random(), "kind": 0})
            conn.execute(sa.insert(T), rows)
            conn.execute(sa.insert(P), params)
            conn.execute(sa.insert(M), [{**m, "ts_ms": 0} for m in metrics])
            conn.execute(sa.insert(L), metrics)
for total in [int(x) for x in sys.argv[4].split(",") if x]:
    with vault.meta.read() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(T).where(T.c.project == "bench")).scalar()
    bulk(total - have)
    out[f"search_filtered_s_{total}"], out[f"search_filtered_n_{total}"] = timed(
        lambda: full(vault.runs.list(project="bench", filter=f)))
print(json.dumps(out))
"""
)

MLFLOW = (
    COMMON
    + r"""
import logging, os, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri(f"sqlite:///{sys.argv[1]}/mlflow.db")
exp = mlflow.set_experiment("bench")
client = MlflowClient()
rates = []
for rep in range(REPS):
    with mlflow.start_run(run_name=f"sync{rep}"):
        t = time.perf_counter()
        for i in range(SYNC_CALLS):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        rates.append(SYNC_CALLS / (time.perf_counter() - t))
out["sync_calls_per_s"] = median(rates)
rates = []
for rep in range(REPS):
    with mlflow.start_run(run_name=f"batch{rep}") as run:
        t = time.perf_counter()
        for b in range(BATCHES):
            ts = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(f"m{k}", k * 0.001 + b, ts, b) for k in range(BATCH)])
        rates.append(BATCHES * BATCH / (time.perf_counter() - t))
out["batch_metrics_per_s"] = median(rates)
exp2 = mlflow.set_experiment("bench-runs")
random.seed(7)
rates = []
for rep in range(REPS):
    t = time.perf_counter()
    for i in range(RUNS_PER_REP):
        with mlflow.start_run(run_name=f"r{rep}-{i}"):
            mlflow.log_params({"depth": random.choice([2, 4, 6, 8]), **{f"p{j}": j for j in range(9)}})
            mlflow.log_metrics({"auc": random.random(), **{f"m{j}": random.random() for j in range(4)}})
    rates.append(RUNS_PER_REP / (time.perf_counter() - t))
out["runs_per_s"] = median(rates)
ids = [exp2.experiment_id]
f = "metrics.auc > 0.9 and params.depth = '4'"
search = lambda: client.search_runs(ids, filter_string=f, max_results=50000)
search()
serve({
    "filtered": search,
    "all": lambda: client.search_runs(ids, max_results=50000),
    # The fluent form most users call, which returns a pandas DataFrame.
    "fluent": lambda: mlflow.search_runs(ids, filter_string=f, max_results=50000),
})
out = {}
print(json.dumps(out))
"""
)


def git_workspace(base: Path, name: str) -> Path:
    ws = base / name
    ws.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@e",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@e",
    }
    (ws / "train.py").write_text("print('train')\n")
    (ws / ".gitignore").write_text(".labvault/\nmlflow.db\nmlruns/\n")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=ws, check=True, env=env)
    return ws


class Worker:
    """A worker process: its figures up to the searches, then the searches it is asked for, one at a time."""

    def __init__(self, python: str, code: str, ws: Path, args: list[str]) -> None:
        env = clean_env()
        # To a file: a pipe left unread could fill and block the worker (the child keeps its own descriptor).
        self.errors = ws.parent / f"{ws.name}.stderr"
        with self.errors.open("w") as errors:
            self.proc = subprocess.Popen(
                [python, "-c", code, str(ws), *args],
                cwd=ws,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        self.figures: dict[str, float] = self._reply()

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        sys.exit(f"worker failed:\n{self.errors.read_text()[-3000:]}")

    def time(self, what: str, clock: str) -> tuple[float, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{what} {clock}\n")
        self.proc.stdin.flush()
        took, found = self._reply()
        return float(took), int(found)

    def finish(self) -> dict[str, float]:
        """Let the worker go on past its searches; what it measured after them."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("done -\n")
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        if self.proc.wait() != 0:
            sys.exit(f"worker failed:\n{self.errors.read_text()[-3000:]}")
        return dict(json.loads(rest.strip().splitlines()[-1]))


def paired(lv: Worker, ml: Worker, what: str, clock: str, reps: int) -> dict[str, float]:
    """``what`` timed ``reps`` times on each side, each labvault query next to an MLflow one, the
    side that goes first alternating: medians of each side and the median of the pairs' ratios."""
    ours, theirs = [], []
    found = (0, 0)
    for rep in range(reps):
        if rep % 2 == 0:
            (a, n), (b, m) = lv.time(what, clock), ml.time(what, clock)
        else:
            (b, m), (a, n) = ml.time(what, clock), lv.time(what, clock)
        ours.append(a)
        theirs.append(b)
        found = (n, m)
    return {
        "labvault": statistics.median(ours),
        "mlflow": statistics.median(theirs),
        "pair_ratio": statistics.median(b / a for a, b in zip(ours, theirs, strict=True)),
        "labvault_n": found[0],
        "mlflow_n": found[1],
    }


def startup(cmd: list[str]) -> float:
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    parser.add_argument("--sizes", default="10000,100000", help="labvault-only search sizes (runs)")
    opts = parser.parse_args()
    sync_calls, runs_per_rep = ("200", "40") if opts.quick else ("1000", "400")
    sizes = "2000" if opts.quick else opts.sizes
    mlflow_python = str(ensure_mlflow())
    lv_python = sys.executable
    with tempfile.TemporaryDirectory(prefix="labvault-bench-") as tmp:
        base = Path(tmp)
        print("running labvault ...", file=sys.stderr)
        lv_worker = Worker(lv_python, LABVAULT, git_workspace(base, "lv"), [sync_calls, runs_per_rep, sizes])
        print("running MLflow ...", file=sys.stderr)
        ml_worker = Worker(mlflow_python, MLFLOW, git_workspace(base, "ml"), [sync_calls, runs_per_rep, ""])
        print("searching, the two interleaved ...", file=sys.stderr)
        search = {
            "filtered": paired(lv_worker, ml_worker, "filtered", "wall", SEARCH_REPS),
            "cpu": paired(lv_worker, ml_worker, "filtered", "cpu", SEARCH_REPS),
            "all": paired(lv_worker, ml_worker, "all", "wall", REPS),
        }
        fluent = statistics.median(ml_worker.time("fluent", "wall")[0] for _ in range(REPS))
        ml_worker.finish()
        print("labvault over more runs ...", file=sys.stderr)
        lv = {**lv_worker.figures, **lv_worker.finish()}
        ml = ml_worker.figures
    load = os.getloadavg()
    labvault_bin = str(Path(lv_python).parent / "labvault")
    mlflow_bin = str(Path(mlflow_python).parent / "mlflow")
    start = {
        "import": (startup([lv_python, "-c", "import labvault"]), startup([mlflow_python, "-c", "import mlflow"])),
        "--help": (startup([labvault_bin, "--help"]), startup([mlflow_bin, "--help"])),
    }
    total = int(runs_per_rep) * REPS
    filtered, cpu, listing = search["filtered"], search["cpu"], search["all"]
    rows = [
        ("synchronous log_metric (calls/s)", lv["sync_calls_per_s"], ml["sync_calls_per_s"], True, 20),
        ("batched logging (metrics/s)", lv["batch_metrics_per_s"], ml["batch_metrics_per_s"], True, 10),
        ("runs created, 10 params + 5 metrics (runs/s)", lv["runs_per_s"], ml["runs_per_s"], True, 5),
        (f"filtered search over {total} runs (s)", filtered["labvault"], filtered["mlflow"], False, 10),
        ("  the same, CPU seconds", cpu["labvault"], cpu["mlflow"], False, 10),
        (f"list all {total} runs (s)", listing["labvault"], listing["mlflow"], False, None),
        ("python -c 'import X' (s)", *start["import"], False, None),
        ("X --help (s)", *start["--help"], False, None),
    ]
    print(f"\nlabvault vs MLflow, SQLite, medians of {REPS} (searches: of {SEARCH_REPS}, paired)\n")
    print(f"{'workload':48} {'labvault':>12} {'MLflow':>12} {'ratio':>8}  goal")
    for name, ours, theirs, higher_is_better, goal in rows:
        ratio = ours / theirs if higher_is_better else theirs / ours
        verdict = "" if goal is None else (f">= {goal}x " + ("met" if ratio >= goal else "NOT met"))
        print(f"{name:48} {ours:12.4g} {theirs:12.4g} {ratio:7.1f}x  {verdict}")
    ratio = fluent / filtered["labvault"]
    print(
        f"{'filtered search, MLflow mlflow.search_runs (DataFrame)':48} {filtered['labvault']:12.4g} "
        f"{fluent:12.4g} {ratio:7.1f}x"
    )
    print(
        f"\nfiltered search, median of the {SEARCH_REPS} pairs' ratios: {filtered['pair_ratio']:.1f}x wall clock, "
        f"{cpu['pair_ratio']:.1f}x CPU; load average during the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"filtered search matched {filtered['labvault_n']} (labvault) and {filtered['mlflow_n']} (MLflow) runs")
    for size in sizes.split(","):
        key = f"search_filtered_s_{size}"
        if key in lv:
            matches = lv[f"search_filtered_n_{size}"]
            print(f"labvault filtered search over {int(size):,} runs: {lv[key]:.4f} s ({matches} matches)")


if __name__ == "__main__":
    main()
