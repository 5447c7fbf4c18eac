"""Advisory file locks (flock) with a timeout, shared or exclusive.

flock locks die with their process, so a SIGKILLed holder never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from labvault.errors import LockedError, StorageError

__all__ = ["file_lock", "removable_lock", "sweep_locks"]


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


def _flock(fd: int, path: Path, deadline: float, what: str) -> None:
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
            if time.monotonic() >= deadline:
                raise LockedError(f"{what} is locked by another labvault process ({path.name})") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextmanager
def removable_lock(path: Path, *, timeout: float = 60.0, what: str = "the vault") -> Iterator[None]:
    """An exclusive lock on ``path`` whose file is removed when the block ends, so one-off keys leave
    no file behind. The file is unlinked while the lock is held; a process that waited on the old
    file finds, once it holds the lock, that ``path`` is gone or another file, and starts over on
    the current one: two holders can never each believe they own the key."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            _flock(fd, path, deadline, what)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # removed (or replaced) by the holder we waited for: lock the current file
    try:
        yield
    finally:
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)


def sweep_locks(folder: Path, *, suffix: str = ".lock") -> int:
    """Remove the lock files in ``folder`` nobody holds (left by a killed process), the way
    :func:`removable_lock` does: each is taken without waiting and unlinked while held. Held ones stay."""
    removed = 0
    try:
        names = [e.name for e in os.scandir(folder) if e.name.endswith(suffix) and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for name in names:
        path = folder / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # held: a stage is running under it
        try:
            if _same_file(fd, path):
                os.unlink(path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
