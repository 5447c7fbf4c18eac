"""Server benchmark: labvault's server against ``mlflow server``, same machine, same HTTP client.

    python benchmarks/server.py [--quick] [--seconds S] [--clients N] [--runs N] [--artifact-mib M]
                                [--artifact-rounds R] [--artifact-compose]
                                [--workers W] [--pg URL]

MLflow is installed into its own virtual environment under ``.bench/mlflow`` when absent
(benchmarks/_harness.py). Each server is started on a free loopback port with ``--workers W`` worker
processes (the same for both); the clients are threads of this process (httpx, one connection each).

1. N concurrent clients (50 by default) logging for S seconds (60 by default), each to its own run:
   single points against MLflow's ``runs/log-metric``, then batches of 100 against ``runs/log-batch``;
   SQLite for both, then PostgreSQL for labvault (a fresh schema in ``--pg``);
2. search over R runs (100,000 by default) through the API, ``metrics.auc > 0.9 and params.depth = 4``,
   a page of 50 (p50 and p95 of 20 requests): H runs (``--http-runs``, 5,000 by default) are created
   through each API by 8 clients (the runs/s figure); labvault then gets the other R - H runs written
   in bulk through its metadata store (benchmarks/_seed.py, 2,000 finished runs per transaction), while
   MLflow, which creates runs too slowly for 100,000, is searched over its H runs (labelled as such);
3. a M MiB artifact (2048 by default) uploaded through labvault's API (one upload session: pieces
   of 256 MiB in order, then commit) and downloaded as the labvault client downloads (it hashes what
   arrives, and tells the server it need not hash it too), sha256 verified both ways, each paired
   with a local ``cp`` of the same file in the same round.

Every figure is points/s or a latency (p50, p99 of the requests); errors and points lost are counted
(a point is lost when the stored history is shorter than what was acknowledged).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _harness import ensure_mlflow, percentile, start_labvault_server, start_mlflow_server, stop
from _seed import insert_runs, specs

from labvault.client.settings import ServerTarget
from labvault.client.transport import CLIENT_VERIFIES, Transport

BATCH = 100


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
    def __init__(self, base: str, token: str, root: Path) -> None:
        super().__init__(base, {"Authorization": f"Bearer {token}"})
        self.token, self.root = token, root

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


def logging_load(api: Api, clients: int, seconds: float, batch: int) -> dict[str, float]:
    """``clients`` threads, each logging to its own run for ``seconds``, in requests of ``batch`` points."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    acked = [0] * clients
    with api.client() as c:
        runs = [api.create_run(c, {"kind": "load"}) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def work(n: int) -> None:
        with api.client() as c:
            step = 0
            start.wait()
            while time.perf_counter() < deadline[0]:
                t = time.perf_counter()
                try:
                    if batch == 1:
                        api.log_point(c, runs[n], "loss", step)
                    else:
                        api.log_batch(c, runs[n], "loss", step, batch)
                except httpx.HTTPError:
                    errors[n] += 1
                    continue
                finally:
                    step += batch
                latencies[n].append(time.perf_counter() - t)
                acked[n] += batch

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    with api.client() as c:
        stored = sum(api.history_len(c, r, "loss") for r in runs)
    flat = [x for xs in latencies for x in xs]
    return {
        "points_per_s": sum(acked) / elapsed,
        "p50_ms": percentile(flat, 0.5) * 1000,
        "p99_ms": percentile(flat, 0.99) * 1000,
        "errors": sum(errors),
        "lost": sum(acked) - stored,
    }


def search_load(api: Api, runs: int, http_runs: int, seeders: int = 8) -> dict[str, float]:
    """``http_runs`` runs created through the API (runs/s); labvault's other ``runs - http_runs`` written
    in bulk through its metadata store; then the search and a plain listing, a page of 50 each."""
    rng = random.Random(7)
    through_api = [(str(rng.choice([2, 4, 6, 8])), rng.random()) for _ in range(min(runs, http_runs))]

    def seed(part: int) -> None:
        with api.client() as c:
            for depth, auc in through_api[part::seeders]:
                api.create_run(c, {"depth": depth, **{f"p{j}": str(j) for j in range(9)}}, auc=auc)

    t = time.perf_counter()
    threads = [threading.Thread(target=seed, args=(n,)) for n in range(seeders)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out: dict[str, float] = {"runs_per_s": len(through_api) / (time.perf_counter() - t), "runs": len(through_api)}
    if isinstance(api, LabvaultApi) and runs > len(through_api):
        t = time.perf_counter()
        insert_runs(api.root, specs(runs - len(through_api)))
        out["bulk_runs_per_s"] = (runs - len(through_api)) / (time.perf_counter() - t)
        out["runs"] = runs
    with api.client() as c:
        for name, filt in (("search", "metrics.auc > 0.9 and params.depth = 4"), ("list", None)):
            api.search(c, filt)  # warm-up
            times = []
            for _ in range(20):
                t = time.perf_counter()
                out[f"{name}_n"] = api.search(c, filt)
                times.append(time.perf_counter() - t)
            out[f"{name}_p50_ms"] = statistics.median(times) * 1000
            out[f"{name}_p95_ms"] = percentile(times, 0.95) * 1000
    return out


CHUNK = 256 << 20


def artifact_load(api: LabvaultApi, tmp: Path, mib: int, rounds: int = 3, compose: bool = False) -> dict[str, float]:
    """Upload (one session: pieces in order, then commit) and download a ``mib`` MiB file, sha256 both
    ways; and ``cp``. A round is a ``cp`` then an upload, back to back; the upload's ratio to ``cp`` is
    the median over ``rounds`` rounds (the stored object is removed between rounds, so that each
    round stores it anew), so that a burst of load on a shared machine does not decide it. With
    ``compose``, each round also times the older clients' protocol (chunks, then compose)."""
    src = tmp / "artifact.bin"
    whole = hashlib.sha256()
    with src.open("wb") as f:
        block = os.urandom(16 << 20)
        for offset in range(0, mib << 20, len(block)):
            piece = block[: min(len(block), (mib << 20) - offset)]
            piece = offset.to_bytes(8, "big") + piece[8:]  # no two blocks alike
            f.write(piece)
            whole.update(piece)
    size = src.stat().st_size
    digest = whole.hexdigest()
    stored = api.root / ".labvault" / "objects" / "sha256" / digest[:2] / digest[2:]
    subprocess.run(["sync"], check=False)

    def body(offset: int, n: int) -> Any:
        with src.open("rb") as f:
            f.seek(offset)
            left = n
            while left:
                data = f.read(min(8 << 20, left))
                left -= len(data)
                yield data

    def copy() -> float:
        t = time.perf_counter()
        subprocess.run(["cp", str(src), str(tmp / "artifact.copy")], check=True)
        subprocess.run(["sync"], check=False)
        took = time.perf_counter() - t
        (tmp / "artifact.copy").unlink()
        return took

    def upload() -> float:
        t = time.perf_counter()
        with api.client() as c:
            # One upload session: the pieces in order, each written at its offset into one temp file
            # that the commit verifies, makes durable and renames into place.
            r = c.post(f"/api/v1/objects/sha256:{digest}/uploads", json={"size": size})
            r.raise_for_status()
            session = r.json()["upload"]
            for offset in range(0, size, CHUNK):
                n = min(CHUNK, size - offset)
                r = c.put(
                    f"/api/v1/objects/uploads/{session}",
                    params={"offset": offset},
                    content=body(offset, n),
                    headers={"content-length": str(n)},
                )
                r.raise_for_status()
            r = c.post(f"/api/v1/objects/uploads/{session}/commit")
            r.raise_for_status()
            if r.status_code != 201:
                sys.exit("the artifact was stored already: the round measured no write")
        return time.perf_counter() - t

    def composed() -> float:
        """The protocol of older clients: chunks (each an object), 4 at a time, then compose."""
        spans = [(o, min(CHUNK, size - o)) for o in range(0, size, CHUNK)]
        names: list[str] = []
        for offset, n in spans:
            h = hashlib.sha256()
            for data in body(offset, n):
                h.update(data)
            names.append(f"sha256:{h.hexdigest()}")

        def put(pair: tuple[tuple[int, int], str]) -> None:
            (offset, n), name = pair
            with api.client() as c:
                c.put(f"/api/v1/objects/{name}", content=body(offset, n), headers={"content-length": str(n)})

        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, zip(spans, names, strict=True)))
        with api.client() as c:
            c.post(f"/api/v1/objects/sha256:{digest}/compose", json={"chunks": names}).raise_for_status()
        took = time.perf_counter() - t
        for name in names:  # the chunks go, so that the next round stores them anew
            hexd = name.removeprefix("sha256:")
            (stored.parent.parent / hexd[:2] / hexd[2:]).unlink(missing_ok=True)
        return took

    def download() -> float:
        """As the labvault client downloads: hashed here as it arrives, so not hashed by the server too."""
        t = time.perf_counter()
        got = hashlib.sha256()
        with (
            Transport(ServerTarget(api.base, api.token)) as client,
            client.stream("GET", f"/objects/sha256:{digest}", headers=CLIENT_VERIFIES) as r,
        ):
            for data in r.iter_bytes():
                got.update(data)
        took = time.perf_counter() - t
        if got.hexdigest() != digest:
            sys.exit("the downloaded artifact does not hash to what was uploaded")
        return took

    cp_times: list[float] = []
    up_times: list[float] = []
    down_times: list[float] = []
    old_times: list[float] = []
    for i in range(rounds):
        if i:
            stored.unlink(missing_ok=True)
            subprocess.run(["sync"], check=False)
        cp_times.append(copy())
        line = f"  round {i + 1}: cp {size / 1e6 / cp_times[-1]:.0f} MB/s"
        if compose:
            old_times.append(composed())
            stored.unlink(missing_ok=True)
            subprocess.run(["sync"], check=False)
            line += f", chunks + compose {size / 1e6 / old_times[-1]:.0f} MB/s ({cp_times[-1] / old_times[-1]:.2f}x)"
        up_times.append(upload())
        line += f", upload session {size / 1e6 / up_times[-1]:.0f} MB/s ({cp_times[-1] / up_times[-1]:.2f}x)"
        down_times.append(download())
        line += f", download {size / 1e6 / down_times[-1]:.0f} MB/s ({cp_times[-1] / down_times[-1]:.2f}x)"
        print(f"{line}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)

    src.unlink()
    mb = size / 1e6
    cp_s, up_s = statistics.median(cp_times), statistics.median(up_times)
    return {
        "cp_mb_s": mb / cp_s,
        "up_mb_s": mb / up_s,
        "up_ratio": statistics.median(c / u for c, u in zip(cp_times, up_times, strict=True)),
        "down_mb_s": mb / statistics.median(down_times),
        "down_ratio": statistics.median(c / d for c, d in zip(cp_times, down_times, strict=True)),
        "mib": mib,
        "rounds": rounds,
        **(
            {"old_ratio": statistics.median(c / o for c, o in zip(cp_times, old_times, strict=True))}
            if old_times
            else {}
        ),
    }


def serve_labvault(tmp: Path, workers: int, db: str | None = None) -> tuple[subprocess.Popen[bytes], Api]:
    root = tmp / ("lv-pg" if db else "lv")
    root.mkdir()
    proc, url, token = start_labvault_server(root, db=db, workers=workers)
    return proc, LabvaultApi(url, token, root)


def serve_mlflow(tmp: Path, python: Path, workers: int) -> tuple[subprocess.Popen[bytes], Api]:
    root = tmp / "ml"
    root.mkdir()
    proc, url = start_mlflow_server(python, root, workers=workers)
    return proc, MlflowApi(url, {})


@contextlib.contextmanager
def pg_schema(admin_url: str) -> Iterator[str]:
    """A fresh schema in ``admin_url``'s database, dropped afterwards; the URL that uses it."""
    import sqlalchemy as sa

    schema = f"lv_bench_{secrets.token_hex(6)}"
    engine = sa.create_engine("postgresql+psycopg://" + admin_url.split("://", 1)[1])
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in admin_url else "?"
    try:
        yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


def measure(
    start: Callable[[], tuple[subprocess.Popen[bytes], Api]],
    opts: argparse.Namespace,
    artifact: Path | None = None,
    runs: int | None = None,
) -> dict[str, dict[str, float]]:
    proc, api = start()
    try:
        out: dict[str, dict[str, float]] = {}
        if "single" in opts.only:
            out["single"] = logging_load(api, opts.clients, opts.seconds, 1)
        if "batch" in opts.only:
            out["batch"] = logging_load(api, opts.clients, opts.seconds, BATCH)
        if "search" in opts.only:
            out["search"] = search_load(api, runs or opts.runs, opts.http_runs)
        if artifact is not None and "artifact" in opts.only and isinstance(api, LabvaultApi):
            out["artifact"] = artifact_load(
                api, artifact, opts.artifact_mib, opts.artifact_rounds, opts.artifact_compose
            )
        return out
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients log, per workload")
    parser.add_argument("--clients", type=int, default=50, help="concurrent logging clients")
    parser.add_argument("--runs", type=int, default=100_000, help="runs created for the search")
    parser.add_argument("--http-runs", type=int, default=5000, help="runs created through each API (the rest: bulk)")
    parser.add_argument("--mlflow-runs", type=int, default=None, help="runs for MLflow's search (default: --http-runs)")
    parser.add_argument(
        "--only",
        default="single,batch,search,artifact",
        type=lambda text: set(text.split(",")),
        help="comma-separated workloads to run (single, batch, search, artifact; default: all)",
    )
    parser.add_argument("--artifact-mib", type=int, default=2048, help="size of the uploaded artifact (0: skip)")
    parser.add_argument(
        "--artifact-rounds", type=int, default=3, help="cp + upload rounds (the median ratio is reported)"
    )
    parser.add_argument(
        "--artifact-compose", action="store_true", help="also time chunks + compose (older clients) in each round"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each server")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL ('' to skip)")
    opts = parser.parse_args()
    if opts.quick:
        opts.seconds, opts.clients, opts.runs, opts.http_runs, opts.artifact_mib = 3, 4, 400, 200, 64
    opts.mlflow_runs = opts.mlflow_runs or min(opts.runs, opts.http_runs)
    mlflow = ensure_mlflow()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="labvault-bench-") as tmp:
        base = Path(tmp)
        print("labvault server, SQLite ...", file=sys.stderr)
        results["lv"] = measure(lambda: serve_labvault(base, opts.workers), opts, base if opts.artifact_mib else None)
        print("mlflow server, SQLite ...", file=sys.stderr)
        results["ml"] = measure(lambda: serve_mlflow(base, mlflow, opts.workers), opts, None, opts.mlflow_runs)
        if opts.pg:
            print("labvault server, PostgreSQL ...", file=sys.stderr)
            with pg_schema(opts.pg) as url:
                results["pg"] = measure(lambda: serve_labvault(base, opts.workers, url), opts)
    report(results, opts)


