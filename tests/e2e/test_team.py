"""A team vault (PostgreSQL + S3 on a moto server process) used from two vault folders, two "machines".

Each machine is its own project folder with its own ``.labvault`` (config, cache), joined to the same
database schema and bucket; every command is the real ``labvault`` executable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import LABVAULT
from tests.s3server import S3Server

pytestmark = pytest.mark.postgres


@dataclass
class Machine:
    root: Path
    env: dict[str, str]

    def __call__(self, *args: str, expect: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [LABVAULT, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (
                f"labvault {' '.join(args)} exited {proc.returncode}, expected {expect}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc


@dataclass
class Team:
    db: str
    objects: str
    a: Machine
    b: Machine


def _env(s3: S3Server, user: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LABVAULT_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, **s3.env(), "NO_COLOR": "1", "LABVAULT_USER": user}


@pytest.fixture
def team(tmp_path: Path, pg_url: str, s3_server: S3Server) -> Team:
    objects = f"s3://{s3_server.bucket()}/vault"
    machines = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        m = Machine(root, _env(s3_server, f"{name}@example.com"))
        m("init", "--db", pg_url, "--objects", objects)
        machines.append(m)
    return Team(pg_url, objects, *machines)


def _write_tree(root: Path, n: int, seed: str) -> dict[str, bytes]:
    files = {f"part{i % 3}/f{i}.bin": f"{seed}-{i}\n".encode() * (1 + i % 7) for i in range(n)}
    files["big.bin"] = os.urandom(3 << 20)  # beside the small ones: one object above any pack threshold
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_snapshot_added_on_one_machine_checks_out_byte_for_byte_on_the_other(team: Team) -> None:
    files = _write_tree(team.a.root / "data", 60, "one")
    ref = team.a("data", "add", "raw", "data", "-m", "first").stdout.split()[0]
    assert ref == "data:raw@v1"
    team.b("data", "checkout", "data:raw@v1", "data")
    assert _read_tree(team.b.root / "data") == files
    again = team.b("data", "checkout", "data:raw@v1", "copy2")  # the cache serves it the second time
    assert again.returncode == 0
    assert _read_tree(team.b.root / "copy2") == files
    for m in (team.a, team.b):
        fsck = json.loads(m("fsck", "--json").stdout)
        assert fsck["clean"], fsck
    show = json.loads(team.b("vault", "show", "--json").stdout)
    assert show["team"] is True
    assert show["objects"] == team.objects
    assert show["metadata"].startswith("postgresql")
    assert show["object_count"] >= 1
    assert show["object_bytes"] >= len(files["big.bin"])
    assert show["cache"]["size"] == 10 * 1024**3


LOGGER = textwrap.dedent(
    """
    import sys
    import labvault
    with labvault.start_run(project="team", name=sys.argv[1], capture_output=False) as run:
        for step in range(1000):
            labvault.log_metric("loss", 1.0 / (step + 1), step=step)
        print(run.id)
    """
)


def test_runs_logged_from_both_machines_at_once_all_arrive(team: Team) -> None:
    procs = []
    for i in range(4):
        m = team.a if i % 2 == 0 else team.b
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", LOGGER, f"worker{i}"], cwd=m.root, env=m.env, stdout=subprocess.PIPE, text=True
            )
        )
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        ids.append(out.strip())
    listed = json.loads(team.b("runs", "list", "--json").stdout)
    assert sorted(r["id"] for r in listed) == sorted(ids)
    for run_id in ids:
        shown = json.loads(team.a("runs", "show", run_id, "--json").stdout)
        assert shown["status"] == "finished"
        assert len(shown["metric_history"]["loss"]) == 1000


def test_a_promotion_on_one_machine_is_seen_on_the_other(team: Team) -> None:
    folder = team.a.root / "model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(os.urandom(4096))
    (folder / "metrics.json").write_text('{"auc": 0.9}')
    team.a("models", "register", "fraud/detector", "model")
    team.a("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    got = team.b("get", "fraud/detector@prod", "-o", "out").stdout.strip()
    assert (team.b.root / got / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()
    audit = team.b("audit", "verify")
    assert audit.returncode == 0


def test_gc_on_one_machine_while_the_other_writes_loses_nothing(team: Team) -> None:
    """Each round the writer re-adds content whose objects are unreferenced and older than the grace
    period, while gc runs on the other machine: the re-put refreshes them under the shared lock, so
    gc either ran before (and the writer uploads them again) or after (and finds them young). The
    grace period covers the moment between the upload and the metadata commit, as on one machine."""
    rounds = 20
    grace = 2.0
    for r in range(rounds):
        data = team.b.root / "data"
        files = _write_tree(data, 5, f"round{r}")
        # Objects of this round's content, stored but referenced by nothing yet: gc's prey.
        for rel in ("part0/f0.bin", "part1/f1.bin"):
            team.b("object", "put", str(data / rel))
        time.sleep(grace + 0.2)
        errors: list[str] = []

        def collect(m: Machine = team.a, errors: list[str] = errors) -> None:
            proc = m("gc", "--grace", f"{grace}s", expect=None)
            if proc.returncode not in (0, 6):
                errors.append(proc.stderr)

        gc = threading.Thread(target=collect)
        gc.start()
        team.b("data", "add", "ds", "data", "-m", f"round {r}")
        gc.join()
        assert not errors, errors
        out = team.a.root / f"check{r}"
        team.a("data", "checkout", f"data:ds@v{r + 1}", str(out))
        assert _read_tree(out) == files
        for rel in list(files)[:2]:
            (data / rel).unlink()
    for m in (team.a, team.b):
        fsck = json.loads(m("fsck", "--json").stdout)
        assert fsck["clean"], fsck
