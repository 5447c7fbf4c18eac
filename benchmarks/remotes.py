"""Benchmark: ``labvault push``/``pull`` to a folder remote against ``dvc push``/``dvc pull`` to a local remote.

Usage: ``.venv/bin/python benchmarks/remotes.py [--runs 3] [--files 20000]``

Creates the data under ``.bench/`` (files of 1-8 KiB in folders of 200), installs DVC into
``.bench/dvc-venv`` if absent (``uv venv`` + ``uv pip install dvc``), snapshots the data once in each
tool (not timed), then runs, as paired runs (order alternated) and reporting medians:

- push of the snapshot to an empty folder remote (``labvault push`` vs ``dvc push``);
- a no-op push of the same (everything already there), as a whole command;
- pull into a fresh clone and check out (``labvault pull --checkout`` vs ``dvc pull``, each one command
  that fetches and checks out), the clone made of the files git would bring (the lock / .dvc file);
  labvault's ``pull`` then ``data checkout``, as two commands in a clone of their own, are also shown
  apart (medians of each; not part of the paired figure).

With ``--server``, the same three steps against a labvault server remote (``labvault server
--no-auth`` on a loopback port, over a fresh vault each cold push): labvault only, as DVC has no
counterpart of a server that validates what it receives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from _harness import DVC as DVC_PATH
from _harness import ensure_dvc, start_server, stop
from _seed import make_files

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
WORK = BENCH / "work-remotes"
DVC = str(DVC_PATH)
LABVAULT = str(REPO / ".venv" / "bin" / "labvault")
ENV = {**os.environ, "LABVAULT_USER": "bench@example.com", "DVC_NO_ANALYTICS": "1", "NO_COLOR": "1"}


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(cmds: list[list[str]], cwd: Path) -> float:
    """Wall seconds of whole commands run one after the other."""
    start = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def setup_labvault(count: int) -> Path:
    data = WORK / f"src{count}" / "data"
    if not data.exists():
        make_files(data, count)
    lv = fresh_dir(WORK / "lv-src")
    shutil.copytree(data, lv / "data")
    run([LABVAULT, "init", "-q"], lv)
    run([LABVAULT, "data", "add", "d", "data"], lv)
    return lv


def setup(count: int) -> dict[str, Path]:
    data = WORK / f"src{count}" / "data"
    lv = setup_labvault(count)
    dv = fresh_dir(WORK / "dvc-src")
    shutil.copytree(data, dv / "data")
    run([DVC, "init", "--no-scm", "-q"], dv)
    run([DVC, "config", "core.analytics", "false"], dv)
    run([DVC, "add", "-q", "data"], dv)
    return {"labvault": lv, "dvc": dv}


def paired(label: str, runs: int, step: dict[str, Callable[[], float]]) -> dict[str, float]:
    times: dict[str, list[float]] = {"labvault": [], "dvc": []}
    for i in range(runs):
        for tool in ["labvault", "dvc"] if i % 2 == 0 else ["dvc", "labvault"]:
            times[tool].append(step[tool]())
    med = {t: statistics.median(v) for t, v in times.items()}
    ratio = med["dvc"] / med["labvault"]
    print(f"{label:<46} labvault {med['labvault']:8.3f} s   dvc {med['dvc']:8.3f} s   ratio {ratio:6.1f}x", flush=True)
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--server", action="store_true", help="also push/pull through a labvault server remote")
    parser.add_argument("--server-only", action="store_true", help="only the server rows (no DVC)")
    args = parser.parse_args()
    if args.server_only:
        print(f"{args.files:,} files of 1-8 KiB, {args.runs} runs, medians", flush=True)
        server_rows(setup_labvault(args.files), args.files, args.runs)
        return
    ensure_dvc()
    src = setup(args.files)
    remotes = {"labvault": WORK / "lv-remote", "dvc": WORK / "dvc-remote"}
    # The remote each tool pushes to; the DVC remote is configured once, by path.
    run([DVC, "remote", "add", "-f", "-d", "local", str(remotes["dvc"])], src["dvc"])
    run([LABVAULT, "remote", "add", "nas", str(remotes["labvault"]), "--default"], src["labvault"])
    push = {"labvault": [LABVAULT, "push"], "dvc": [DVC, "push", "-q"]}

    def cold_push(tool: str) -> float:
        shutil.rmtree(remotes[tool], ignore_errors=True)
        if tool == "dvc":
            shutil.rmtree(src["dvc"] / ".dvc" / "tmp", ignore_errors=True)  # its remote index: the remote is new
        return timed([push[tool]], src[tool])

    print(f"{args.files:,} files of 1-8 KiB, {args.runs} paired runs, medians", flush=True)
    paired(f"push {args.files:,} files to a folder remote", args.runs, {t: (lambda t=t: cold_push(t)) for t in src})
    paired("no-op push (all there), whole command", args.runs, {t: (lambda t=t: timed([push[t]], src[t])) for t in src})

    def clone_and_pull(tool: str) -> float:
        clone = fresh_dir(WORK / f"{tool}-clone")
        if tool == "dvc":
            run([DVC, "init", "--no-scm", "-q"], clone)
            shutil.copy2(src["dvc"] / "data.dvc", clone / "data.dvc")
            shutil.copy2(src["dvc"] / ".dvc" / "config", clone / ".dvc" / "config")
            return timed([[DVC, "pull", "-q"]], clone)
        # Also as two commands, in a clone of its own (not in the paired figure): how the time splits.
        apart = fresh_dir(WORK / "labvault-clone-apart")
        for where in (clone, apart):
            run([LABVAULT, "init", "-q"], where)
            run([LABVAULT, "remote", "add", "nas", str(remotes["labvault"])], where)
            shutil.copy2(src["labvault"] / "labvault.lock", where / "labvault.lock")
        parts["pull"].append(timed([[LABVAULT, "pull"]], apart))
        parts["checkout"].append(timed([[LABVAULT, "data", "checkout"]], apart))
        return timed([[LABVAULT, "pull", "--checkout"]], clone)

    parts: dict[str, list[float]] = {"pull": [], "checkout": []}
    paired(
        "pull into a fresh clone + checkout", args.runs, {t: (lambda t=t: clone_and_pull(t)) for t in src}
    )  # `labvault pull --checkout` against `dvc pull`: one command each, both fetch and check out
    pull_s, checkout_s = (statistics.median(parts[k]) for k in ("pull", "checkout"))
    print(f"{'  labvault as two commands: pull / data checkout':<46} {pull_s:8.3f} s / {checkout_s:.3f} s", flush=True)
    for tool in src:
        got = sum(1 for p in (WORK / f"{tool}-clone" / "data").rglob("*") if p.is_file())
        assert got == args.files, f"{tool}: {got} files checked out"
    if args.server:
        server_rows(src["labvault"], args.files, args.runs)


def start_vault_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    fresh_dir(folder)
    run([LABVAULT, "init", "-q"], folder)
    return start_server([LABVAULT, "server", "--no-auth"], health="/healthz", cwd=folder, env=ENV, limit=60)


def server_rows(src: Path, files: int, runs: int) -> None:
    """push / no-op push / pull + checkout through a labvault server remote (labvault only)."""
    push, noop, pull = [], [], []
    for _ in range(runs):
        proc, url = start_vault_server(WORK / "server-vault")
        try:
            subprocess.run([LABVAULT, "remote", "remove", "srv"], cwd=src, env=ENV, capture_output=True, check=False)
            run([LABVAULT, "remote", "add", "srv", url], src)
            push.append(timed([[LABVAULT, "push", "--remote", "srv"]], src))
            noop.append(timed([[LABVAULT, "push", "--remote", "srv"]], src))
            clone = fresh_dir(WORK / "server-clone")
            run([LABVAULT, "init", "-q"], clone)
            run([LABVAULT, "remote", "add", "srv", url], clone)
            shutil.copy2(src / "labvault.lock", clone / "labvault.lock")
            pull.append(timed([[LABVAULT, "pull"], [LABVAULT, "data", "checkout"]], clone))
            got = sum(1 for p in (clone / "data").rglob("*") if p.is_file())
            assert got == files, f"{got} files checked out through the server"
        finally:
            stop(proc)
    for label, times in (
        (f"push {files:,} files to a server remote", push),
        ("no-op push to a server remote, whole command", noop),
        ("pull from a server remote + checkout", pull),
    ):
        print(f"{label:<46} labvault {statistics.median(times):8.3f} s", flush=True)


if __name__ == "__main__":
    main()
