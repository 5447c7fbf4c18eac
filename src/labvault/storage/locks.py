"""Advisory file locks (flock) with a timeout, shared or exclusive.

flock locks die with their process, so a SIGKILLed holder never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labvault.errors import LockedError, StorageError

__all__ = ["file_lock"]


@contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout: float = 60.0, what: str = "the vault") -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if missing) for the duration of the block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from exc
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
                if time.monotonic() >= deadline:
                    raise LockedError(f"{what} is locked by another labvault process ({path.name})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock
