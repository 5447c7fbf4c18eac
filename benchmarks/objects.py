"""Object-store throughput: labvault puts beside ``cp ... && sync`` and ``sha256sum`` of the same data.

Workloads (the defaults are the ones issue 2 sets):

- ``big``: one 2 GiB file of random bytes, put with the real executable, ``labvault object put FILE``
  (process start-up and vault opening included, as they are in ``cp``).
- ``small``: 20,000 files of 1-8 KiB in 100 subfolders, put by the Python API in a fresh process, all
  files in one ``vault.objects.batch()`` (what ``data add`` does); start-up included.

Each put goes to a fresh, empty vault (a re-put would be a no-op). Each figure is the median of
``--runs`` runs; the order of the three commands rotates between runs. With ``--cold`` the page cache
is dropped before every timed command (needs root); otherwise the source data is warm in the cache.

Usage::

    .venv/bin/python benchmarks/objects.py                     # full size, warm cache
    .venv/bin/python benchmarks/objects.py --cold              # drop caches before each command
    .venv/bin/python benchmarks/objects.py --big-mib 256 --files 2000 --runs 3   # a quick look
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
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABVAULT = str(Path(sys.executable).parent / "labvault")
GOAL = 1.5

_PUT_TREE = """
import sys, os, time
from pathlib import Path
import labvault as lv
root = Path(sys.argv[1])
files = sorted(p for p in root.rglob("*") if p.is_file())
with lv.open() as vault, vault.objects.batch():
    for f in files:
        vault.objects.put_file(f)
"""


# Bytecode caching on, as on a user's machine (the first, untimed `labvault init` writes the caches).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _make_big(path: Path, mib: int) -> None:
    if path.exists() and path.stat().st_size == mib << 20:
        return
    rng = random.Random(2)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))


def _make_small(root: Path, count: int) -> None:
    marker = root / f".complete-{count}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(3)
    for i in range(count):
        sub = root / f"d{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    marker.touch()


def _timed(cmd: list[str] | str, *, cwd: Path, cold: bool, env: dict[str, str] | None = None) -> float:
    if cold:
        _drop_caches()
    else:
        os.sync()
    start = time.perf_counter()
    subprocess.run(
        cmd,
        cwd=cwd,
        shell=isinstance(cmd, str),
        check=True,
        stdout=subprocess.DEVNULL,
        env={**_ENV, **(env or {})},
    )
    return time.perf_counter() - start


def _fresh_vault(work: Path) -> Path:
    project = work / "vault-project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    subprocess.run([LABVAULT, "--quiet", "init"], cwd=project, check=True, env=_ENV)
    return project


def _bench(
    name: str, src: Path, work: Path, runs: int, cold: bool, put: Callable[[Path], list[str]]
) -> dict[str, float]:
    dest = work / "cp-dest"
    times: dict[str, list[float]] = {"cp + sync": [], "sha256sum": [], "labvault put": []}
    recursive = src.is_dir()
    q = f"'{src}'"
    sha_cmd = f"find {q} -type f -print0 | xargs -0 sha256sum > /dev/null" if recursive else f"sha256sum {q}"
    cp_cmd = f"cp {'-r ' if recursive else ''}{q} '{dest}' && sync"
    for i in range(runs):
        steps = ["cp", "sha", "put"]
        steps = steps[i % 3 :] + steps[: i % 3]
        for step in steps:
            if step == "cp":
                shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
                os.sync()
                times["cp + sync"].append(_timed(cp_cmd, cwd=work, cold=cold))
            elif step == "sha":
                times["sha256sum"].append(_timed(sha_cmd, cwd=work, cold=cold))
            else:
                project = _fresh_vault(work)
                times["labvault put"].append(_timed(put(project), cwd=project, cold=cold))
        print(
            f"  {name} run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
            file=sys.stderr,
        )
    shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
    shutil.rmtree(work / "vault-project", ignore_errors=True)
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"min {k}": min(v) for k, v in times.items()})
    # On a shared machine one run's `sync` may flush other people's writes: the ratio within a run,
    # where both commands met the same conditions, is steadier than a ratio of medians.
    out["paired"] = statistics.median(p / c for p, c in zip(times["labvault put"], times["cp + sync"], strict=True))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mib", type=int, default=2048, help="size of the big file in MiB (default 2048)")
    parser.add_argument("--files", type=int, default=20_000, help="number of small files (default 20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every timed command")
    parser.add_argument("--only", choices=["big", "small"], help="run one workload")
    parser.add_argument("--work", type=Path, default=HERE.parent / ".bench", help="scratch folder (default .bench)")
    args = parser.parse_args()

    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.cold and not _drop_caches():
        parser.error("--cold needs permission to write /proc/sys/vm/drop_caches")
    print(
        f"labvault object benchmarks: {os.cpu_count()} CPUs, {'cold' if args.cold else 'warm'} page cache, "
        f"median of {args.runs} runs, scratch {work}",
    )
    results: list[tuple[str, dict[str, float]]] = []
    if args.only in (None, "big"):
        big = work / f"big-{args.big_mib}MiB.bin"
        _make_big(big, args.big_mib)
        label = f"{args.big_mib} MiB file (labvault object put)"
        results.append(
            (label, _bench("big", big, work, args.runs, args.cold, lambda _p: [LABVAULT, "object", "put", str(big)]))
        )
    if args.only in (None, "small"):
        tree = work / f"small-{args.files}"
        _make_small(tree, args.files)
        label = f"{args.files} files of 1-8 KiB (Python API, one batch)"
        results.append(
            (
                label,
                _bench(
                    "small", tree, work, args.runs, args.cold, lambda _p: [sys.executable, "-c", _PUT_TREE, str(tree)]
                ),
            )
        )
    print()
    head = f"{'workload':<48} {'cp + sync':>10} {'sha256sum':>10} {'put':>10} {'put/cp':>7}"
    print(f"{head}  goal <= {GOAL}x")
    for label, t in results:
        for kind, prefix in (("median", ""), ("best", "min ")):
            cp, sha, put = t[f"{prefix}cp + sync"], t[f"{prefix}sha256sum"], t[f"{prefix}labvault put"]
            ratio = put / cp
            verdict = "met" if ratio <= GOAL else "MISSED"
            print(f"{label + f' [{kind}]':<48} {cp:>9.2f}s {sha:>9.2f}s {put:>9.2f}s {ratio:>6.2f}x  {verdict}")
        print(f"{label + ' [median of per-run ratios]':<81} {t['paired']:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
