"""Server benchmark: labvault's server against ``mlflow server``, same machine, same HTTP client, SQLite.

    python benchmarks/server.py [--quick] [--clients N] [--runs N]

MLflow is installed into its own virtual environment under ``.bench/mlflow`` when absent (as in
benchmarks/tracking.py). Each server is started on a free loopback port over a fresh SQLite store,
with one worker process each; the client is this process (httpx, one connection per client thread).

1. 10,000 metrics in batches of 100 (100 requests), against MLflow's ``runs/log-batch``; one client,
   then N concurrent clients each logging 10,000 to its own run;
2. single points, 1,000 requests, against MLflow's ``runs/log-metric``;
3. searching runs (``metrics.auc > 0.9 and params.depth = 4``, a page of 50) and listing a page of 50,
   over R runs created through each API (10 params and an ``auc`` each).

Every figure is points/s or a latency (p50, p99 of the requests); errors and points lost are counted
(a point is lost when the stored history is shorter than what was acknowledged).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
MLFLOW_VENV = BENCH / "mlflow"
LABVAULT = str(Path(sys.executable).parent / "labvault")
BATCH = 100
TOTAL = 10_000


def ensure_mlflow() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import mlflow"], capture_output=True).returncode == 0:
        return MLFLOW_VENV / "bin" / "mlflow"
    BENCH.mkdir(exist_ok=True)
    (BENCH / ".gitignore").write_text("*\n")
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("uv is needed to install MLflow into .bench/mlflow (pip install uv)")
    print("installing MLflow into .bench/mlflow ...", file=sys.stderr)
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(MLFLOW_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(python), "mlflow"], check=True)
    return MLFLOW_VENV / "bin" / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit(f"no answer from {url} in 120 s")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Api:
    """The same workload over either API: create a run, log a batch or a point, search, read back."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=120)

    def create_run(self, c: httpx.Client, params: dict[str, str], auc: float | None = None) -> str:
        raise NotImplementedError

    def log_batch(self, c: httpx.Client, run: str, key: str, start: int, n: int) -> None:
        raise NotImplementedError

    def log_point(self, c: httpx.Client, run: str, key: str, step: int) -> None:
        raise NotImplementedError

    def search(self, c: httpx.Client, filter: str | None) -> int:
        raise NotImplementedError

    def history_len(self, c: httpx.Client, run: str, key: str) -> int:
        raise NotImplementedError


class LabvaultApi(Api):
    def create_run(self, c: httpx.Client, params: dict[str, str], auc: float | None = None) -> str:
        r = c.post("/api/v1/runs", json={"name": "bench", "params": params})
        r.raise_for_status()
        run = str(r.json()["id"])
        if auc is not None:
            c.post(
                f"/api/v1/runs/{run}/log", json={"metrics": [{"key": "auc", "value": auc, "step": 0}]}
            ).raise_for_status()
        return run

    def log_batch(self, c: httpx.Client, run: str, key: str, start: int, n: int) -> None:
        points = [{"key": key, "value": (start + i) * 0.001, "step": start + i} for i in range(n)]
        c.post(f"/api/v1/runs/{run}/log", json={"metrics": points}).raise_for_status()

    def log_point(self, c: httpx.Client, run: str, key: str, step: int) -> None:
        c.post(
            f"/api/v1/runs/{run}/log", json={"metrics": [{"key": key, "value": step * 0.5, "step": step}]}
        ).raise_for_status()

    def search(self, c: httpx.Client, filter: str | None) -> int:
        params: dict[str, Any] = {"limit": 50}
        if filter:
            params["filter"] = filter
        r = c.get("/api/v1/runs", params=params)
        r.raise_for_status()
        return len(r.json())

    def history_len(self, c: httpx.Client, run: str, key: str) -> int:
        return len(c.get(f"/api/v1/runs/{run}/history", params={"key": key}).json().get(key, []))


