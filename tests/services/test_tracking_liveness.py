"""Whether a running run's process still exists: a rule of the tracking service, not of the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from labvault.vault import Vault


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_gone_only_for_a_running_run_whose_process_on_this_host_has_exited(vault: Vault) -> None:
    here = socket.gethostname()
    dead = _dead_pid()
    assert vault.runs.process_gone(status="running", pid=dead, host=here)
    assert not vault.runs.process_gone(status="running", pid=os.getpid(), host=here)
    assert not vault.runs.process_gone(status="running", pid=dead, host=f"not-{here}")
    assert not vault.runs.process_gone(status="finished", pid=dead, host=here)
    assert not vault.runs.process_gone(status="running", pid=None, host=here)
    assert not vault.runs.process_gone(status="running", pid=1, host=here)  # alive (init), maybe another user's
