"""Fetching a model by alias through a server: ``lv.models.get("p/m@prod")`` against a labvault server,
beside MLflow's download of a registered model by alias from an MLflow server, same machine, loopback.

- labvault: the first call resolves the alias on the server and downloads the version's objects into a
  verified cache in the user's cache folder; later calls (model unchanged) resolve the alias again and
  check the cached files' sizes and mtimes: no download. Goal: a warm call under 50 ms.
- MLflow: ``mlflow.artifacts.download_artifacts("models:/m@prod")`` (what ``mlflow.pyfunc.load_model``
  does before loading): resolves the alias and downloads every file on every call (it keeps no cache).

Both serve the same model folder (``--mb`` MB of weights, a config and metrics.json), SQLite on both
sides. MLflow is installed on first use into ``.bench/mlflow`` (``benchmarks/_harness.py``).

    .venv/bin/python benchmarks/client_models.py            # default: 20 MB, 30 warm calls
    .venv/bin/python benchmarks/client_models.py --mb 200 -n 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ensure_mlflow, percentile, start_labvault_server, start_mlflow_server, stop

GOAL_MS = 50.0


def model_folder(root: Path, mb: int) -> Path:
    folder = root / "model"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(mb * 1024 * 1024))
    (folder / "config.json").write_text('{"layers": 3}\n')
    (folder / "metrics.json").write_text('{"auc": 0.95}\n')
    return folder


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(times) * 1000, "p95_ms": percentile(times, 0.95) * 1000}


# -- labvault ----------------------------------------------------------------------------------------
def bench_labvault(tmp: Path, folder: Path, n: int) -> dict[str, float]:
    root = tmp / "lv"
    root.mkdir()
    proc, url, token = start_labvault_server(root, role="maintainer", limit=600)
    try:
        os.environ.update(LABVAULT_URI=url, LABVAULT_TOKEN=token, XDG_CACHE_HOME=str(tmp / "lv-cache"))
        os.chdir(tmp)
        import labvault as lv

        with lv.open() as vault:
            vault.registry.register("bench/model", folder)
            vault.registry.promote("bench/model@0.1.0", "prod")
        start = time.perf_counter()
        path = lv.models.get("bench/model@prod")
        cold = time.perf_counter() - start
        if (path / "weights.bin").read_bytes() != (folder / "weights.bin").read_bytes():
            sys.exit("labvault returned other bytes than were registered")
        times = []
        for _ in range(n):
            start = time.perf_counter()
            again = lv.models.get("bench/model@prod")
            times.append(time.perf_counter() - start)
            assert again == path
        return {"cold_s": cold, **_stats(times)}
    finally:
        stop(proc)


# -- MLflow ------------------------------------------------------------------------------------------
MLFLOW_WORKER = r"""
import json, sys, time, tempfile
import mlflow
from mlflow import MlflowClient
url, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mlflow.set_tracking_uri(url)
with mlflow.start_run() as run:
    mlflow.log_artifacts(folder, artifact_path="model")
client = MlflowClient()
client.create_registered_model("model")
mv = client.create_model_version("model", f"runs:/{run.info.run_id}/model", run.info.run_id)
client.set_registered_model_alias("model", "prod", mv.version)
times = []
for i in range(n + 1):
    dst = tempfile.mkdtemp()
    start = time.perf_counter()
    mlflow.artifacts.download_artifacts("models:/model@prod", dst_path=dst)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def bench_mlflow(tmp: Path, folder: Path, n: int) -> dict[str, float]:
    python = ensure_mlflow()
    root = tmp / "ml"
    root.mkdir()
    # Artifacts through the server (over HTTP), as a client on another machine fetches them.
    proc, url = start_mlflow_server(python, root, proxy_artifacts=True, limit=600)
    try:
        out = subprocess.run(
            [str(python), "-c", MLFLOW_WORKER, url, str(folder), str(n)],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        times = json.loads(out.strip().splitlines()[-1])
        return {"cold_s": times[0], **_stats(times[1:])}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=20, help="megabytes of model weights")
    parser.add_argument("-n", type=int, default=30, help="warm calls to time")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lv-bench-client-models-"))
    try:
        folder = model_folder(tmp, opts.mb)
        print("labvault server ...", file=sys.stderr)
        lv = bench_labvault(tmp, folder, opts.n)
        print(f"labvault: {json.dumps(lv)}", file=sys.stderr)
        print("mlflow server ...", file=sys.stderr)
        ml = bench_mlflow(tmp, folder, opts.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"mb": opts.mb, "n": opts.n, "labvault": lv, "mlflow": ml, "goal_ms": GOAL_MS}
    if opts.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"\nmodel by alias through a server, {opts.mb} MB of weights, loopback; {opts.n} warm calls")
    print(f"{'':34}{'labvault':>12}{'mlflow':>12}{'mlflow/labvault':>18}")
    for key, label in (
        ("cold_s", "first fetch (s)"),
        ("median_ms", "again, median (ms)"),
        ("p95_ms", "again, p95 (ms)"),
    ):
        print(f"{label:34}{lv[key]:>12.3f}{ml[key]:>12.3f}{ml[key] / lv[key]:>17.1f}x")
    verdict = "meets" if lv["median_ms"] < GOAL_MS else "MISSES"
    print(
        f"\nlabvault's cached, unchanged model: {lv['median_ms']:.1f} ms median ({verdict} the {GOAL_MS:.0f} ms goal)"
    )


if __name__ == "__main__":
    main()