class MlflowApi(Api):
    def create_run(self, c: httpx.Client, params: dict[str, str], auc: float | None = None) -> str:
        r = c.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0", "start_time": int(time.time() * 1000)})
        r.raise_for_status()
        run = str(r.json()["run"]["info"]["run_id"])
        body: dict[str, Any] = {"run_id": run, "params": [{"key": k, "value": v} for k, v in params.items()]}
        if auc is not None:
            body["metrics"] = [{"key": "auc", "value": auc, "timestamp": int(time.time() * 1000), "step": 0}]
        c.post("/api/2.0/mlflow/runs/log-batch", json=body).raise_for_status()
        return run

    def log_batch(self, c: httpx.Client, run: str, key: str, start: int, n: int) -> None:
        now = int(time.time() * 1000)
        points = [{"key": key, "value": (start + i) * 0.001, "timestamp": now, "step": start + i} for i in range(n)]
        c.post("/api/2.0/mlflow/runs/log-batch", json={"run_id": run, "metrics": points}).raise_for_status()

    def log_point(self, c: httpx.Client, run: str, key: str, step: int) -> None:
        body = {"run_id": run, "key": key, "value": step * 0.5, "timestamp": int(time.time() * 1000), "step": step}
        c.post("/api/2.0/mlflow/runs/log-metric", json=body).raise_for_status()

    def search(self, c: httpx.Client, filter: str | None) -> int:
        body: dict[str, Any] = {"experiment_ids": ["0"], "max_results": 50}
        if filter:
            body["filter"] = filter.replace("= 4", "= '4'")  # MLflow's params are strings
        r = c.post("/api/2.0/mlflow/runs/search", json=body)
        r.raise_for_status()
        return len(r.json().get("runs", []))

    def history_len(self, c: httpx.Client, run: str, key: str) -> int:
        r = c.get(
            "/api/2.0/mlflow/metrics/get-history", params={"run_id": run, "metric_key": key, "max_results": 100000}
        )
        return len(r.json().get("metrics", []))


def logging_load(api: Api, clients: int, per_client: int, batch: int) -> dict[str, float]:
    """``clients`` threads, each logging ``per_client`` points to its own run in requests of ``batch``."""
    latencies: list[float] = []
    errors = [0]
    acked = [0]
    runs: list[str] = []
    lock = threading.Lock()
    with api.client() as c:
        runs = [api.create_run(c, {"kind": "load"}) for _ in range(clients)]

    def work(n: int) -> None:
        with api.client() as c:
            for start in range(0, per_client, batch):
                t = time.perf_counter()
                try:
                    if batch == 1:
                        api.log_point(c, runs[n], "loss", start)
                    else:
                        api.log_batch(c, runs[n], "loss", start, batch)
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t)
                    acked[0] += batch

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    with api.client() as c:
        stored = sum(api.history_len(c, r, "loss") for r in runs)
    return {
        "points_per_s": acked[0] / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors[0],
        "lost": acked[0] - stored,
    }


def search_load(api: Api, runs: int) -> dict[str, float]:
    random.seed(7)
    with api.client() as c:
        t = time.perf_counter()
        for _ in range(runs):
            params = {"depth": str(random.choice([2, 4, 6, 8])), **{f"p{j}": str(j) for j in range(9)}}
            api.create_run(c, params, auc=random.random())
        create_s = time.perf_counter() - t
        out: dict[str, float] = {"runs_per_s": runs / create_s}
        for name, filt in (("search", "metrics.auc > 0.9 and params.depth = 4"), ("list", None)):
            times = []
            for _ in range(20):
                t = time.perf_counter()
                out[f"{name}_n"] = api.search(c, filt)
                times.append(time.perf_counter() - t)
            out[f"{name}_p50_ms"] = statistics.median(times) * 1000
    return out


