"""``labvault push`` SIGKILLed at random moments: the remote stays consistent and a rerun completes.

Each trial pushes a snapshot of many small files, a large file and a model version to a fresh
folder remote, kills the push's process group after a random delay drawn from the measured
duration of an unkilled push, then checks that both vaults are fsck-clean, that the remote holds
either all of a record or none of it, and that the rerun push completes with the right bytes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from labvault.vault import Vault
from tests.e2e.conftest import LABVAULT, Cli
from tests.faults.conftest import FULL, Tally
from tests.faults.harness import assert_fsck_clean

pytestmark = pytest.mark.slow

TRIALS = 25 if FULL else 10
REFS = ("data:raw@v1", "data:big@v1", "shop/ranker@0.1.0")


def _push(project: Path, remote: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.Popen(
        [LABVAULT, "push", "--remote", remote, "--jobs", "4", *REFS],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes every thread and child with it
    )


def _records(nas: Path) -> tuple[set[str], set[str]]:
    with Vault.open(nas) as remote:
        data = {s.ref for s, _ in remote.data.datasets()}
        models = {v.ref for m in remote.registry.models() for v in remote.registry.versions(m.ref)}
    return data, models


def test_push_killed_at_random_points(project: Path, cli: Cli, tmp_path: Path, tally: Tally) -> None:
    cli("init")
    raw = project / "data" / "raw"
    raw.mkdir(parents=True)
    for i in range(600):
        (raw / f"{i:04d}.txt").write_bytes(os.urandom(64 + i % 512))
    cli("data", "add", "raw", "data/raw")
    (project / "big.bin").write_bytes(os.urandom(6 << 20))
    cli("data", "add", "big", "big.bin")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_bytes(os.urandom(300_000))
    cli("models", "register", "shop/ranker", "model")

    cli("remote", "add", "measure", str(tmp_path / "measure"))
    began = time.monotonic()
    proc = _push(project, "measure")
    assert proc.wait(timeout=300) == 0
    duration = time.monotonic() - began
    counts = tally["push SIGKILL"]
    rng = random.Random(15)
    for trial in range(TRIALS):
        nas = tmp_path / f"nas{trial}"
        cli("remote", "add", f"t{trial}", str(nas))
        proc = _push(project, f"t{trial}")
        time.sleep(rng.uniform(0.1, duration))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            counts["kills"] += 1
        proc.wait(timeout=60)
        if (nas / ".labvault" / "config.json").is_file():
            assert_fsck_clean(nas)
            data, models = _records(nas)
            counts["records before the rerun"] += len(data) + len(models)
            assert models <= {"shop/ranker@0.1.0"}
        cli("push", "--remote", f"t{trial}", *REFS)
        assert_fsck_clean(nas)
        assert_fsck_clean(project)
        assert _records(nas) == ({"data:raw@v1", "data:big@v1"}, {"shop/ranker@0.1.0"})
        counts["reruns completed"] += 1
    # A checkout from the last remote has the exact bytes.
    with Vault.open(tmp_path / f"nas{TRIALS - 1}") as remote:
        remote.data.checkout("data:big@v1", tmp_path / "big.out")
    assert (tmp_path / "big.out").read_bytes() == (project / "big.bin").read_bytes()
