"""Every file ``reproduce`` and ``env`` write, in one module, each through the contained-write helper.

Paths below a workspace come from the run's record (untrusted): they are written from a directory
descriptor of the workspace, never through a link, and names that climb out are refused.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath

from labvault.errors import IntegrityError
from labvault.storage.contained import Dest, write_text

__all__ = [
    "contained",
    "copy_file",
    "copy_tree",
    "remove_empty_dir",
    "remove_tree",
    "write_contained",
    "write_whole",
]


def contained(root: Path, rel: str) -> Path:
    """``root/rel`` after checking that ``rel`` stays inside and no existing component is a symlink."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise IntegrityError(f"the record names a path outside the workspace: {rel!r}")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise IntegrityError(f"{rel}: the workspace holds a symlink at {path.relative_to(root)}; refused")
    return path


def write_contained(root: Path, rel: str, data: bytes) -> None:
    """Write ``data`` to ``root/rel`` (folders made), never through a symlink."""
    contained(root, rel)
    with Dest.open(root) as dest:
        dest.write_file(rel, data)


def write_whole(path: Path, text: str) -> None:
    """A whole file at ``path`` (a path the user typed, or labvault's own): temp file, then rename."""
    write_text(path, text)


def _copy_into(source: Path, dest: Dest, rel: str) -> None:
    def fill(out: int) -> None:
        with open(source, "rb") as src, os.fdopen(os.dup(out), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    dest.write(rel, fill, mode=source.stat().st_mode & 0o777)


def copy_file(source: Path, root: Path, rel: str) -> Path:
    """Copy ``source`` (a regular file) to ``root/rel``."""
    path = contained(root, rel)
    with Dest.open(root) as dest:
        _copy_into(source, dest, rel)
    return path


def copy_tree(source: Path, dest: Path, *, ignore: str) -> None:
    """Copy the folder ``source`` (labvault's own package) into a new folder ``dest``; links are skipped."""
    with Dest.open(dest) as into:
        for folder, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not fnmatch.fnmatch(d, ignore))
            here = Path(folder).relative_to(source).as_posix()
            for name in sorted(files):
                path = Path(folder) / name
                if fnmatch.fnmatch(name, ignore) or path.is_symlink():
                    continue
                _copy_into(path, into, name if here == "." else f"{here}/{name}")


def remove_tree(path: Path) -> None:
    """Remove a workspace labvault made (a link at ``path`` itself is removed, not followed)."""
    if not path.parent.is_dir():
        return
    with Dest.open(path.parent, create=False) as parent:
        parent.remove(path.name)


def remove_empty_dir(path: Path) -> None:
    """Remove ``path`` if it is an empty folder."""
    with Dest.open(path.parent, create=False) as parent:
        parent.rmdir(path.name)