def serve_labvault(tmp: Path) -> tuple[subprocess.Popen[bytes], Api]:
    root = tmp / "lv"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "init"], cwd=root, env=env, check=True, capture_output=True)
    token = subprocess.run(
        [LABVAULT, "server", "token", "create", "bench", "--role", "writer"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [LABVAULT, "server", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, LabvaultApi(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"})


def serve_mlflow(tmp: Path, mlflow: Path) -> tuple[subprocess.Popen[bytes], Api]:
    root = tmp / "ml"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/health", proc)
    return proc, MlflowApi(f"http://127.0.0.1:{port}", {})


def measure(
    start: Callable[[], tuple[subprocess.Popen[bytes], Api]], clients: int, runs: int
) -> dict[str, dict[str, float]]:
    proc, api = start()
    try:
        return {
            "batch1": logging_load(api, 1, TOTAL, BATCH),
            "batchN": logging_load(api, clients, TOTAL, BATCH),
            "single": logging_load(api, 1, 1000, 1),
            "search": search_load(api, runs),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the batched load")
    parser.add_argument("--runs", type=int, default=1000, help="runs created for the search")
    opts = parser.parse_args()
    clients, runs = (2, 100) if opts.quick else (opts.clients, opts.runs)
    mlflow = ensure_mlflow()
    with tempfile.TemporaryDirectory(prefix="labvault-bench-") as tmp:
        print("labvault server ...", file=sys.stderr)
        lv = measure(lambda: serve_labvault(Path(tmp)), clients, runs)
        print("mlflow server ...", file=sys.stderr)
        ml = measure(lambda: serve_mlflow(Path(tmp), mlflow), clients, runs)
    print(f"\nlabvault server vs mlflow server, SQLite, one worker each, loopback; {TOTAL:,} points per client\n")
    print(f"{'workload':56} {'labvault':>10} {'MLflow':>10} {'ratio':>7}")
    rows = [
        (f"batches of {BATCH}, 1 client: points/s", lv["batch1"]["points_per_s"], ml["batch1"]["points_per_s"], True),
        (f"batches of {BATCH}, 1 client: p50 ms", lv["batch1"]["p50_ms"], ml["batch1"]["p50_ms"], False),
        (f"batches of {BATCH}, 1 client: p99 ms", lv["batch1"]["p99_ms"], ml["batch1"]["p99_ms"], False),
        (
            f"batches of {BATCH}, {clients} clients: points/s",
            lv["batchN"]["points_per_s"],
            ml["batchN"]["points_per_s"],
            True,
        ),
        (f"batches of {BATCH}, {clients} clients: p50 ms", lv["batchN"]["p50_ms"], ml["batchN"]["p50_ms"], False),
        (f"batches of {BATCH}, {clients} clients: p99 ms", lv["batchN"]["p99_ms"], ml["batchN"]["p99_ms"], False),
        (
            "single points (log-metric), 1 client: points/s",
            lv["single"]["points_per_s"],
            ml["single"]["points_per_s"],
            True,
        ),
        ("single points, 1 client: p99 ms", lv["single"]["p99_ms"], ml["single"]["p99_ms"], False),
        (f"runs created over HTTP (runs/s, of {runs})", lv["search"]["runs_per_s"], ml["search"]["runs_per_s"], True),
        (
            f"search, page of 50 over {runs} runs: p50 ms",
            lv["search"]["search_p50_ms"],
            ml["search"]["search_p50_ms"],
            False,
        ),
        (f"list, page of 50 over {runs} runs: p50 ms", lv["search"]["list_p50_ms"], ml["search"]["list_p50_ms"], False),
    ]
    for name, ours, theirs, higher in rows:
        ratio = ours / theirs if higher else theirs / ours
        print(f"{name:56} {ours:10.4g} {theirs:10.4g} {ratio:6.1f}x")
    for label, key in (("labvault", lv), ("MLflow", ml)):
        errs = sum(int(key[k]["errors"]) for k in ("batch1", "batchN", "single"))
        lost = sum(int(key[k]["lost"]) for k in ("batch1", "batchN", "single"))
        print(f"{label}: errors {errs}, points lost {lost}, search matched {int(key['search']['search_n'])}")
    print("\nratio: how many times better labvault is (higher throughput, or lower latency)")


if __name__ == "__main__":
    main()