def report(results: dict[str, dict[str, dict[str, float]]], opts: argparse.Namespace) -> None:
    lv, ml, pg = results["lv"], results["ml"], results.get("pg")
    print(
        f"\nlabvault server vs mlflow server, loopback, {opts.workers} worker(s) each; "
        f"{opts.clients} clients logging for {opts.seconds:g} s per workload; search over {opts.runs:,} runs "
        f"({opts.mlflow_runs or opts.runs:,} for MLflow)\n"
    )
    print(
        f"{'workload':52} {'labvault':>10} {'MLflow':>10} {'ratio':>7}" + (f" {'lv PG':>10} {'ratio':>7}" if pg else "")
    )
    rows: list[tuple[str, str, str, bool]] = []
    for kind, label in (("single", "single points vs log-metric"), ("batch", f"batches of {BATCH} vs log-batch")):
        rows += [
            (f"{label}: points/s", kind, "points_per_s", True),
            (f"{label}: p50 ms", kind, "p50_ms", False),
            (f"{label}: p99 ms", kind, "p99_ms", False),
        ]
    rows += [
        ("runs created over HTTP, 8 clients: runs/s", "search", "runs_per_s", True),
        ("search (auc > 0.9 and depth = 4), page of 50: p50 ms", "search", "search_p50_ms", False),
        ("search (auc > 0.9 and depth = 4), page of 50: p95 ms", "search", "search_p95_ms", False),
        ("list, page of 50: p50 ms", "search", "list_p50_ms", False),
    ]

    def ratio(ours: float, theirs: float, higher: bool) -> float:
        return ours / theirs if higher else theirs / ours

    for name, kind, key, higher in rows:
        if kind not in lv:
            continue
        ours, theirs = lv[kind][key], ml[kind][key]
        line = f"{name:52} {ours:10.4g} {theirs:10.4g} {ratio(ours, theirs, higher):6.1f}x"
        if pg:
            line += f" {pg[kind][key]:10.4g} {ratio(pg[kind][key], theirs, higher):6.1f}x"
        print(line)
    if "search" in lv:
        print(
            f"(the search: labvault over {int(lv['search']['runs']):,} runs, "
            f"MLflow over {int(ml['search']['runs']):,}: "
            "the ratio compares different sizes; labvault's bulk seeding "
            f"{lv['search'].get('bulk_runs_per_s', 0):,.0f} runs/s)"
        )
    for label, res in (("labvault SQLite", lv), ("MLflow SQLite", ml), ("labvault PostgreSQL", pg)):
        if res:
            errs = sum(int(res[k]["errors"]) for k in ("single", "batch") if k in res)
            lost = sum(int(res[k]["lost"]) for k in ("single", "batch") if k in res)
            matched = int(res["search"]["search_n"]) if "search" in res else 0
            print(f"{label}: errors {errs}, points lost {lost}, search matched {matched}")
    if "artifact" in lv:
        a = lv["artifact"]
        print(
            f"\nartifact of {int(a['mib'])} MiB, sha256 verified: upload {a['up_mb_s']:.0f} MB/s "
            f"({a['up_ratio']:.2f}x cp, median of {int(a['rounds'])} paired rounds), "
            + (f"chunks + compose {a['old_ratio']:.2f}x cp; " if "old_ratio" in a else "")
            + f"download {a['down_mb_s']:.0f} MB/s ({a['down_ratio']:.2f}x cp, paired as well); "
            f"local cp {a['cp_mb_s']:.0f} MB/s"
        )
    print("\nratio: how many times better labvault is (higher throughput, or lower latency)")


if __name__ == "__main__":
    main()
