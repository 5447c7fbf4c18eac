"""Reproduce: the overhead of ``labvault reproduce`` around the rerun command, and a first rebuild
beside plain uv.

- Overhead = the wall time of ``labvault reproduce`` (the executable, start-up included) minus the
  rerun command's own wall time, for a run with a 20 MB input snapshot: ``--env current`` (goal at
  most 0.5 s) and ``--env rebuild`` with the environment cached (goal at most 1 s).
- A first rebuild of the recorded environment (this venv's packages; the build time the report
  gives) beside ``uv venv && uv pip install --no-deps -r requirements.txt`` of the same pins plus
  labvault, both with uv's cache warm (goal: at most 1.2x).

    .venv/bin/python benchmarks/reproduce.py            # medians of 5
    .venv/bin/python benchmarks/reproduce.py --quick    # one of each, a 1 MB input: checks the script
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

ROOT = Path(__file__).resolve().parent.parent
LABVAULT = str(Path(sys.executable).parent / "labvault")
JOB = """\
import hashlib
open("out.txt", "w").write(hashlib.sha256(open("data/big.bin", "rb").read()).hexdigest())
"""


def _sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _project(root: Path, size: int) -> str:
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "b@example.com"],
        ["git", "config", "user.name", "b"],
    ):
        _sh(args, root)
    _sh([LABVAULT, "init"], root)
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(os.urandom(size))
    (root / "job.py").write_text(JOB)
    _sh([LABVAULT, "data", "add", "big", "data/big.bin"], root)
    _sh(["git", "add", "-A"], root)
    _sh(["git", "commit", "-qm", "bench"], root)
    out = _sh([LABVAULT, "run", "--input", "data:big", "--output", "out.txt", "--", sys.executable, "job.py"], root)
    return out.stderr.split("run:")[1].split()[0]


def _reproduce(root: Path, run_id: str, env: str) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    out = _sh([LABVAULT, "reproduce", run_id, "--env", env, "--json"], root)
    wall = time.perf_counter() - start
    doc = json.loads(out.stdout)
    if out.returncode != 0:
        raise SystemExit(f"reproduce --env {env} exited {out.returncode}: {out.stderr}{doc.get('missing')}")
    return wall, doc


def _overhead(root: Path, run_id: str, env: str, n: int) -> float:
    values = []
    for _ in range(n):
        wall, doc = _reproduce(root, run_id, env)
        values.append(wall - float(doc["command_seconds"]))  # type: ignore[arg-type]
    return statistics.median(values)


def _plain_uv(requirements: Path, work: Path) -> float:
    uv = shutil.which("uv") or "uv"
    venv = work / "plain"
    shutil.rmtree(venv, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [uv, "venv", "-q", "--python", f"{sys.version_info[0]}.{sys.version_info[1]}", str(venv)], check=True
    )
    py = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", py, "-r", str(requirements)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", py, str(ROOT)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n, size = (1, 1 << 20) if args.quick else (5, 20 << 20)
    with tempfile.TemporaryDirectory(prefix="labvault-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        run_id = _project(root, size)
        current = _overhead(root, run_id, "current", n)
        _, first = _reproduce(root, run_id, "rebuild")
        reason = str(first["environment"]["reason"])  # type: ignore[index]
        first_build = float(reason.split("built in ")[1].split("s")[0])  # the environment build alone
        cached = _overhead(root, run_id, "rebuild", n)
        (env,) = [p for p in (root / ".labvault" / "envs").iterdir() if p.is_dir()]
        plain = statistics.median(_plain_uv(env / "requirements.txt", Path(tmp)) for _ in range(1 if args.quick else 3))
        packages = len((env / "requirements.txt").read_text().splitlines())
    figures = {
        "input_bytes": size,
        "overhead_current_seconds": round(current, 3),
        "overhead_rebuild_cached_seconds": round(cached, 3),
        "first_rebuild_seconds": round(first_build, 3),
        "plain_uv_seconds": round(plain, 3),
        "first_rebuild_ratio": round(first_build / plain, 2),
        "packages": packages,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"input snapshot: {size / 1e6:.0f} MB; recorded environment: {packages} packages")
    print(f"overhead --env current:          {current:6.2f} s   (goal <= 0.5 s)")
    print(f"overhead --env rebuild (cached):  {cached:6.2f} s   (goal <= 1 s)")
    print(f"first rebuild of the environment:                {first_build:6.2f} s")
    print(f"uv venv + uv pip install (same pins + labvault): {plain:6.2f} s")
    print(f"first rebuild / plain uv: {first_build / plain:.2f}   (goal <= 1.2)")


if __name__ == "__main__":
    main()
