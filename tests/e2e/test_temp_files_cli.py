"""Temp files of a SIGKILLed `labvault object put`: fsck counts them, the next writer removes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import LABVAULT, Cli

BIG = 48 * 1024 * 1024


def _kill_mid_write(project: Path, src: Path) -> bool:
    """Start `object put SRC` and SIGKILL it as soon as its temp file exists; True if it was there."""
    tmp = project / ".labvault" / "tmp"
    proc = subprocess.Popen([LABVAULT, "object", "put", str(src)], cwd=project, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(n.startswith(f"obj-{proc.pid}-") for n in os.listdir(tmp)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return proc.returncode == -signal.SIGKILL and any(n.startswith(f"obj-{proc.pid}-") for n in os.listdir(tmp))


def test_cli_temp_files_of_a_killed_put_are_counted_by_fsck_and_removed_by_the_next_put(
    cli: Cli, project: Path
) -> None:
    cli("init")
    big = project / "big.bin"
    with open(big, "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    assert any(_kill_mid_write(project, big) for _ in range(5)), "no kill landed while the temp file existed"
    doc = json.loads(cli("fsck", "--json").stdout)
    assert doc["clean"] is True
    assert doc["stale_temp_files"]["count"] == 1
    assert doc["stale_temp_files"]["bytes"] <= BIG
    human = cli("fsck").stdout
    assert "1 temp files of killed writers" in human

    (project / "small.txt").write_text("the next writer\n")
    cli("object", "put", "small.txt")
    assert [n for n in os.listdir(project / ".labvault" / "tmp") if n.startswith("obj-")] == []
    assert json.loads(cli("fsck", "--json").stdout)["stale_temp_files"] == {"count": 0, "bytes": 0}
