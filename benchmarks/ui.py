"""Web UI benchmark: labvault's runs page against MLflow's, in Debian's Chromium driven by Playwright.

    python benchmarks/ui.py [--runs N] [--repeat K] [--metrics M] [--points P] [--cold C]
                            [--workdir DIR] [--row-selector CSS] [--mlflow-row-selector CSS] [--chart-selector CSS]
                            [--run-page-only]

1. Seeds both tools with the same N runs (10,000 by default; 10 params and 5 metrics each), side by
   side: labvault in-process, 2,000 finished runs per transaction written as ``labvault pull`` writes
   the records it receives (seconds for 10,000); MLflow meanwhile in its own process through
   ``MlflowClient`` (``create_run``, one ``log_batch``, ``set_terminated`` per run; it has no call that
   creates many runs, and seeds about 7 runs a second here) into a SQLite tracking store, in MLflow's
   own virtual environment (``.bench/mlflow``, installed on first use by benchmarks/_harness.py).
   The seeding is not compared. ``--workdir`` keeps the seeded stores and reuses them when run again
   with the same options. labvault also gets a run with M metrics of P points each (10 x 100,000)
   through the tracking API, and C - 1 copies of it (3 in all by default).
2. Starts ``labvault server --no-auth`` and ``mlflow server`` on free loopback ports.
3. In Chromium, each time in a fresh browser context (no cache, no cookies): the time from navigation
   to the first run row visible, labvault ``/runs`` (``--row-selector``) against MLflow's experiment
   page (``--mlflow-row-selector``), the two taking turns: one warm-up round, then the median of K (5).
4. The long-histories run page: the time from navigation to every chart drawn on ``/runs/ID``
   (``--chart-selector`` matched M times), first views (each of the C runs opened once: its envelope
   read from the rows stored when it ended) and opened again (median of K: the server keeps a finished
   run's envelope); the server's share: the page's HTML fetched over HTTP (median of K after one
   warm-up); and, in-process, the envelope read from its stored rows against computed by the database
   (taking turns, median of K). A reused workdir seeded before envelopes were stored at a run's end
   gets them stored first, timed (what ending such a run now adds).
   ``--run-page-only`` skips the runs list and MLflow (no MLflow server started).

Chromium is Debian's (``apt-get install chromium``), never a downloaded one.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _harness import LABVAULT, MLFLOW_VENV, clean_env, ensure_mlflow, start_mlflow_server, start_server, stop
from _seed import insert_runs as _insert_runs
from _seed import specs as _specs

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def seed_labvault(root: Path, runs: int, metrics: int, points: int, copies: int) -> list[str]:
    """N finished runs written in batches of 2,000 per transaction, as ``labvault pull`` writes
    records it received (one multi-row insert per table); then the run with the long histories
    through the tracking API (``vault.runs.log_metrics``, 10,000 points a call), and ``copies - 1``
    more runs with the same histories (copied in SQL: first views of a page whose envelope the server
    has not computed yet). Returns the long runs' ids."""
    subprocess.run([LABVAULT, "init"], cwd=root, env=clean_env(), check=True, capture_output=True)
    import sqlalchemy as sa

    from labvault.storage.meta.tables import run_latest, run_metrics
    from labvault.vault import Vault

    _insert_runs(root, _specs(runs))
    with Vault.open(root) as vault:
        big = vault.runs.create(project="bench", name="long-histories", cwd=root, capture=False)
        for k in range(metrics):
            for first in range(0, points, 10_000):
                chunk = range(first, min(points, first + 10_000))
                vault.runs.log_metrics(big.id, [(f"metric{k}", math.sin(s / (50 + k)) + k, s) for s in chunk])
        vault.runs.finish(big.id)
        ids = [big.id]
        for n in range(1, copies):
            copy = vault.runs.create(project="bench", name=f"long-histories-{n}", cwd=root, capture=False)
            with vault.meta.transaction() as conn:
                for table in (run_metrics, run_latest):
                    cols = [c.name for c in table.c if c.name not in ("id", "run_id")]
                    source = sa.select(sa.literal(copy.id), *(table.c[c] for c in cols))
                    conn.execute(
                        sa.insert(table).from_select(["run_id", *cols], source.where(table.c.run_id == big.id))
                    )
            vault.runs.finish(copy.id)
            ids.append(copy.id)
    return ids


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


