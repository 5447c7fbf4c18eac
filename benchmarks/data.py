"""Benchmark: labvault data snapshots against DVC, as whole commands on the same data.

Usage: ``.venv/bin/python benchmarks/data.py [--runs 5] [--big-gib 2] [--skip-200k]``

Creates the data under ``.bench/``, installs DVC into ``.bench/dvc-venv`` if absent (``uv venv`` +
``uv pip install dvc``), then runs, as paired runs (order alternated) and reporting medians:

- cold snapshot of 20,000 files of 1-8 KiB (``labvault data add`` vs ``dvc add``, fresh repos);
- no-op status on those files, as whole commands and in-process (the operation itself);
- re-snapshot after changing 1% of the files;
- one large file (2 GiB by default), labvault's durability (fsync) included, DVC's not;
- 200,000 files (labvault only, one run): files/s of add and status, peak memory, beside 20k.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import DVC, DVC_VENV, ensure_dvc
from _seed import make_files

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
WORK = BENCH / "work"
LABVAULT = REPO / ".venv" / "bin" / "labvault"
LV_PYTHON = REPO / ".venv" / "bin" / "python"
ENV = {**os.environ, "LABVAULT_USER": "bench@example.com", "DVC_NO_ANALYTICS": "1", "NO_COLOR": "1"}


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one whole command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_maxrss


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def change_files(root: Path, fraction: float, *, seed: int) -> None:
    files = sorted(root.rglob("*.bin"))
    rng = random.Random(seed)
    for f in rng.sample(files, int(len(files) * fraction)):
        f.write_bytes(os.urandom(rng.randint(1024, 8192)))


def make_big(path: Path, gib: float) -> None:
    block = os.urandom(64 << 20)
    with open(path, "wb") as f:
        for i in range(int(gib * 16)):
            f.write(i.to_bytes(8, "little") + block[8:])


def fresh(name: str, data: Path, tool: str) -> Path:
    project = WORK / name
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    if data.is_dir():
        shutil.copytree(data, project / data.name, symlinks=True)
    else:
        os.link(data, project / data.name) if tool == "none" else shutil.copy2(data, project / data.name)
    if tool == "dvc":
        run([str(DVC), "init", "--no-scm", "-q"], project)
        run([str(DVC), "config", "core.analytics", "false"], project)
    else:
        run([str(LABVAULT), "init", "-q"], project)
    return project


def in_process_status(project: Path, tool: str, reps: int) -> float:
    """Median seconds of the status operation itself, inside one process (after one warm-up call)."""
    if tool == "dvc":
        code = (
            "import time,statistics\nfrom dvc.repo import Repo\nr=Repo('.')\nr.status()\nts=[]\n"
            f"for _ in range({reps}):\n t=time.perf_counter(); r.status(); ts.append(time.perf_counter()-t)\n"
            "print(statistics.median(ts))"
        )
        python = DVC_VENV / "bin" / "python"
    else:
        code = (
            "import time,statistics\nfrom labvault.cli.data_status import run_status\n"
            "import labvault.cli.render as r\nr.OUTPUT.quiet=True\nrun_status(None,None,json_output=False)\nts=[]\n"
            f"for _ in range({reps}):\n t=time.perf_counter(); run_status(None,None,json_output=False); "
            "ts.append(time.perf_counter()-t)\nprint(statistics.median(ts))"
        )
        python = LV_PYTHON
    out = subprocess.run([str(python), "-c", code], cwd=project, env=ENV, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def paired(label: str, runs: int, step: dict[str, object]) -> dict[str, float]:
    """``step[tool]()`` returns seconds; tools alternate which goes first."""
    times: dict[str, list[float]] = {"labvault": [], "dvc": []}
    for i in range(runs):
        order = ["labvault", "dvc"] if i % 2 == 0 else ["dvc", "labvault"]
        for tool in order:
            times[tool].append(step[tool]())  # type: ignore[operator]
    med = {t: statistics.median(v) for t, v in times.items()}
    ratio = med["dvc"] / med["labvault"]
    print(f"{label:<44} labvault {med['labvault']:8.3f} s   dvc {med['dvc']:8.3f} s   ratio {ratio:6.1f}x", flush=True)
    return med


def bench_small(runs: int) -> None:
    data = WORK / "src20k" / "data"
    if not data.exists():
        make_files(data, 20_000)
    projects = {t: WORK / f"p20k-{t}" for t in ("labvault", "dvc")}

    def add(tool: str) -> float:
        p = fresh(f"p20k-{tool}", data, tool)
        cmd = [str(DVC), "add", "-q", "data"] if tool == "dvc" else [str(LABVAULT), "data", "add", "d", "data"]
        return timed(cmd, p)[0]

    paired("add 20,000 files (cold)", runs, {t: (lambda t=t: add(t)) for t in projects})

    def status(tool: str) -> float:
        cmd = [str(DVC), "status", "-q"] if tool == "dvc" else [str(LABVAULT), "data", "status"]
        try:
            return timed(cmd, projects[tool])[0]
        except SystemExit:  # `dvc status -q` exits 1 when something changed; nothing has
            raise

    for t in projects:  # warm both caches once, as a user's second status is
        timed([str(DVC), "status"] if t == "dvc" else [str(LABVAULT), "data", "status"], projects[t])
    paired("no-op status, 20,000 files (whole command)", runs, {t: (lambda t=t: status(t)) for t in projects})
    inproc = {t: in_process_status(projects[t], t, runs) for t in projects}
    print(
        f"{'no-op status, 20,000 files (in-process)':<44} labvault {inproc['labvault']:8.3f} s   "
        f"dvc {inproc['dvc']:8.3f} s   ratio {inproc['dvc'] / inproc['labvault']:6.1f}x",
        flush=True,
    )

    def readd(tool: str, seed: list[int]) -> float:
        seed[0] += 1
        change_files(projects[tool] / "data", 0.01, seed=seed[0])
        cmd = [str(DVC), "add", "-q", "data"] if tool == "dvc" else [str(LABVAULT), "data", "add", "d", "data"]
        return timed(cmd, projects[tool])[0]

    seeds = {"labvault": [100], "dvc": [100]}
    paired("re-add after changing 1% (200 files)", runs, {t: (lambda t=t: readd(t, seeds[t])) for t in projects})


def bench_big(runs: int, gib: float) -> None:
    src = WORK / "srcbig" / "big.bin"
    if not src.exists() or src.stat().st_size != int(gib * 16) * (64 << 20):
        src.parent.mkdir(parents=True, exist_ok=True)
        make_big(src, gib)

    def add(tool: str) -> float:
        for t in ("labvault", "dvc"):
            shutil.rmtree(WORK / f"pbig-{t}", ignore_errors=True)
        p = fresh(f"pbig-{tool}", src, tool)
        cmd = [str(DVC), "add", "-q", "big.bin"] if tool == "dvc" else [str(LABVAULT), "data", "add", "big", "big.bin"]
        return timed(cmd, p)[0]

    paired(f"add one {gib:g} GiB file (labvault fsyncs)", runs, {t: (lambda t=t: add(t)) for t in ("labvault", "dvc")})
    for t in ("labvault", "dvc"):
        shutil.rmtree(WORK / f"pbig-{t}", ignore_errors=True)


def bench_scale() -> None:
    for count in (20_000, 200_000):
        data = WORK / f"scale{count}" / "data"
        if not data.exists():
            make_files(data, count, seed=count)
        project = fresh(f"pscale{count}", data, "labvault")
        add_s, add_kib = timed([str(LABVAULT), "data", "add", "d", "data"], project)
        timed([str(LABVAULT), "data", "status"], project)
        st_s, st_kib = timed([str(LABVAULT), "data", "status"], project)
        print(
            f"{count:>7,} files: add {count / add_s:9,.0f} files/s ({add_s:6.2f} s, peak {add_kib / 1024:5.0f} MiB)   "
            f"status {count / st_s:9,.0f} files/s ({st_s:5.2f} s, peak {st_kib / 1024:5.0f} MiB)",
            flush=True,
        )
        shutil.rmtree(project, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="paired runs per figure (medians are reported)")
    parser.add_argument("--big-gib", type=float, default=2.0, help="size of the single large file")
    parser.add_argument("--big-runs", type=int, default=None, help="paired runs for the large file")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-200k", action="store_true")
    args = parser.parse_args()
    ensure_dvc()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.runs} paired runs", flush=True)
    if not args.skip_small:
        bench_small(args.runs)
    if not args.skip_big:
        bench_big(args.big_runs or args.runs, args.big_gib)
    if not args.skip_200k:
        bench_scale()
    return 0


if __name__ == "__main__":
    sys.exit(main())
