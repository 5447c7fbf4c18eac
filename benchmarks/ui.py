"""Web UI benchmark: labvault's runs page against MLflow's, in Debian's Chromium driven by Playwright.

    python benchmarks/ui.py [--runs N] [--repeat K] [--row-selector CSS] [--mlflow-row-selector CSS]
                            [--metrics M] [--points P] [--chart-selector CSS]

1. Seeds a labvault vault with N runs (10,000 by default; 10 params and 5 metrics each) through the
   Python API in-process (``vault.runs.create`` / ``log_params`` / ``log_metrics`` / ``finish``, no
   capture: the page is measured, not the seeding), and beside it an MLflow tracking store (SQLite)
   with the same N runs through ``MlflowClient`` in MLflow's own virtual environment (``.bench/mlflow``,
   installed on first use as in benchmarks/server.py).
2. Starts ``labvault server --no-auth`` and ``mlflow server`` on free loopback ports.
3. In Chromium, each time in a fresh browser context (no cache, no cookies): the time from navigation
   to the first run row visible, labvault ``/runs`` (``--row-selector``) against MLflow's experiment
   page (``--mlflow-row-selector``); one warm-up navigation each, then the median of K (5).
4. A run with M metrics of P points each (10 x 100,000): the time from navigation to every chart drawn
   on ``/runs/ID`` (``--chart-selector`` matched M times), median of K; and, for comparison, the
   server's share: the page's HTML fetched over HTTP (median of K after one warm-up).

Chromium is Debian's (``apt-get install chromium``), never a downloaded one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
MLFLOW_VENV = BENCH / "mlflow"
LABVAULT = str(Path(sys.executable).parent / "labvault")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def ensure_mlflow() -> Path:
    """MLflow's Python in ``.bench/mlflow``, installed there with uv when absent."""
    python = MLFLOW_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import mlflow"], capture_output=True).returncode == 0:
        return python
    BENCH.mkdir(exist_ok=True)
    (BENCH / ".gitignore").write_text("*\n")
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("uv is needed to install MLflow into .bench/mlflow (pip install uv)")
    print("installing MLflow into .bench/mlflow ...", file=sys.stderr)
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(MLFLOW_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(python), "mlflow"], check=True)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit(f"no answer from {url} in 180 s")


def _specs(n: int) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The same N runs for both tools: 10 params and 5 metrics each."""
    rng = random.Random(7)
    return [
        (
            {"depth": str(rng.choice([2, 4, 6, 8])), "lr": f"{rng.choice([0.1, 0.03, 0.01])}"}
            | {f"p{j}": str(j) for j in range(8)},
            {"auc": rng.random(), **{f"m{j}": rng.random() for j in range(4)}},
        )
        for _ in range(n)
    ]


def seed_labvault(root: Path, runs: int, metrics: int, points: int) -> str:
    """N runs through the Python API in-process; returns the id of the run with the long histories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "init"], cwd=root, env=env, check=True, capture_output=True)
    from labvault.vault import Vault

    with Vault.open(root) as vault:
        for i, (params, values) in enumerate(_specs(runs)):
            run = vault.runs.create(project="bench", name=f"r{i}", cwd=root, capture=False)
            vault.runs.log_params(run.id, params)
            vault.runs.log_metrics(run.id, [(k, v, 0) for k, v in values.items()])
            vault.runs.finish(run.id)
        big = vault.runs.create(project="bench", name="long-histories", cwd=root, capture=False)
        for k in range(metrics):
            for start in range(0, points, 10_000):
                chunk = range(start, min(points, start + 10_000))
                vault.runs.log_metrics(big.id, [(f"metric{k}", math.sin(s / (50 + k)) + k, s) for s in chunk])
        vault.runs.finish(big.id)
    return big.id


_MLFLOW_SEED = """
import json, sys, time
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
uri, specs = sys.argv[1], json.load(open(sys.argv[2]))
client = MlflowClient(tracking_uri=uri)
now = int(time.time() * 1000)
for i, (params, values) in enumerate(specs):
    run = client.create_run("0", run_name=f"r{i}")
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in values.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id)
"""