def seed_mlflow(python: Path, root: Path, runs: int) -> Callable[[], str]:
    """Start seeding the same N runs in an MLflow SQLite store, in MLflow's own environment and its own
    process (``MlflowClient``: ``create_run``, one ``log_batch`` of params and metrics, ``set_terminated``);
    the returned function waits for it and returns the store URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    specs = root / "specs.json"
    specs.write_text(json.dumps(_specs(runs)))
    log = root / "seed.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(python), "-c", _MLFLOW_SEED, uri, str(specs)], cwd=root, stdout=subprocess.DEVNULL, stderr=err
        )

    def wait() -> str:
        if proc.wait() != 0:
            sys.exit(f"seeding MLflow failed:\n{log.read_text()[-3000:]}")
        return uri

    return wait


def navigate(browser: Any, url: str, ready: Callable[[Any], None]) -> float:
    """Seconds from navigation to ``ready(page)`` returning, in a fresh context (no cache, no cookies)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        t = time.perf_counter()
        page.goto(url, wait_until="commit")
        ready(page)
        seconds = time.perf_counter() - t
    finally:
        context.close()
    print(f"  {url}: {seconds:.3f} s", file=sys.stderr)
    return seconds


def timed_navigation(browser: Any, pages: list[tuple[str, Callable[[Any], None]]], repeat: int) -> list[list[float]]:
    """Each page's times over ``repeat`` rounds after one untimed warm-up round; within a round the
    pages take turns, so that a change in the machine's load falls on all of them alike."""
    times: list[list[float]] = [[] for _ in pages]
    for i in range(repeat + 1):
        for n, (url, ready) in enumerate(pages):
            seconds = navigate(browser, url, ready)
            if i:  # the first round is the warm-up
                times[n].append(seconds)
    return times


def store_envelopes(root: Path, run_ids: list[str]) -> list[float]:
    """Store the long runs' envelopes as ending them does now (a workdir seeded before envelopes were
    stored at the end of a run has none); the seconds each run's took, [] when all were stored."""
    from labvault.services.tracking.envelopes import ENVELOPE_BUCKETS, store_run_envelope
    from labvault.storage.meta.repos.envelopes import load_envelopes
    from labvault.vault import Vault

    took = []
    with Vault.open(root) as vault:
        for run_id in run_ids:
            with vault.meta.read() as conn:
                if load_envelopes(conn, run_id, buckets=ENVELOPE_BUCKETS):
                    continue
            t = time.perf_counter()
            store_run_envelope(vault.meta, run_id)
            took.append(time.perf_counter() - t)
    return took


def envelope_cpu(root: Path, run_id: str, repeat: int) -> tuple[float, float]:
    """Median seconds of a finished run's envelope read from its stored rows (what the run page does)
    and computed by the database (what it did, and still does for a running run), taking turns."""
    from labvault.services.tracking.envelopes import ENVELOPE_BUCKETS
    from labvault.storage.meta.repos.runs import metric_envelope
    from labvault.vault import Vault

    stored, live = [], []
    with Vault.open(root) as vault:
        for _ in range(repeat + 1):
            t = time.perf_counter()
            kept = vault.runs.history_envelope(run_id, buckets=ENVELOPE_BUCKETS)
            stored.append(time.perf_counter() - t)
            t = time.perf_counter()
            with vault.meta.read() as conn:
                computed = metric_envelope(conn, run_id, buckets=ENVELOPE_BUCKETS)
            live.append(time.perf_counter() - t)
            if kept != computed:
                sys.exit(f"the stored envelope of run:{run_id} differs from the computed one")
    return statistics.median(stored[1:]), statistics.median(live[1:])


