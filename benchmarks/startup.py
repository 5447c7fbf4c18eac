"""Start-up benchmark: every labvault command as a whole process, beside its DVC and MLflow equivalents.

    python benchmarks/startup.py [--runs 1000] [--quick] [--postgres URL]

Builds one throw-away git workspace per tool under a temporary folder: labvault with ``--runs`` runs
(params, metrics, an artifact each for the first 100), 100 model versions (10 models x 10, an alias,
an archived version) and a dataset of 3 versions; MLflow (SQLite tracking store) with the same runs
and registered versions; DVC with the same dataset tracked. Then it times each command as a fresh
process (median of 5, wall clock and CPU: user + system of the child, which a busy machine distorts
less). The anchors are installed on first use into their own virtual environments under ``.bench/``,
as the other benchmark scripts do (``.bench/mlflow``, ``.bench/dvc-venv``).

With ``--postgres URL`` (a server labvault may create a schema in, e.g. the tests'
``postgresql://postgres@127.0.0.1:5432/test``), a second table times labvault's read commands on the
same vault with its metadata in PostgreSQL (a throw-away schema, dropped at the end).

Goal (issue 11): every read command in at most 0.3 s on this vault (0.6 s on PostgreSQL),
``--help``/``--version`` in 0.15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _harness import ensure_dvc, ensure_mlflow

LV_PYTHON = Path(sys.executable)
LABVAULT = LV_PYTHON.parent / "labvault"
REPS = 5
GOAL_READ, GOAL_HELP, GOAL_PG = 0.3, 0.15, 0.6
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")},
    "LABVAULT_USER": "bench@example.com",
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@e",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@e",
    "DVC_NO_ANALYTICS": "1",
    "NO_COLOR": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

FILL_LABVAULT = r"""
import os, random, sys
from collections.abc import Iterator
from pathlib import Path
import labvault as lv
from labvault.vault import Vault
root, runs = Path(sys.argv[1]), int(sys.argv[2])
vault, _ = Vault.init(root, database_url=sys.argv[3] if len(sys.argv) > 3 else None)
random.seed(7)
for i in range(runs):
    with lv.start_run(project="bench", name=f"r{i}") as run:
        run.log_params({"depth": random.choice([2, 4, 6, 8]), **{f"p{j}": j for j in range(4)}})
        run.log_metrics({"auc": random.random(), "loss": random.random()})
        if i < 100:
            model = root / "models" / f"m{i}"
            model.mkdir(parents=True)
            (model / "model.bin").write_bytes(os.urandom(256))
            run.log_artifact(str(model / "model.bin"))
for i in range(100):
    vault.registry.register(f"fraud/m{i % 10}", root / "models" / f"m{i}", message=f"try {i}")
data = root / "data"
for v in range(3):
    data.mkdir(exist_ok=True)
    for j in range(20):
        (data / f"part{j}.csv").write_text("a,b\n" + "".join(f"{k},{k * v}\n" for k in range(50)))
    vault.data.add("transactions", data, message=f"v{v}")
print(vault.runs.list(limit=1)[0].id)
"""

FILL_MLFLOW = r"""
import logging, os, random, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import mlflow
from mlflow.tracking import MlflowClient
root, runs = sys.argv[1], int(sys.argv[2])
mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
exp = mlflow.set_experiment("bench")
client = MlflowClient()
random.seed(7)
first = None
for i in range(runs):
    with mlflow.start_run(run_name=f"r{i}") as run:
        mlflow.log_params({"depth": random.choice([2, 4, 6, 8]), **{f"p{j}": j for j in range(4)}})
        mlflow.log_metrics({"auc": random.random(), "loss": random.random()})
        first = first or run.info.run_id
for m in range(10):
    client.create_registered_model(f"m{m}")
    for v in range(10):
        client.create_model_version(f"m{m}", f"runs:/{first}/model", run_id=first)
