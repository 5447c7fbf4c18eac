"""Tracking through a server from a training loop: labvault's spooled client against the loop with
logging off, and against MLflow's ``log_metric`` to an ``mlflow server``, same machine, loopback.

    python benchmarks/client_tracking.py [--points N] [--work-us W] [--mlflow-points M] [--reps R]

A "training loop" of N steps (100,000 by default) does W microseconds of CPU work per step (a
pure-Python busy loop, 200 us by default: a small model's step; calibrated once, so every variant
does the same work) and logs one metric point per step. Each variant runs in a fresh Python
process against a fresh server, R times (3), median:

- ``off``: the same loop, logging off (no run at all);
- ``labvault``: ``lv.start_run`` with ``LABVAULT_URI`` set; ``run.log_metric`` per step (spooled,
  sent in the background); the loop's wall time, then how long ``end()`` waited for the server;
  then, in the same process, a paired measure: blocks of 1,000 steps with logging on and off,
  alternated (on a machine shared with other jobs, the separate processes' times drift apart);
- ``mlflow sync``: ``mlflow.log_metric`` per step to ``mlflow server`` (one HTTP request per
  point), over M steps (5,000 by default: at milliseconds a point, 100,000 would take minutes),
  extrapolated to N;
- ``mlflow async``: ``mlflow.log_metric(..., synchronous=False)`` (MLflow's background batching),
  N steps, then the wait in ``end_run``.

Ratios are loop wall time over ``off`` (the goal for labvault: at most 1.1x). Every variant checks
that the server holds N points afterwards. MLflow is installed into ``.bench/mlflow`` when absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import clean_env, ensure_mlflow, start_labvault_server, start_mlflow_server, stop

WORK = r"""
import sys, time, json
N, ITER = int(sys.argv[1]), int(sys.argv[2])
def step():
    x = 0
    for i in range(ITER):
        x += i * i
    return x
"""


def calibrate(work_us: float) -> int:
    """Iterations of the busy loop that take ``work_us`` microseconds here (the best of 5 tries):
    measured once, so every variant does the same work."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x = 0
        for i in range(200_000):
            x += i * i
        best = min(best, (time.perf_counter() - t) / 200_000)
    return max(0, int(work_us / 1e6 / best))


OFF = (
    WORK
    + r"""
t = time.perf_counter()
for s in range(N):
    step()
    loss = 1.0 / (s + 1)
print(json.dumps({"loop": time.perf_counter() - t, "end": 0.0}))
"""
)

LABVAULT_LOOP = (
    WORK
    + r"""
import labvault as lv
run = lv.start_run(name="bench")
t = time.perf_counter()
for s in range(N):
    step()
    run.log_metric("loss", 1.0 / (s + 1))
loop = time.perf_counter() - t
t = time.perf_counter()
run.end()
out = {"loop": loop, "end": time.perf_counter() - t, "run": run.id}
# Paired: blocks of 1,000 steps with logging on and off, alternated in this one process, so that a
# machine whose load changes by the second (other jobs) weighs on both sides alike.
run = lv.start_run(name="bench-paired")
on = off = 0.0
for block in range(0, N, 1000):
    t = time.perf_counter()
    for s in range(block, min(N, block + 1000)):
        step()
        run.log_metric("loss", 1.0 / (s + 1))
    on += time.perf_counter() - t
    t = time.perf_counter()
    for s in range(block, min(N, block + 1000)):
        step()
        loss = 1.0 / (s + 1)
    off += time.perf_counter() - t
run.end()
out.update(paired_on=on, paired_off=off)
print(json.dumps(out))
"""
)

MLFLOW_LOOP = (
    WORK
    + r"""
import mlflow
synchronous = sys.argv[3] == "sync"
mlflow.set_tracking_uri(sys.argv[4])
run = mlflow.start_run(run_name="bench")
t = time.perf_counter()
for s in range(N):
    step()
    mlflow.log_metric("loss", 1.0 / (s + 1), step=s, synchronous=synchronous)
loop = time.perf_counter() - t
t = time.perf_counter()
mlflow.end_run()
print(json.dumps({"loop": loop, "end": time.perf_counter() - t, "run": run.info.run_id}))
"""
)


