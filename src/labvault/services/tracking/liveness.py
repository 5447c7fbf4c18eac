"""Whether a run marked running still has a process: the rule ``runs show`` reports with."""

from __future__ import annotations

import os
import socket

__all__ = ["process_gone"]


def process_gone(*, status: str, pid: object, host: str | None) -> bool:
    """True when a running run's process on this host no longer exists (SIGKILL, crash)."""
    if status != "running" or not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, under another user
    return False