print(exp.experiment_id, first)
"""


def git_workspace(base: Path, name: str) -> Path:
    ws = base / name
    ws.mkdir()
    (ws / "train.py").write_text("print('train')\n")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True, env=ENV)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True, env=ENV)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=ws, check=True, env=ENV)
    return ws


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (user + system of the child) of ``cmd`` as a new process."""
    walls, cpus = [], []
    subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, check=False)  # warm the page cache
    for _ in range(REPS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode()[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def fill_labvault(base: Path, name: str, runs: int, database_url: str | None = None) -> tuple[Path, str]:
    """A labvault workspace filled with ``runs`` runs, 100 model versions and 3 data versions; the id of a run."""
    ws = git_workspace(base, name)
    where = "PostgreSQL" if database_url else "SQLite"
    print(f"filling labvault ({where}) with {runs} runs ...", file=sys.stderr)
    fill = subprocess.run(
        [str(LV_PYTHON), "-c", FILL_LABVAULT, str(ws), str(runs), *([database_url] if database_url else [])],
        cwd=ws,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return ws, fill.stdout.split()[-1]


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards (as the tests' pg_url fixture)."""
    import psycopg

    schema = f"lv_startup_{secrets.token_hex(6)}"
    conninfo = "postgresql://" + url.split("://", 1)[1]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def read_commands(run_id: str) -> list[list[str]]:
    return [
        ["runs", "list"],
        ["runs", "list", "--json"],
        ["runs", "list", "--filter", "metrics.auc > 0.9"],
        ["runs", "show", run_id],
        ["models", "list"],
        ["models", "versions", "fraud/m1"],
        ["models", "show", "fraud/m1"],
        ["models", "show", "fraud/m1@0.1.0"],
        ["data", "list"],
        ["data", "log", "transactions"],
        ["data", "show", "transactions"],
        ["audit", "log"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in each tracking store (default 1,000)")
    parser.add_argument("--quick", action="store_true", help="100 runs and no anchors: check the script itself")
    parser.add_argument("--postgres", metavar="URL", help="also time labvault with its metadata in PostgreSQL")
    opts = parser.parse_args()
    runs = 100 if opts.quick else opts.runs
    mlflow = None if opts.quick else ensure_mlflow().parent / "mlflow"
    dvc = None if opts.quick else ensure_dvc()
    with tempfile.TemporaryDirectory(prefix="labvault-startup-") as tmp:
        base = Path(tmp)
        lv_ws, run_id = fill_labvault(base, "lv", runs)
        anchors: dict[str, tuple[list[str], Path]] = {}
        if mlflow is not None:
            ml_ws = git_workspace(base, "ml")
            print(f"filling MLflow with {runs} runs ...", file=sys.stderr)
            out = subprocess.run(
                [str(mlflow.parent / "python"), "-c", FILL_MLFLOW, str(ml_ws), str(runs)],
                cwd=ml_ws,
                env=ENV,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            exp_id, ml_run = out[-2], out[-1]
            ENV["MLFLOW_TRACKING_URI"] = f"sqlite:///{ml_ws}/mlflow.db"
            anchors |= {
                "runs list": ([str(mlflow), "runs", "list", "--experiment-id", exp_id], ml_ws),
                "runs show": ([str(mlflow), "runs", "describe", "--run-id", ml_run], ml_ws),
                "experiments": ([str(mlflow), "experiments", "search"], ml_ws),
                "mlflow --help": ([str(mlflow), "--help"], ml_ws),
                "mlflow --version": ([str(mlflow), "--version"], ml_ws),
            }
        if dvc is not None:
            dvc_ws = git_workspace(base, "dvc")
            shutil.copytree(lv_ws / "data", dvc_ws / "data")
            for cmd in (["init", "-q"], ["add", "-q", "data"]):
                subprocess.run([str(dvc), *cmd], cwd=dvc_ws, env=ENV, check=True, capture_output=True)
            subprocess.run(["git", "add", "-A"], cwd=dvc_ws, env=ENV, check=True)
            subprocess.run(["git", "commit", "-qm", "data"], cwd=dvc_ws, env=ENV, check=True)
            anchors |= {
                "data status": ([str(dvc), "data", "status"], dvc_ws),
                "data list": ([str(dvc), "list", ".", "data"], dvc_ws),
                "exp show": ([str(dvc), "exp", "show", "--no-pager"], dvc_ws),
                "dvc --help": ([str(dvc), "--help"], dvc_ws),
                "dvc --version": ([str(dvc), "--version"], dvc_ws),
            }
        # (labvault command, goal, anchor key)
        table: list[tuple[list[str], float | None, str | None]] = [
            (["--help"], GOAL_HELP, "mlflow --help"),
            (["--help"], GOAL_HELP, "dvc --help"),
            (["--version"], GOAL_HELP, "mlflow --version"),
            (["version"], GOAL_HELP, "dvc --version"),
            (["runs", "list"], GOAL_READ, "runs list"),
            (["runs", "list", "--json"], GOAL_READ, None),
            (["runs", "list", "--filter", "metrics.auc > 0.9"], GOAL_READ, None),
            (["runs", "show", run_id], GOAL_READ, "runs show"),
            (["models", "list"], GOAL_READ, "experiments"),
            (["models", "versions", "fraud/m1"], GOAL_READ, None),
            (["models", "show", "fraud/m1"], GOAL_READ, None),
            (["models", "show", "fraud/m1@0.1.0"], GOAL_READ, None),
            (["data", "list"], GOAL_READ, "data list"),
            (["data", "log", "transactions"], GOAL_READ, None),
            (["data", "show", "transactions"], GOAL_READ, None),
            (["data", "status"], GOAL_READ, "data status"),
            (["audit", "log"], GOAL_READ, None),
            (["runs", "list", "--limit", "20"], GOAL_READ, "exp show"),
        ]
        print(
            f"\nwhole commands, medians of {REPS}; labvault vault: {runs} runs, 100 model versions, 3 data versions\n"
        )
        print(
            f"{'labvault command':40} {'wall s':>7} {'cpu s':>6} {'goal':>6}   {'anchor':36} {'wall s':>7} {'cpu s':>6}"
        )
        for args, goal, anchor in table:
            wall, cpu = timed([str(LABVAULT), *args], lv_ws)
            verdict = "" if goal is None else ("met" if cpu <= goal else "NOT met")
            line = f"{' '.join(args)[:40]:40} {wall:7.3f} {cpu:6.3f} {verdict:>6}"
            if anchor is not None and anchor in anchors:
                cmd, cwd = anchors[anchor]
                a_wall, a_cpu = timed(cmd, cwd)
                shown = " ".join([Path(cmd[0]).name, *cmd[1:]])
                line += f"   {shown[:36]:36} {a_wall:7.3f} {a_cpu:6.3f}"
            print(line, flush=True)
        if opts.postgres:
            with postgres_schema(opts.postgres) as url:
                pg_ws, pg_run = fill_labvault(base, "lv-pg", runs, url)
                print(
                    f"\nlabvault with its metadata in PostgreSQL ({runs} runs, 100 model versions), medians of {REPS}\n"
                )
                print(f"{'labvault command':40} {'wall s':>7} {'cpu s':>6} {'goal':>6}")
                for args in read_commands(pg_run):
                    wall, cpu = timed([str(LABVAULT), *args], pg_ws)
                    verdict = "met" if cpu <= GOAL_PG else "NOT met"
                    print(f"{' '.join(args)[:40]:40} {wall:7.3f} {cpu:6.3f} {verdict:>6}", flush=True)
        print("\ngoal verdicts use CPU seconds (user + system), which a machine shared with other work distorts least")


if __name__ == "__main__":
    main()