def _seeded(workdir: Path, opts: argparse.Namespace, python: Path) -> tuple[Path, Path, list[str], str]:
    """Both tools' stores under ``workdir``, seeded at the same time (MLflow in its own process while
    labvault seeds here), or reused when ``workdir`` holds stores seeded with the same options."""
    lv_root, ml_root = workdir / "lv", workdir / "ml"
    marker = workdir / "seeded.json"
    wanted = {"runs": opts.runs, "metrics": opts.metrics, "points": opts.points, "copies": opts.cold}
    if marker.exists():
        done = json.loads(marker.read_text())
        if done["options"] == wanted:
            print(f"reusing the stores seeded in {workdir}", file=sys.stderr)
            return lv_root, ml_root, done["long_runs"], done["mlflow_uri"]
    for root in (lv_root, ml_root):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    print(f"seeding labvault and MLflow with {opts.runs:,} runs each, side by side ...", file=sys.stderr)
    t = time.perf_counter()
    mlflow_seed = seed_mlflow(python, ml_root, opts.runs)
    long_runs = seed_labvault(lv_root, opts.runs, opts.metrics, opts.points, opts.cold)
    print(f"  labvault: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    uri = mlflow_seed()
    print(f"  MLflow: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    marker.write_text(json.dumps({"options": wanted, "long_runs": long_runs, "mlflow_uri": uri}))
    return lv_root, ml_root, long_runs, uri


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
    parser.add_argument("--cold", type=int, default=3, help="runs with those histories, each opened once cold")
    parser.add_argument("--chart-selector", default="figure.chart .chart-plot svg", help="a drawn chart")
    parser.add_argument("--workdir", type=Path, help="keep the seeded stores here and reuse them next time")
    parser.add_argument(
        "--run-page-only", action="store_true", help="time the run page only (no runs list, no MLflow server)"
    )
    opts = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Debian's Chromium is needed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    python = MLFLOW_VENV / "bin" / "python" if opts.run_page_only else ensure_mlflow()
    with tempfile.TemporaryDirectory(prefix="labvault-bench-ui-") as tmp:
        workdir = opts.workdir.resolve() if opts.workdir else Path(tmp)
        lv_root, ml_root, long_runs, uri = _seeded(workdir, opts, python)
        end_costs = store_envelopes(lv_root, long_runs)
        stored_cpu, live_cpu = envelope_cpu(lv_root, long_runs[0], opts.repeat)
        lv_proc, lv_url = start_server(
            [LABVAULT, "server", "--no-auth"], health="/healthz", cwd=lv_root, env=clean_env(), limit=180
        )
        ml_proc, ml_url = (
            (None, "") if opts.run_page_only else start_mlflow_server(python, ml_root, store=uri, limit=180)
        )

        def all_drawn(page: Any) -> None:
            page.wait_for_function(
                "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[opts.chart_selector, opts.metrics]
            )

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                try:
                    lv_rows, ml_rows = [math.nan], [math.nan]
                    if not opts.run_page_only:
                        lv_rows, ml_rows = timed_navigation(
                            browser,
                            [
                                (
                                    lv_url + opts.lv_path,
                                    lambda p: p.wait_for_selector(opts.row_selector, state="visible"),
                                ),
                                (
                                    ml_url + opts.mlflow_path,
                                    lambda p: p.wait_for_selector(opts.mlflow_row_selector, state="visible"),
                                ),
                            ],
                            opts.repeat,
                        )
                    # First views: each long run opened once, its envelope read from the rows stored at its end.
                    cold = [navigate(browser, f"{lv_url}/runs/{run}", all_drawn) for run in long_runs]
                    (charts,) = timed_navigation(browser, [(f"{lv_url}/runs/{long_runs[0]}", all_drawn)], opts.repeat)
                finally:
                    browser.close()
            # The server's share of the run page: the HTML with its downsampled chart data, no drawing.
            html_times = []
            with httpx.Client(timeout=120) as client:
                for _ in range(opts.repeat + 1):
                    t = time.perf_counter()
                    client.get(f"{lv_url}/runs/{long_runs[0]}").raise_for_status()
                    html_times.append(time.perf_counter() - t)
        finally:
            stop(lv_proc)
            if ml_proc is not None:
                stop(ml_proc)
    lv_med, ml_med, chart_med = (statistics.median(xs) for xs in (lv_rows, ml_rows, charts))
    print(
        f"\nweb UI, {opts.runs:,} runs each, Debian Chromium headless; median of {opts.repeat} after a warm-up;"
        " labvault and MLflow take turns\n"
    )
    print(f"{'page':62} {'labvault':>10} {'MLflow':>10} {'ratio':>7}")
    label = "runs list: navigation -> first run row visible (s)"
    if not opts.run_page_only:
        print(f"{label:62} {lv_med:10.3f} {ml_med:10.3f} {ml_med / lv_med:6.1f}x")
    label = f"run page, {opts.metrics} metrics x {opts.points:,} points: all charts drawn (s)"
    print(label)
    label = f"  first view, envelope stored when the run ended (median of {len(cold)})"
    print(f"{label:62} {statistics.median(cold):10.3f}")
    label = "  opened again, the finished run's envelope kept by the server"
    print(f"{label:62} {chart_med:10.3f}")
    label = "  of which the server's HTML response, no drawing (s)"
    print(f"{label:62} {statistics.median(html_times[1:]):10.3f}")
    label = "  envelope CPU in-process: stored rows read (s)"
    print(f"{label:62} {stored_cpu:10.3f}")
    label = "  envelope CPU in-process: computed by the database (s)"
    print(f"{label:62} {live_cpu:10.3f} {'':>10} {live_cpu / stored_cpu:6.1f}x")
    if end_costs:
        label = f"  storing it, as a run's end now does (median of {len(end_costs)}) (s)"
        print(f"{label:62} {statistics.median(end_costs):10.3f}")
    print("ratio: how many times faster labvault's page is (MLflow time / labvault time)")


if __name__ == "__main__":
    main()
