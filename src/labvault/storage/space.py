"""A full disk, told apart from other I/O failures and said as such (exit 7).

SQLite reports a write that ran out of space sometimes as "database or disk is full" and sometimes
as "disk I/O error" (a WAL or shared-memory file it could not extend); the filesystem's free space
tells the two apart. Both the object store and the metadata store translate through here.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from labvault.errors import StorageError

__all__ = ["FULL_BELOW", "disk_full", "free_bytes", "is_full", "translate_os_error"]

#: Less free space than this, when a write fails, means the write failed for want of space.
FULL_BELOW = 1024 * 1024


def free_bytes(path: Path | str) -> int | None:
    """Bytes this process may still write on the filesystem holding ``path`` (None if unknown)."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        # root may use the blocks reserved for it, so it runs out only when none are left
        return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return None


def is_full(path: Path | str) -> bool:
    free = free_bytes(path)
    return free is not None and free < FULL_BELOW


def disk_full(path: Path | str, action: str, *, quota: bool = False) -> StorageError:
    """The error for a write that ran out of space: what happened, where, and what to free."""
    free = free_bytes(path)
    left = f"{free // 1024} KiB free" if free is not None else "no space left"
    what = "disk quota exceeded" if quota else "disk full"
    return StorageError(
        f"{what} while {action}: the filesystem holding {path} has {left}",
        hint="free space there (delete files you do not need; once some is free, `labvault gc` removes "
        "unreferenced objects and dead writers' temp files), then run the command again",
    )


def translate_os_error(exc: OSError, path: Path | str, action: str) -> StorageError:
    """An OSError met while ``action`` on the filesystem holding ``path``, as one StorageError."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(path, action, quota=exc.errno == errno.EDQUOT)
    if exc.errno == errno.EIO and is_full(path):
        return disk_full(path, action)
    return StorageError(f"{action} failed: {exc.strerror or exc}", hint="check the disk and the vault's permissions")
