"""The SQLite side of the pack index: switching a fresh index to WAL, and turning SQLite's and the disk's
failures into labvault's errors (a damaged index set aside and rebuilt from the packs)."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from labvault.errors import StorageError
from labvault.storage.space import disk_full, is_full

__all__ = ["IndexFiles", "switch_to_wal", "translate_sqlite_errors"]


@runtime_checkable
class IndexFiles(Protocol):
    """What a failure handler needs of the index it guards: its folder, and a way to set it aside."""

    dir: Path

    def set_aside(self) -> bool: ...


_P = ParamSpec("_P")
_R = TypeVar("_R")


_DAMAGED = (11, 26)  # SQLITE_CORRUPT ("database disk image is malformed") and SQLITE_NOTADB


def switch_to_wal(conn: sqlite3.Connection, *, wait: float = 60.0) -> None:
    """``PRAGMA journal_mode = WAL``, waiting as long as a busy database would be waited for.

    The first switch of a fresh index needs its exclusive lock, and SQLite answers the connections
    that race for it "database is locked" at once, without calling the busy handler (the first
    stage of a pipeline on a new vault failed so). Once the file is in WAL mode the pragma takes no
    lock at all.
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def translate_sqlite_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report a failure of the pack index as one StorageError (never a raw sqlite3 traceback).

    An index whose SQLite pages are damaged is set aside in ``quarantine/`` and the call made once
    more, on an index rebuilt from the packs: it is a cache, as deleting it by hand always showed.
    """

    @wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        index = args[0] if args and isinstance(args[0], IndexFiles) else None
        retried = False
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.Error as exc:
                damaged = getattr(exc, "sqlite_errorcode", 0) & 0xFF in _DAMAGED
                if damaged and not retried and index is not None and index.set_aside():
                    retried = True
                    continue
                text = str(exc)
                # SQLite says "database or disk is full", or "disk I/O error" when it could not grow its WAL
                if index is not None and ("full" in text or ("I/O error" in text and is_full(index.dir))):
                    raise disk_full(index.dir, "updating the pack index") from exc
                raise StorageError(
                    f"the pack index failed: {text}",
                    hint="run `labvault fsck`; the index is rebuilt from the packs if it is deleted",
                ) from exc
            except OSError as exc:  # others are the caller's to handle (a pack compacted away, ...)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and index is not None:
                    raise disk_full(index.dir, "updating the packs", quota=exc.errno == errno.EDQUOT) from exc
                raise

    return wrapper
