"""Concurrency and crash safety: many writers, racing starts, SIGKILL mid-logging. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.storage.meta.tables import run_metrics
from labvault.vault import Vault

pytestmark = pytest.mark.slow

WRITER = """
import sys, time, labvault as lv
n = int(sys.argv[1])
with lv.start_run(name="writer", capture_output=False) as run:
    start = time.perf_counter()
    for i in range(n):
        run.log_metric("loss", i * 0.5, step=i)
    print(run.id, time.perf_counter() - start, flush=True)
"""

STARTER = """
import sys, labvault as lv
from labvault.vault import Vault
Vault.init(sys.argv[1], database_url=sys.argv[2] or None)
with lv.start_run(name="racer", seed=1) as run:
    run.log_params({"p": 1})
    run.log_metrics({"m": 1.0, "n": 2.0})
    run.log_text("x", "x.txt")
print(run.id, flush=True)
"""

KILLED = """
import sys, labvault as lv
with lv.start_run(name="doomed", capture_output=False) as run:
    print(run.id, flush=True)
    i = 0
    while True:
        run.log_metric("m", float(i), step=i)
        print(i, flush=True)
        i += 1
"""


def _env(project: Path) -> dict[str, str]:
    return {**os.environ, "LABVAULT_DIR": str(project / ".labvault")}


def _count(vault: Vault) -> int:
    with vault.meta.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(run_metrics)).scalar_one())


@pytest.mark.parametrize("writers", [8])
def test_many_processes_log_into_one_vault(any_vault: Vault, project: Path, writers: int) -> None:
    per = 2500
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(per)],
            cwd=project,
            env=_env(project),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    elapsed = time.perf_counter() - start
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    assert _count(any_vault) == writers * per
    backend = "sqlite" if any_vault.meta.is_sqlite else "postgresql"
    total = writers * per
    print(  # noqa: T201 - the throughput beside the test shows a lock that serialises everything
        f"\n{backend}: {writers} processes x {per} synchronous log_metric = {total} rows in {elapsed:.2f}s "
        f"({total / elapsed:,.0f} metrics/s overall, including interpreter start-up)"
    )
    for run in any_vault.runs.list():
        assert run.status == "finished"
        assert len(any_vault.runs.history(run.id)["loss"]) == per


def test_processes_starting_on_a_fresh_vault(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for backend in ("sqlite", "postgres"):
        url = request.getfixturevalue("pg_url") if backend == "postgres" else ""
        root = tmp_path / backend
        root.mkdir()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", STARTER, str(root), url],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        with Vault.open(root) as vault:
            found = vault.runs.list()
            assert len(found) == 4
            assert all(r.status == "finished" and r.params == {"p": 1} for r in found)
            assert vault.maintenance.fsck().clean


def test_sigkill_mid_logging_loses_nothing_returned(any_vault: Vault, project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    last = -1
    while last < 300:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        last = int(line)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    for line in rest.splitlines():
        last = int(line)
    assert proc.returncode == -signal.SIGKILL
    points = any_vault.runs.history(run_id)["m"]
    stored = {p.step for p in points}
    assert set(range(last + 1)) <= stored  # every call that returned is stored
    run = any_vault.runs.get(run_id)
    assert run.status == "running"
    assert run.ended_at is None
    assert any_vault.maintenance.fsck().clean
