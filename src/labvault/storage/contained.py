"""Contained writes: every file labvault writes goes through here.

A destination is opened once, following links only in the part of the path the user typed (``-o
deploy`` where ``deploy -> /srv/models`` is legitimate). Every path below it comes from stored data
(a tree entry, a lock-file key, a model or version name) and is resolved component by component
from directory descriptors with ``O_NOFOLLOW``: a link or a file standing where a folder must be is
a file in the way (exit 4, named), never followed, and no name can climb out (``..``, ``/``, NUL
are refused). That resolving half of :class:`Dest` is :mod:`labvault.storage.contained_paths`.
A file is written to a temp file beside its final name, then renamed into place, so a reader never
sees it half written and a failed write leaves nothing behind.

Only the object store's own temp-and-rename internals write files without this module; a test
(``tests/storage/test_contained.py``) scans ``src/`` to keep it so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from labvault.errors import Conflict, StorageError
from labvault.storage.contained_paths import DestPaths, split_rel, write_error
from labvault.storage.objects.fileio import write_all

__all__ = ["Dest", "replace_file", "write_text"]

_T = TypeVar("_T")


def _lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class Dest(DestPaths):
    """A destination folder held open by descriptor; paths below it never follow a link.

    Use as a context manager (``with Dest.open(path) as dest: dest.write_file("a/b.txt", data)``).
    """

    def sub(self, rel: str, *, create: bool = True) -> Dest:
        """The folder ``rel`` below this one, as a destination of its own (links are never followed)."""
        if rel in ("", "."):
            return Dest(os.dup(self.fd), self.path)
        try:
            return Dest(self._open_dir(split_rel(rel), create=create), self.path / rel)
        except OSError as exc:
            raise write_error(exc, self.path / rel) from exc

    # -- writing --------------------------------------------------------------------------------
    def write(self, rel: str, fill: Callable[[int], _T], *, mode: int = 0o644, overwrite: bool = True) -> _T:
        """Create ``rel``'s temp file, let ``fill`` write it (by descriptor), then rename it into place.

        If ``fill`` raises, the temp file is removed and nothing is renamed: a verified write passes
        a ``fill`` that raises on a hash mismatch. A folder at ``rel`` is a conflict; a file or a link
        there is replaced (never written through), unless ``overwrite`` is False.
        """
        with self._parent(rel) as (pfd, name):
            tmp = f".{name[:200]}.labvault-{secrets.token_hex(4)}"
            try:
                out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=pfd)
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc
            try:
                try:
                    result = fill(out)
                finally:
                    os.close(out)
                self._rename(pfd, tmp, name, rel, overwrite=overwrite)
            except BaseException as exc:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=pfd)
                if isinstance(exc, OSError):
                    raise write_error(exc, self.path / rel) from exc
                raise
            return result

    def _rename(self, pfd: int, tmp: str, name: str, rel: str, *, overwrite: bool) -> None:
        st = None if overwrite else _lstat_at(pfd, name)
        if st is None:
            try:
                os.replace(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                return
            except IsADirectoryError:
                st = _lstat_at(pfd, name)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                st = _lstat_at(pfd, name)
        what = "a folder" if st is not None and stat.S_ISDIR(st.st_mode) else "a file"
        raise Conflict(f"{self.path / rel} is {what} in the way", hint="remove it, or choose another destination")

    def write_file(self, rel: str, data: bytes, *, overwrite: bool = True, durable: bool = False) -> None:
        """``data`` at ``rel``; ``durable`` makes its bytes durable before the rename (a file kept in git)."""

        def fill(fd: int) -> None:
            write_all(fd, data)
            if durable:
                os.fsync(fd)

        self.write(rel, fill, overwrite=overwrite)

    def create_file(self, rel: str, data: bytes, *, mode: int = 0o644) -> None:
        """``data`` written straight at ``rel``, which must not exist (``O_EXCL``; never through a link).

        No temp file and no rename: only for a folder this process has just made under a temp name
        (:meth:`temp_dir`) and renames into place once complete, where nobody sees a file half
        written. A failed write removes the file.
        """
        with self._parent(rel) as (pfd, name):
            try:
                out = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=pfd
                )
            except FileExistsError:
                raise Conflict(
                    f"{self.path / rel} is in the way", hint="remove it, or choose another destination"
                ) from None
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc
            try:
                try:
                    write_all(out, data)
                finally:
                    os.close(out)
            except BaseException as exc:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=pfd)
                if isinstance(exc, OSError):
                    raise write_error(exc, self.path / rel) from exc
                raise

    def temp_dir(self, rel: str) -> str:
        """Make a new, empty folder beside ``rel`` under a temp name; its path below this folder.

        Fill it, then :meth:`rename` it onto ``rel``: a reader sees the whole folder or none of it.
        """
        with self._parent(rel) as (pfd, name):
            tmp = f".{name[:200]}.labvault-{secrets.token_hex(4)}"
            try:
                os.mkdir(tmp, 0o777, dir_fd=pfd)
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc
        parent = rel.rpartition("/")[0]
        return f"{parent}/{tmp}" if parent else tmp

    @contextmanager
    def built_dir(self, rel: str, *, replace: bool = False) -> Iterator[Dest]:
        """A new folder for ``rel``, filled in the block under a temp name (:meth:`temp_dir`), then
        renamed onto ``rel`` (what was there removed first when ``replace``); removed on any error,
        so that ``rel`` is seen whole or not at all."""
        tmp = self.temp_dir(rel)
        try:
            with self.sub(tmp, create=False) as base:
                yield base
            if replace:
                self.remove(rel)
            self.rename(tmp, rel)
        except BaseException:
            self.remove(tmp)
            raise

    def _place(self, rel: str, make: Callable[[str, int], None]) -> None:
        """``make(tmp, parent_fd)`` creates a temp entry beside ``rel``; it is then renamed onto ``rel``."""
        with self._parent(rel) as (pfd, name):
            tmp = f".{name[:200]}.labvault-{secrets.token_hex(4)}"
            try:
                make(tmp, pfd)
                try:
                    self._rename(pfd, tmp, name, rel, overwrite=True)
                except BaseException:
                    os.unlink(tmp, dir_fd=pfd)
                    raise
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc

    def hardlink(self, rel: str, source: Path | str) -> None:
        """Put a hard link to ``source`` (an object file of the store) at ``rel``, atomically."""
        self._place(rel, lambda tmp, pfd: os.link(source, tmp, dst_dir_fd=pfd))

    def symlink(self, rel: str, target: str) -> None:
        """Put a link at ``rel`` (pointing at ``target``, which is stored, never followed here)."""
        self._place(rel, lambda tmp, pfd: os.symlink(target, tmp, dir_fd=pfd))

    def mkdir(self, rel: str) -> None:
        """Make the folder ``rel`` and its parents; a file or a link in the way is removed first."""
        if rel in ("", "."):
            return
        with self._parent(rel) as (pfd, name):
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    return
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                pass
            try:
                os.mkdir(name, 0o777, dir_fd=pfd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise write_error(exc, self.path / rel) from exc

    def remove(self, rel: str) -> None:
        """Remove ``rel``: a file, a link (not what it points at) or a whole folder; absent is fine."""
        try:
            with self._parent(rel, create=False) as (pfd, name):
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if stat.S_ISDIR(st.st_mode):
                    # The fd-based rmtree never follows a link, not even one swapped in meanwhile.
                    shutil.rmtree(name, dir_fd=pfd)
                else:
                    os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise write_error(exc, self.path / rel) from exc
        finally:
            self._forget_dirs()

    def rmdir(self, rel: str) -> bool:
        """Remove the folder ``rel`` if it is empty; True if it went."""
        try:
            with self._parent(rel, create=False) as (pfd, name):
                os.rmdir(name, dir_fd=pfd)
            return True
        except (OSError, Conflict, StorageError):
            return False
        finally:
            self._forget_dirs()

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, both below this folder (a folder at ``dst`` is replaced only if empty)."""
        with self._parent(src, create=False) as (sfd, sname), self._parent(dst) as (dfd, dname):
            try:
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise write_error(exc, self.path / dst) from exc
        self._forget_dirs()


def replace_file(path: Path | str, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` (a path the user typed, or labvault's own) atomically.

    Links in the folders of ``path`` are followed (they were typed, or are labvault's own); a link
    at ``path`` itself is replaced, not written through.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    with Dest.open(path.parent, create=False) as dest:
        dest.write_file(path.name, data, durable=durable)


def write_text(path: Path | str, text: str, *, durable: bool = False) -> None:
    """:func:`replace_file` for UTF-8 text."""
    replace_file(path, text.encode("utf-8"), durable=durable)
