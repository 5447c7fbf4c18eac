"""Benchmark: DVC import and the Dask executor, beside DVC on the same pipelines.

Usage: ``.venv/bin/python benchmarks/pipeline_dask.py [--runs 3] [--matrix 1000] [--chain 30] [--wide 8]``

Installs DVC into ``.bench/dvc-venv`` if absent, starts a Dask scheduler and two workers (4 threads
each) on loopback, and runs, as paired whole commands (medians):

- templating: a ``dvc.yaml`` whose ``matrix`` makes ``--matrix`` stages: ``labvault pipeline import
  --dry-run --expand`` vs ``dvc stage list`` (both read, template and expand the same file);
- fan-out: ``--wide`` independent stages that each sleep 1 s: every stage through the Dask executor
  (a whole Python process: connect, submit, wait) vs ``dvc repro`` (DVC runs stages one at a time);
- chain: ``--chain`` stages, each reading the previous one's output file: per-stage overhead of a
  Dask round trip (deps from the object store, outputs back) vs ``dvc repro``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import DVC, ensure_dvc, stop

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
WORK = BENCH / "pipedask"
BIN = REPO / ".venv" / "bin"
ENV = {
    **os.environ,
    "LABVAULT_USER": "bench@example.com",
    "DVC_NO_ANALYTICS": "1",
    "NO_COLOR": "1",
    "PATH": f"{BIN}:{os.environ['PATH']}",
}


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def fresh(name: str, dvc_yaml: str, files: dict[str, str]) -> Path:
    project = WORK / name
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    (project / "dvc.yaml").write_text(dvc_yaml)
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=project, env=ENV, check=True)
    subprocess.run([str(BIN / "labvault"), "init", "-q"], cwd=project, env=ENV, check=True)
    return project


def paired(
    runs: int, a: tuple[list[str], Path], b: tuple[list[str], Path], reset: object = None
) -> tuple[float, float]:
    ta, tb = [], []
    for i in range(runs):
        order = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for (cmd, cwd), sink in order:
            if callable(reset):
                reset()
            sink.append(timed(cmd, cwd))
    return statistics.median(ta), statistics.median(tb)


def report(name: str, lv: float, dvc: float) -> None:
    print(f"{name:<44} labvault {lv:8.3f} s   dvc {dvc:8.3f} s   labvault/dvc {lv / dvc:6.3f}x", flush=True)


# -- the Dask side: one whole process per measurement --------------------------------------------
DASK_DRIVER = r"""
import json, sys
from pathlib import Path
from labvault.vault import Vault
from labvault.services.pipelines.dask_executor import DaskExecutor
from labvault.services.pipelines.executor import StageJob
from labvault.storage.objects.location import location_of

address, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
vault = Vault.open()
with DaskExecutor(address, location_of(vault.objects)) as ex:
    if mode == "wide":
        futures = [ex.submit(StageJob(f"s{i}", f"sleep 1; echo {i} > out{i}.txt", ".", {}, (f"out{i}.txt",)))
                   for i in range(n)]
        outcomes = [f.result() for f in futures]
    else:
        with vault.objects.batch():
            dep = str(vault.objects.put_file(Path("seed.txt")))
        outcomes = []
        prev = ("seed.txt", dep)
        for i in range(n):
            o = ex.submit(StageJob(f"c{i}", f"cat {prev[0]} > c{i}.txt; echo {i} >> c{i}.txt", ".",
                                   {prev[0]: prev[1]}, (f"c{i}.txt",))).result()
            outcomes.append(o)
            prev = (f"c{i}.txt", o.outs[f"c{i}.txt"])