def run_script(python: str, code: str, args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float | str]:
    started = time.perf_counter()
    proc = subprocess.run([python, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"a benchmark loop failed:\n{proc.stderr[-3000:]}")
    out = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"  loop {out['loop']:.2f} s, end {out['end']:.2f} s, process {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return out


def count_labvault(url: str, token: str, run_id: str) -> int:
    import httpx

    r = httpx.get(f"{url}/api/v1/runs/{run_id}/history", headers={"Authorization": f"Bearer {token}"}, timeout=300)
    r.raise_for_status()
    return len(r.json().get("loss", []))


def count_mlflow(url: str, run_id: str) -> int:
    import httpx

    r = httpx.get(
        f"{url}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": "loss", "max_results": 1_000_000},
        timeout=300,
    )
    r.raise_for_status()
    return len(r.json().get("metrics", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="steps of the loop (one point each)")
    parser.add_argument("--work-us", type=float, default=200.0, help="CPU work per step, in microseconds")
    parser.add_argument("--mlflow-points", type=int, default=5_000, help="steps for MLflow's synchronous loop")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per variant (median)")
    parser.add_argument("--no-mlflow", action="store_true", help="labvault and the loop alone")
    opts = parser.parse_args()
    n, work = opts.points, opts.work_us
    iterations = str(calibrate(work))
    mlflow_python = None if opts.no_mlflow else ensure_mlflow()
    results: dict[str, list[dict[str, float | str]]] = {}
    with tempfile.TemporaryDirectory(prefix="lv-bench-client-") as tmp_name:
        tmp = Path(tmp_name)
        for rep in range(opts.reps):
            rep_dir = tmp / f"rep{rep}"
            rep_dir.mkdir()
            work_dir = rep_dir / "work"
            work_dir.mkdir()
            env = clean_env()
            print(f"rep {rep + 1}/{opts.reps}: off ...", file=sys.stderr)
            results.setdefault("off", []).append(run_script(sys.executable, OFF, [str(n), iterations], env, work_dir))

            print(f"rep {rep + 1}/{opts.reps}: labvault ...", file=sys.stderr)
            lv_root = rep_dir / "lv"
            lv_root.mkdir()
            # Each server in a session of its own: its workers and job consumers are stopped with it.
            proc, url, token = start_labvault_server(lv_root, own_session=True)
            try:
                lv_env = dict(env, LABVAULT_URI=url, LABVAULT_TOKEN=token, XDG_CACHE_HOME=str(rep_dir / "cache"))
                out = run_script(sys.executable, LABVAULT_LOOP, [str(n), iterations], lv_env, work_dir)
                got = count_labvault(url, token, str(out["run"]))
                if got != n:
                    sys.exit(f"labvault's server holds {got} points of {n}")
                results.setdefault("labvault", []).append(out)
            finally:
                stop(proc)

            if mlflow_python is not None:
                for mode, points in (("sync", opts.mlflow_points), ("async", n)):
                    print(f"rep {rep + 1}/{opts.reps}: mlflow {mode} ...", file=sys.stderr)
                    mdir = rep_dir / f"ml-{mode}"
                    mdir.mkdir()
                    proc, url = start_mlflow_server(mlflow_python, mdir, own_session=True)
                    try:
                        out = run_script(
                            str(mlflow_python), MLFLOW_LOOP, [str(points), iterations, mode, url], env, work_dir
                        )
                        got = count_mlflow(url, str(out["run"]))
                        if got != points:
                            sys.exit(f"MLflow's server holds {got} points of {points} ({mode})")
                        out["loop"] = float(out["loop"]) * n / points  # extrapolated to N steps
                        results.setdefault(f"mlflow {mode}", []).append(out)
                    finally:
                        stop(proc)

    off = statistics.median(float(r["loop"]) for r in results["off"])
    print(f"\ntraining loop of {n:,} steps, {work:g} us of work per step, one point per step; median of {opts.reps}")
    print(f"{'variant':<14}{'loop s':>10}{'ratio':>8}{'us/point':>10}{'end s':>8}")
    for name, rows in results.items():
        loop = statistics.median(float(r["loop"]) for r in rows)
        end = statistics.median(float(r["end"]) for r in rows)
        extra = (loop - off) / n * 1e6
        note = f"  (measured over {opts.mlflow_points:,} steps)" if name == "mlflow sync" else ""
        print(f"{name:<14}{loop:>10.2f}{loop / off:>7.2f}x{extra:>10.1f}{end:>8.2f}{note}")
    lv_loop = statistics.median(float(r["loop"]) for r in results["labvault"])
    paired = statistics.median(float(r["paired_on"]) / float(r["paired_off"]) for r in results["labvault"])
    per_point = statistics.median(
        (float(r["paired_on"]) - float(r["paired_off"])) / n * 1e6 for r in results["labvault"]
    )
    print(f"labvault paired (blocks of 1,000 steps on/off in one process): {paired:.3f}x, {per_point:.1f} us/point")
    for name in ("mlflow sync", "mlflow async"):
        if name in results:
            ml_loop = statistics.median(float(r["loop"]) for r in results[name])
            print(f"{name} / labvault loop time: {ml_loop / lv_loop:.2f}x")
    print(f"labvault goal: loop at most 1.1x the loop with logging off -> {lv_loop / off:.2f}x")


if __name__ == "__main__":
    main()
