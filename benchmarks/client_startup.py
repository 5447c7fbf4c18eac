"""Start-up of a process that works through a labvault server: the first ``lv.start_run`` and
``labvault runs list``, each as a fresh process, against a real ``labvault server`` on loopback.

    python benchmarks/client_startup.py [--reps 5] [--importtime]

Starts ``labvault server`` over a throw-away vault with a writer token, then, in a git workspace
with ``LABVAULT_URI`` and ``LABVAULT_TOKEN`` set, runs ``--reps`` fresh processes of

    import labvault as lv
    with lv.start_run(project="bench", name="startup") as run:
        run.log_metric("x", 1.0)

and of ``labvault runs list``, and prints the median wall clock and CPU seconds (user + system of the
child, which a machine shared with other work distorts less) and the heavy libraries each imported.
``--importtime`` also prints the 25 slowest imports of one ``start_run`` process
(``python -X importtime``). The load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import LABVAULT, free_port, wait_up

PYTHON = sys.executable
HEAVY = ("sqlalchemy", "alembic", "pydantic", "fastapi", "typer", "click", "rich", "pygments", "numpy")
BASE_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")},
    "LABVAULT_USER": "bench@example.com",
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@e",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@e",
    "NO_COLOR": "1",
}

START_RUN = """
import sys
import labvault as lv
with lv.start_run(project="bench", name="startup") as run:
    run.log_metric("x", 1.0)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(",".join(heavy))
"""


def timed(cmd: list[str], cwd: Path, env: dict[str, str], reps: int) -> tuple[float, float, str]:
    """Median wall-clock and CPU seconds of ``cmd`` as a fresh process, and its last stdout."""
    walls, cpus, out = [], [], ""
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)  # warm the page cache
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        out = proc.stdout
    return statistics.median(walls), statistics.median(cpus), out


def heavy_of(cmd: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """The heavy top-level packages ``cmd`` imports, read from ``python -X importtime``."""
    proc = subprocess.run([PYTHON, "-X", "importtime", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    return sorted(names & set(HEAVY))


def slowest_imports(cwd: Path, env: dict[str, str], n: int = 25) -> str:
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", START_RUN, ",".join(HEAVY)], cwd=cwd, env=env, capture_output=True, text=True
    )
    rows = [line for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    rows = [r for r in rows if r.split("|")[1].strip().isdigit()]
    rows.sort(key=lambda r: int(r.split("|")[1]))
    return "\n".join(rows[-n:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per figure (default 5)")
    parser.add_argument("--importtime", action="store_true", help="also print the slowest imports of start_run")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labvault-client-startup-") as tmp:
        base = Path(tmp)
        served, work = base / "served", base / "work"
        served.mkdir()
        work.mkdir()
        env = {**BASE_ENV, "XDG_CONFIG_HOME": str(base / "config"), "XDG_CACHE_HOME": str(base / "cache")}
        subprocess.run([LABVAULT, "-q", "init"], cwd=served, env=env, check=True)
        made = subprocess.run(
            [LABVAULT, "server", "token", "create", "bench", "--role", "writer", "--json"],
            cwd=served,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = json.loads(made.stdout)["token"]
        (work / "train.py").write_text("print('train')\n")
        subprocess.run(["git", "init", "-q"], cwd=work, env=env, check=True)
        subprocess.run(["git", "add", "-A"], cwd=work, env=env, check=True)
        subprocess.run(["git", "commit", "-qm", "bench"], cwd=work, env=env, check=True)
        port = free_port()
        server = subprocess.Popen(
            [LABVAULT, "server", "--port", str(port)],
            cwd=served,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(f"{url}/healthz", server)
            client_env = {**env, "LABVAULT_URI": url, "LABVAULT_TOKEN": token}
            start_run = [PYTHON, "-c", START_RUN, ",".join(HEAVY)]
            runs_list = [LABVAULT, "runs", "list"]
            print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(f"\nthrough a server, medians of {opts.reps} fresh processes\n")
            print(f"{'command':32} {'wall s':>7} {'cpu s':>6}   heavy imports")
            wall, cpu, out = timed(start_run, work, client_env, opts.reps)
            print(f"{'lv.start_run + log_metric':32} {wall:7.3f} {cpu:6.3f}   {out.strip() or '-'}", flush=True)
            wall, cpu, _ = timed(runs_list, work, client_env, opts.reps)
            heavy = ",".join(heavy_of([LABVAULT, *runs_list[1:]], work, client_env)) or "-"
            print(f"{'labvault runs list':32} {wall:7.3f} {cpu:6.3f}   {heavy}", flush=True)
            print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if opts.importtime:
                print("\nslowest imports of one start_run process (self us | cumulative us | module):")
                print(slowest_imports(work, client_env))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
