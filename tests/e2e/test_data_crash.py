"""A ``data add`` killed at any moment leaves no partial snapshot and a vault that fscks clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .conftest import LABVAULT, Cli


def test_sigkill_during_add(cli: Cli, project: Path) -> None:
    cli("init")
    data = project / "big"
    for d in range(20):
        (data / f"d{d:02}").mkdir(parents=True)
        for f in range(100):
            (data / f"d{d:02}" / f"f{f:03}.bin").write_bytes(os.urandom(2048 + f))
    env = {**os.environ, "NO_COLOR": "1"}
    # Kill at several points: during start-up, while objects are written, around the commit.
    for delay in (0.4, 1.0, 1.6):
        proc = subprocess.Popen([LABVAULT, "data", "add", "big", "big"], cwd=project, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cli("fsck")
        versions = cli("data", "log", "big", "--json", expect=None)
        if versions.returncode == 0:
            (latest,) = json.loads(versions.stdout)  # a version exists only complete
            assert latest["file_count"] == 2000
            cli("data", "checkout", "data:big@v1", "restored", "--force")
            assert sum(1 for _ in (project / "restored").rglob("*.bin")) == 2000
        else:
            assert versions.returncode == 3
    out = cli("data", "add", "big", "big").stdout
    assert out.startswith("data:big@v1")
    cli("fsck")