assert all(o.returncode == 0 for o in outcomes), [o.log for o in outcomes if o.returncode]
vault.close()
"""


def start_cluster() -> tuple[str, list[subprocess.Popen[bytes]]]:
    folder = WORK / "cluster"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    info = folder / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(info),
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    while not info.exists() or not info.read_text().strip():
        time.sleep(0.1)
    time.sleep(0.2)
    address = json.loads(info.read_text())["address"]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "4",
                    "--no-nanny",
                    "--dashboard-address",
                    ":0",
                    "--name",
                    f"w{i}",
                ],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    return "dask://" + address.removeprefix("tcp://"), procs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--matrix", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=30)
    parser.add_argument("--wide", type=int, default=8)
    args = parser.parse_args()
    ensure_dvc()
    WORK.mkdir(parents=True, exist_ok=True)
    print(
        f"sizes: matrix {args.matrix} stages, fan-out {args.wide} x sleep 1 s, chain {args.chain}; "
        f"{args.runs} paired runs, medians; Dask: 2 workers x 4 threads on loopback",
        flush=True,
    )

    # 1. templating
    a = max(1, args.matrix // 25)
    matrix_yaml = (
        "vars: [{models: [" + ", ".join(f"m{i}" for i in range(a)) + "]}]\nstages:\n  ev:\n"
        '    matrix: {model: "${models}", split: [' + ", ".join(f"s{i}" for i in range(args.matrix // a)) + "]}\n"
        "    cmd: python eval.py ${item.model} ${item.split} ${train.lr}\n"
        "    deps: [eval.py, 'data/${item.split}.csv']\n    params: [train.lr]\n"
        "    outs: ['out/${item.model}/${item.split}.json']\n"
    )
    proj = fresh("templating", matrix_yaml, {"params.yaml": "train: {lr: 0.1}\n"})
    lv, dv = paired(
        args.runs,
        ([str(BIN / "labvault"), "pipeline", "import", "--dry-run", "--expand", "-q"], proj),
        ([str(DVC), "stage", "list"], proj),
    )
    report(f"import/list {a * (args.matrix // a)} matrix stages", lv, dv)

    address, procs = start_cluster()
    try:
        # 2. fan-out
        wide_yaml = "stages:\n" + "".join(
            f"  s{i}:\n    cmd: sleep 1; echo {i} > out{i}.txt\n    outs: [out{i}.txt]\n" for i in range(args.wide)
        )
        proj = fresh("wide", wide_yaml, {})
        driver = WORK / "driver.py"
        driver.write_text(DASK_DRIVER)

        def reset_wide() -> None:
            for i in range(args.wide):
                (proj / f"out{i}.txt").unlink(missing_ok=True)
            subprocess.run([str(DVC), "gc", "-w", "-f", "-q"], cwd=proj, env=ENV, check=False, capture_output=True)
            shutil.rmtree(proj / ".dvc" / "cache", ignore_errors=True)
            (proj / "dvc.lock").unlink(missing_ok=True)

        lv, dv = paired(
            args.runs,
            ([str(BIN / "python"), str(driver), address, "wide", str(args.wide)], proj),
            ([str(DVC), "repro", "-q"], proj),
            reset=reset_wide,
        )
        report(f"fan-out {args.wide} x sleep 1 s", lv, dv)

        # 3. chain
        chain_yaml = "stages:\n" + "".join(
            f"  c{i}:\n    cmd: cat {'seed.txt' if i == 0 else f'c{i - 1}.txt'} > c{i}.txt; echo {i} >> c{i}.txt\n"
            f"    deps: [{'seed.txt' if i == 0 else f'c{i - 1}.txt'}]\n    outs: [c{i}.txt]\n"
            for i in range(args.chain)
        )
        proj = fresh("chain", chain_yaml, {"seed.txt": "seed\n"})

        def reset_chain() -> None:
            for i in range(args.chain):
                (proj / f"c{i}.txt").unlink(missing_ok=True)
            shutil.rmtree(proj / ".dvc" / "cache", ignore_errors=True)
            (proj / "dvc.lock").unlink(missing_ok=True)

        lv, dv = paired(
            args.runs,
            ([str(BIN / "python"), str(driver), address, "chain", str(args.chain)], proj),
            ([str(DVC), "repro", "-q"], proj),
            reset=reset_chain,
        )
        report(f"chain of {args.chain} stages", lv, dv)
        print(f"{'':<44} per stage: labvault {lv / args.chain * 1000:6.1f} ms   dvc {dv / args.chain * 1000:6.1f} ms")
    finally:
        for proc in reversed(procs):
            stop(proc, timeout=5)


if __name__ == "__main__":
    sys.exit(main())
