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

    def __call__(self, *args: str, expect: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess[str]:
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


FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gc_on_one_machine_while_the_other_writes_loses_nothing(
    team: Team, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round the writer adds content whose objects are stored, unreferenced and just older than
    the grace period, while gc runs on the other machine. The re-put stores a fresh copy under the
    shared lock, so gc either ran before (and the writer, listing the store again under the lock,
    uploads it again) or after (and finds it young); the grace period covers the moment between the
    upload and the metadata commit.

    The remote store refreshes only objects older than a minute, so the grace period is just above
    that. A thread stores each round's orphans one spacing after the last round's, so that when a
    round comes its own orphans, and only they, are gc's prey. 20 rounds with LABVAULT_TEST_FULL=1
    (about 3 minutes), 8 by default."""
    from labvault.vault import Vault

    rounds = 20 if FULL else 8
    grace = 61.0
    spacing = 5.0
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    rounds_files = [_write_tree(team.b.root / f"round{r}", 4, f"round{r}") for r in range(rounds)]
    made: list[float] = []
    ready = threading.Condition()

    def make_orphans() -> None:
        with Vault.open(team.b.root) as vault:
            t0 = time.monotonic()
            for r in range(rounds):
                time.sleep(max(0.0, t0 + r * spacing - time.monotonic()))
                folder = team.b.root / f"round{r}"
                with vault.objects.batch():  # stored, referenced by nothing: gc's prey from now + grace
                    vault.objects.put_file(folder / "part1" / "f1.bin")
                    vault.objects.put_file(folder / "big.bin")
                with ready:
                    made.append(time.monotonic())
                    ready.notify_all()

    maker = threading.Thread(target=make_orphans)
    maker.start()
    try:
        for r in range(rounds):
            with ready:
                ready.wait_for(lambda r=r: len(made) > r, timeout=120)
            time.sleep(max(0.0, made[r] + grace + 1.0 - time.monotonic()))
            errors: list[str] = []

            def collect(m: Machine = team.a, errors: list[str] = errors) -> None:
                proc = m("gc", "--grace", f"{grace}s", expect=None)
                if proc.returncode not in (0, 6):
                    errors.append(proc.stderr)

            gc = threading.Thread(target=collect)
            gc.start()
            time.sleep(0.2 * (r % 4))  # vary which of the two starts first
            team.b("data", "add", f"ds{r}", f"round{r}", "-m", f"round {r}")
            gc.join()
            assert not errors, errors
    finally:
        maker.join()
    with Vault.open(team.a.root) as vault:
        for r in range(rounds):
            out = team.a.root / f"check{r}"
            vault.data.checkout(f"data:ds{r}@v1", out)
            assert _read_tree(out) == rounds_files[r], f"round {r}"
    for m in (team.a, team.b):
        fsck = json.loads(m("fsck", "--json").stdout)
        assert fsck["clean"], fsck


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_during_an_upload_leaves_both_machines_clean_and_the_retry_completes(team: Team) -> None:
    """``data add`` killed (SIGKILL) at a random moment of its upload, then: fsck clean on both
    machines, the retry completes, the other machine checks it out byte for byte.
    20 trials with LABVAULT_TEST_FULL=1, 3 by default."""
    import random
    import signal

    trials = 20 if FULL else 3
    rng = random.Random(14)
    killed_mid_upload = 0

    def tree(name: str) -> tuple[Path, dict[str, bytes]]:
        folder = team.a.root / name
        files = _write_tree(folder, 400, name)
        for i in range(3):
            data = os.urandom(1 << 20)
            files[f"big{i}.bin"] = data
            (folder / f"big{i}.bin").write_bytes(data)
        return folder, files

    # The kill lands at a random point of an add of this machine's own speed: a fixed window
    # missed it on a fast machine (the add had finished) and would on a slow one (not started).
    calib, _ = tree("calibration")
    began = time.monotonic()
    team.a("data", "add", "calibration", calib.name)
    duration = time.monotonic() - began
    for t in range(trials):
        folder, files = tree(f"trial{t}")
        proc = subprocess.Popen(
            [LABVAULT, "data", "add", f"t{t}", folder.name],
            cwd=team.a.root,
            env=team.a.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_upload += 1
        proc.communicate(timeout=120)
        for m in (team.a, team.b):
            fsck = json.loads(m("fsck", "--json").stdout)
            assert fsck["clean"], (t, fsck)
        team.a("data", "add", f"t{t}", folder.name)
        out = team.b.root / f"out{t}"
        team.b("data", "checkout", f"data:t{t}@v1", str(out))
        assert _read_tree(out) == files, t
    assert killed_mid_upload >= trials // 2, "the add finished before the kill too often to test anything"


def test_two_machines_running_the_same_stage_at_once_run_it_once(team: Team, tmp_path: Path) -> None:
    """The stage's key lock is team-wide: the second machine waits, then restores what the first stored."""
    log = tmp_path / "started.log"
    spec = (
        "stages:\n  slow:\n"
        f"    cmd: echo started >> {log} && sleep 3 && mkdir -p out && echo done > out/result.txt\n"
        "    outs: [out]\n"
    )
    for m in (team.a, team.b):
        (m.root / "labvault.yaml").write_text(spec)
    procs = [
        subprocess.Popen(
            [LABVAULT, "pipeline", "run", "--json"],
            cwd=m.root,
            env=m.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in (team.a, team.b)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert log.read_text() == "started\n", outs
    for m in (team.a, team.b):
        assert (m.root / "out" / "result.txt").read_text() == "done\n"