def seed_mlflow(python: Path, root: Path, runs: int) -> str:
    """The same N runs in an MLflow SQLite store, in MLflow's own environment; returns the store URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    specs = root / "specs.json"
    specs.write_text(json.dumps(_specs(runs)))
    proc = subprocess.run(
        [str(python), "-c", _MLFLOW_SEED, uri, str(specs)], cwd=root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"seeding MLflow failed:\n{proc.stderr[-3000:]}")
    return uri


def serve_labvault(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    port = free_port()
    proc = subprocess.Popen(
        [LABVAULT, "server", "--no-auth", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/healthz", proc)
    return proc, url


def serve_mlflow(python: Path, root: Path, uri: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    mlflow = python.parent / "mlflow"
    proc = subprocess.Popen(
        [
            *(str(mlflow), "server", "--backend-store-uri", uri, "--default-artifact-root", str(root / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/health", proc)
    return proc, url


def timed_navigation(browser: Any, url: str, ready: Callable[[Any], None], repeat: int) -> list[float]:
    """Seconds from navigation to ``ready(page)`` returning, in a fresh context each time; one warm-up."""
    times: list[float] = []
    for i in range(repeat + 1):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(120_000)
        try:
            t = time.perf_counter()
            page.goto(url, wait_until="commit")
            ready(page)
            if i:  # the first is the warm-up
                times.append(time.perf_counter() - t)
                print(f"  {url}: {times[-1]:.3f} s", file=sys.stderr)
        finally:
            context.close()
    return times


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="runs seeded in each tool")
    parser.add_argument("--repeat", type=int, default=5, help="timed navigations per page (median)")
    parser.add_argument("--row-selector", default="tr[data-run]", help="a run row on labvault's /runs")
    parser.add_argument("--lv-path", default="/runs", help="labvault's runs page")
    parser.add_argument("--mlflow-row-selector", default=".ag-row.ag-row-level-0", help="a run row on MLflow's page")
    parser.add_argument("--mlflow-path", default="/#/experiments/0/runs", help="MLflow's runs page")
    parser.add_argument("--metrics", type=int, default=10, help="metrics of the run with long histories")
    parser.add_argument("--points", type=int, default=100_000, help="points per metric of that run")
    parser.add_argument("--chart-selector", default="figure.chart .chart-plot svg", help="a drawn chart")
    opts = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Debian's Chromium is needed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    python = ensure_mlflow()
    with tempfile.TemporaryDirectory(prefix="labvault-bench-ui-") as tmp:
        lv_root, ml_root = Path(tmp) / "lv", Path(tmp) / "ml"
        lv_root.mkdir()
        ml_root.mkdir()
        print(f"seeding labvault with {opts.runs:,} runs ...", file=sys.stderr)
        t = time.perf_counter()
        big = seed_labvault(lv_root, opts.runs, opts.metrics, opts.points)
        lv_seed = time.perf_counter() - t
        print(f"seeding MLflow with {opts.runs:,} runs ...", file=sys.stderr)
        t = time.perf_counter()
        uri = seed_mlflow(python, ml_root, opts.runs)
        ml_seed = time.perf_counter() - t
        lv_proc, lv_url = serve_labvault(lv_root)
        ml_proc, ml_url = serve_mlflow(python, ml_root, uri)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                try:
                    lv_rows = timed_navigation(
                        browser,
                        lv_url + opts.lv_path,
                        lambda p: p.wait_for_selector(opts.row_selector, state="visible"),
                        opts.repeat,
                    )
                    ml_rows = timed_navigation(
                        browser,
                        ml_url + opts.mlflow_path,
                        lambda p: p.wait_for_selector(opts.mlflow_row_selector, state="visible"),
                        opts.repeat,
                    )
                    charts = timed_navigation(
                        browser,
                        f"{lv_url}/runs/{big}",
                        lambda p: p.wait_for_function(
                            "([sel, n]) => document.querySelectorAll(sel).length >= n",
                            arg=[opts.chart_selector, opts.metrics],
                        ),
                        opts.repeat,
                    )
                finally:
                    browser.close()
            # The server's share of the run page: the HTML with its downsampled chart data, no drawing.
            html_times = []
            with httpx.Client(timeout=120) as client:
                for _ in range(opts.repeat + 1):
                    t = time.perf_counter()
                    client.get(f"{lv_url}/runs/{big}").raise_for_status()
                    html_times.append(time.perf_counter() - t)
        finally:
            stop(lv_proc)
            stop(ml_proc)
    lv_med, ml_med, chart_med = (statistics.median(xs) for xs in (lv_rows, ml_rows, charts))
    print(f"\nweb UI, {opts.runs:,} runs each, Debian Chromium headless; median of {opts.repeat} after a warm-up\n")
    print(f"{'page':58} {'labvault':>10} {'MLflow':>10} {'ratio':>7}")
    label = "runs list: navigation -> first run row visible (s)"
    print(f"{label:58} {lv_med:10.3f} {ml_med:10.3f} {ml_med / lv_med:6.1f}x")
    label = f"run page, {opts.metrics} metrics x {opts.points:,} points: all charts drawn (s)"
    print(f"{label:58} {chart_med:10.3f}")
    label = "  of which the server's HTML response, no drawing (s)"
    print(f"{label:58} {statistics.median(html_times[1:]):10.3f}")
    print(f"\nseeding (not compared): labvault {lv_seed:.1f} s in-process, MLflow {ml_seed:.1f} s (MlflowClient)")
    print("ratio: how many times faster labvault's page is (MLflow time / labvault time)")


if __name__ == "__main__":
    main()
