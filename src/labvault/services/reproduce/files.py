"""Every file ``reproduce`` and ``env`` write, in one module.

DESIGN.md rule 7 wants every write to go through the one contained-write helper
(``labvault.storage.contained``); this branch predates it, so the writes are gathered here, each
refusing what that helper refuses (symlinks, names that climb out), and become calls to it in one
place when the two meet.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path, PurePosixPath

from labvault.errors import IntegrityError

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
    path = contained(root, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    contained(root, rel)  # the folders just made are real ones
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_whole(path: Path, text: str) -> None:
    """A whole file at ``path`` (temp file beside it, then rename): never half written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def copy_file(source: Path, root: Path, rel: str) -> Path:
    dest = contained(root, rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest, follow_symlinks=False)
    return dest


def copy_tree(source: Path, dest: Path, *, ignore: str) -> None:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(ignore))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_empty_dir(path: Path) -> None:
    os.rmdir(path)
