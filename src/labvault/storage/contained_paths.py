"""Stored paths below a destination: checked, then resolved without following a link.

A name that comes from stored data must be one component (:func:`check_name`); a stored relative path
is checked component by component (:func:`split_rel`). :class:`DestPaths` holds a destination folder
open by descriptor and resolves every path below it from directory descriptors with ``O_NOFOLLOW``:
a link or a file standing where a folder must be is a file in the way (exit 4, named). It is the
resolving half of :class:`~labvault.storage.contained.Dest`, which does the writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from labvault.errors import Conflict, StorageError, ValidationError

__all__ = ["DestPaths", "check_name", "split_rel", "write_error"]

_HELD_DIRS = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be one component of a stored path, or None if it can."""
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    if "/" in name:
        return f"a name with '/' ({name!r})"
    if "\0" in name:
        return f"a name with NUL ({name!r})"
    return None


def split_rel(rel: str) -> list[str]:
    """A stored relative path (``a/b/c``) as its components, each checked; refuses anything else."""
    parts = rel.split("/")
    for part in parts:
        why = check_name(part)
        if why is not None:
            raise ValidationError(
                f"refusing to write {rel!r}: it holds {why}", hint="stored paths are relative and never climb out"
            )
    return parts


def write_error(exc: OSError, where: Path) -> StorageError:
    """The :class:`StorageError` for ``exc``, met writing ``where`` (a full disk said as such)."""
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {where}", hint="free some space, then run the command again")
    return StorageError(f"cannot write {where}: {exc.strerror or exc}", hint="check the disk and the permissions")


class DestPaths:
    """A destination folder held open by descriptor; paths below it never follow a link.

    Use as a context manager; :class:`~labvault.storage.contained.Dest` adds the writes.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        # Folders below, held open by descriptor (most recently used last): a checkout writes many
        # files into each folder, and resolving every path from the top costs more than the write.
        self._dirs: dict[str, int] = {}

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Self:
        """Open ``path`` (typed by the user: links in it are followed), creating it if ``create``."""
        path = Path(os.path.abspath(Path(path).expanduser()))
        try:
            if create:
                os.makedirs(path, exist_ok=True)
            return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(f"{path} is a file, where a folder is needed", hint="choose another destination") from None
        except OSError as exc:
            raise write_error(exc, path) from exc

    def _forget_dirs(self) -> None:
        """Close the held folders: after a remove or a rename, one of them may be gone or moved."""
        while self._dirs:
            os.close(self._dirs.popitem()[1])

    def close(self) -> None:
        self._forget_dirs()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- resolving ------------------------------------------------------------------------------
    def _in_the_way(self, shown: str, need: str) -> Conflict:
        return Conflict(
            f"{self.path / shown} is {need}, where a folder is needed",
            hint="remove or rename it, or choose another destination",
        )

    def _open_dir(self, parts: list[str], *, create: bool) -> int:
        """A new descriptor for the folder ``parts`` below this one; creates missing folders if ``create``."""
        fd = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    # Made meanwhile, or something else stands there: the open below says which.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    nxt = self._open_child(fd, name, parts[: i + 1])
                except (NotADirectoryError, OSError) as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise self._what_stands(fd, name, parts[: i + 1]) from None
                    raise
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_child(self, fd: int, name: str, parts: list[str]) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise self._what_stands(fd, name, parts) from None
            raise

    def _what_stands(self, fd: int, name: str, parts: list[str]) -> Conflict:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        return self._in_the_way("/".join(parts), "a link" if stat.S_ISLNK(st.st_mode) else "a file")

    @contextmanager
    def _parent(self, rel: str, *, create: bool = True) -> Iterator[tuple[int, str]]:
        parts = split_rel(rel)
        key = "/".join(parts[:-1])
        if not key:
            yield self.fd, parts[-1]
            return
        fd = self._dirs.pop(key, None)
        if fd is None:
            try:
                fd = self._open_dir(parts[:-1], create=create)
            except FileNotFoundError:
                raise  # only without ``create``: the caller says what absent means
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc
            if len(self._dirs) >= _HELD_DIRS:
                os.close(self._dirs.pop(next(iter(self._dirs))))
        self._dirs[key] = fd
        yield fd, parts[-1]

    def check_dirs(self, rel: str) -> None:
        """Refuse (exit 4) if a link or a file stands where a folder of ``rel`` must be; creates nothing."""
        if rel in ("", "."):
            return
        parts = split_rel(rel)
        try:
            fd = self._open_dir(parts, create=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise write_error(exc, self.path / rel) from exc
        os.close(fd)

    def lstat(self, rel: str) -> os.stat_result | None:
        """``rel``'s own status (a link is not followed); None if absent. A link or a file where
        one of its folders must be is a :class:`Conflict`."""
        try:
            with self._parent(rel, create=False) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, rel: str) -> str | None:
        """The target of the link ``rel``; None if ``rel`` is absent or not a link."""
        try:
            with self._parent(rel, create=False) as (fd, name):
                return os.readlink(name, dir_fd=fd)
        except (FileNotFoundError, OSError):
            return None

    def read_fd(self, rel: str) -> int:
        """A read-only descriptor on the regular file ``rel`` (never through a link)."""
        with self._parent(rel, create=False) as (fd, name):
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
