"""Temp files of writers, named after a lock their writer holds, so that a dead writer's are found.

A process that writes temp files into ``tmp/`` first takes ``tmp/writer-<token>.lock``: it creates
the file, holds an exclusive ``flock`` on it for as long as the process lives, and names its temp
files ``obj-<pid>-<token>-<n>``. A killed writer's lock dies with it, so a lock that can be taken belongs
to no live writer and its temp files are garbage: the next writer (once per process) and ``gc``
remove them, ``fsck`` counts them. A flock is held per open file, so two stores in one process, and
processes in other pid namespaces sharing the folder, see each other as live.

Every function raises plain ``OSError``; the store translates it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TempFiles"]

_LOCK_PREFIX, _LOCK_SUFFIX = "writer-", ".lock"
_TEMP_PREFIX = "obj-"


class TempFiles:
    """This store's temp files in ``tmp/``, and the leftovers of dead writers."""

    def __init__(self, tmp_dir: Path) -> None:
        self.dir = tmp_dir
        self._dir_s = str(tmp_dir)
        self._guard = threading.Lock()
        self._owner: tuple[int, str, int] | None = None  # (pid, token, lock fd)
        self._counter = 0
        self._swept_by: int | None = None  # the pid that last swept (once per process)

    def new(self) -> tuple[int, str]:
        """Create a temp file of this writer: ``(fd, path)``."""
        token = self._token()
        with self._guard:
            self._counter += 1
            n = self._counter
        path = f"{self._dir_s}/{_TEMP_PREFIX}{os.getpid()}-{token}-{n}"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444), path

    def sweep_once(self) -> None:
        """Remove dead writers' temp files, the first time this process writes."""
        if self._swept_by == os.getpid():
            return
        self._swept_by = os.getpid()
        with contextlib.suppress(OSError):  # housekeeping: never the reason a write fails
            self.sweep(remove=True)

    def sweep(self, *, remove: bool) -> tuple[int, int]:
        """Count (and with ``remove``, delete) the temp files no live writer holds: ``(files, bytes)``."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0, 0
        own = self._owner[1] if self._owner is not None and self._owner[0] == os.getpid() else None
        temps: dict[str, list[str]] = {}
        tokens: set[str] = set()
        for name in names:
            if name.startswith(_LOCK_PREFIX) and name.endswith(_LOCK_SUFFIX):
                tokens.add(name[len(_LOCK_PREFIX) : -len(_LOCK_SUFFIX)])
            elif name.startswith(_TEMP_PREFIX) and (token := _token_of(name)) is not None:
                temps.setdefault(token, []).append(name)
                tokens.add(token)
        files = size = 0
        for token in sorted(tokens - {own}):
            held = self._if_dead(token)
            if held is None:
                continue
            try:
                for name in temps.get(token, []):
                    path = f"{self._dir_s}/{name}"
                    try:
                        size += os.stat(path).st_size
                        if remove:
                            os.unlink(path)
                    except FileNotFoundError:
                        continue
                    files += 1
                if remove:  # the lock goes last: a temp file never outlives the lock that names it
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._lock_path(token))
            finally:
                if held >= 0:
                    os.close(held)
        return files, size

    def others(self) -> Iterator[tuple[Path, float]]:
        """The entries of ``tmp/`` that are not a writer's, with their mtimes (gc removes them by age)."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if self.owns(entry.name):  # swept by its writer's lock, never by age
                continue
            try:
                yield Path(entry.path), entry.stat().st_mtime
            except FileNotFoundError:
                continue

    @staticmethod
    def owns(name: str) -> bool:
        """Whether a name in ``tmp/`` is a writer's lock or temp file (swept by lock, never by age)."""
        if name.startswith(_LOCK_PREFIX) and name.endswith(_LOCK_SUFFIX):
            return True
        return name.startswith(_TEMP_PREFIX) and _token_of(name) is not None

    def _if_dead(self, token: str) -> int | None:
        """The writer ``token`` is dead: an fd holding its lock (-1 if it has none); None if it lives."""
        try:
            fd = os.open(self._lock_path(token), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # Its writer made the lock before any temp file and a sweep removes the lock last: the
            # writer is gone. (Checked now, not from the listing, which may have missed a new lock.)
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _token(self) -> str:
        owner = self._owner
        if owner is not None and owner[0] == os.getpid():
            return owner[1]
        with self._guard:
            owner = self._owner
            if owner is None or owner[0] != os.getpid():
                if owner is not None:  # forked: the lock is the parent's; take one of our own
                    os.close(owner[2])
                self._owner = owner = (os.getpid(), *self._take_lock())
            return owner[1]

    def _take_lock(self) -> tuple[str, int]:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            token = secrets.token_hex(6)
            path = self._lock_path(token)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweep may have taken the new file in the instant before our flock and removed it: then
            # we hold a lock on a name that no longer exists, and start again.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return token, fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _lock_path(self, token: str) -> str:
        return f"{self._dir_s}/{_LOCK_PREFIX}{token}{_LOCK_SUFFIX}"

    def close(self) -> None:
        """Let go of this writer's lock (its temp files are then a dead writer's)."""
        with self._guard:
            owner, self._owner = self._owner, None
        if owner is not None and owner[0] == os.getpid():
            os.close(owner[2])


def _token_of(name: str) -> str | None:
    """``obj-<pid>-<token>-<n>`` -> token; None for other names (an older labvault's temp files)."""
    parts = name.split("-")
    if len(parts) != 4 or len(parts[2]) != 12 or not (parts[1].isdigit() and parts[3].isdigit()):
        return None
    return parts[2]
