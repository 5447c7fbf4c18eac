"""Walking a dataset folder: files with their stat, symlinks as links, ``.labvaultignore`` rules.

Kept free of heavy imports: ``data status`` runs this on every call. ``pathspec`` is imported only
when a ``.labvaultignore`` file exists. Symlinks inside the folder are recorded, never followed;
sockets, FIFOs and devices are refused (they have no bytes to snapshot).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.safeload import read_limited

__all__ = ["IGNORE_FILE", "Scan", "StatKey", "scan_path"]

IGNORE_FILE = ".labvaultignore"

#: (inode, size, mtime_ns, ctime_ns): the stat cache's key for "unchanged since hashed".
StatKey = tuple[int, int, int, int]


@dataclass(slots=True)
class Scan:
    """A dataset's working copy: relative posix paths, never absolute ones."""

    root: Path
    is_file: bool  # a single-file dataset: ``files`` holds one entry named after the file
    files: dict[str, StatKey] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # path -> target, as read, not followed
    dirs: list[str] = field(default_factory=list)  # every folder below the root (for empty ones)

    def full_path(self, rel: str) -> str:
        # Plain strings: building 20,000 Path objects costs more than hashing small files.
        return str(self.root) if self.is_file else f"{self.root}/{rel}"


def _special(mode: int) -> str | None:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def _check_utf8(path: str, *, target: str | None = None) -> None:
    """Refuse a name (or link target) that is not UTF-8: trees, the lock file and the database hold text."""
    try:
        (path if target is None else target).encode("utf-8")
    except UnicodeEncodeError:
        what = "file name" if target is None else f"link target '{_escaped(target)}' of"
        raise ValidationError(
            f"{what} '{_escaped(path)}' is not valid UTF-8", hint=f"rename it, or exclude it in {IGNORE_FILE}"
        ) from None


def _escaped(name: str) -> str:
    # Undecodable bytes as \xff, control characters as \n..., so the one-line message shows the real name.
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _load_ignore(path: str) -> Any:
    import pathspec

    hint = f"fix {IGNORE_FILE}: it holds gitignore patterns, one a line, in UTF-8"
    try:
        text = read_limited(Path(path), hint=hint).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text", hint=hint) from None
    try:
        return pathspec.GitIgnoreSpec.from_lines(text.splitlines())
    except (ValueError, re.error) as exc:
        raise ValidationError(f"{path}: {exc}", hint=hint) from None


def scan_path(root: Path, *, skip: tuple[int, int] | None = None) -> Scan:
    """Walk ``root`` (a file or a folder). ``skip`` is the (st_dev, st_ino) of a folder never entered
    (the vault itself, when a dataset folder contains it)."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise ValidationError(f"{root}: no such file or folder", hint="check the path") from None
    except OSError as exc:
        raise ValidationError(f"{root}: cannot read ({exc.strerror})", hint="check the permissions") from exc
    _check_utf8(str(root))  # the dataset's own path is recorded too (its lock key)
    if stat.S_ISREG(st.st_mode):
        scan = Scan(root, True)
        scan.files[root.name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return scan
    if not stat.S_ISDIR(st.st_mode):
        what = _special(st.st_mode) or "not a regular file or folder"
        raise ValidationError(f"{root} is {what}", hint="snapshot regular files and folders")
    scan = Scan(root, False)
    # (rel dir, ignore specs active there as (base rel dir, spec))
    stack: list[tuple[str, list[tuple[str, Any]]]] = [("", [])]
    files, links, dirs = scan.files, scan.links, scan.dirs
    while stack:
        rel, specs = stack.pop()
        here = os.path.join(root, rel) if rel else str(root)
        try:
            fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ValidationError(f"{here}: cannot read ({exc.strerror})", hint="check the permissions") from exc
        try:
            names = os.listdir(fd)
            if IGNORE_FILE in names:
                specs = [*specs, (rel, _load_ignore(os.path.join(here, IGNORE_FILE)))]
            prefix = rel + "/" if rel else ""
            for name in names:
                try:
                    est = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished while we walked
                mode = est.st_mode
                path = prefix + name
                if not name.isascii():
                    _check_utf8(os.path.join(here, name))
                is_dir = stat.S_ISDIR(mode)
                if specs and _ignored(specs, path, is_dir):
                    continue
                if stat.S_ISREG(mode):
                    files[path] = (est.st_ino, est.st_size, est.st_mtime_ns, est.st_ctime_ns)
                elif is_dir:
                    if skip is not None and (est.st_dev, est.st_ino) == skip:
                        continue
                    dirs.append(path)
                    stack.append((path, specs))
                elif stat.S_ISLNK(mode):
                    links[path] = os.readlink(name, dir_fd=fd)
                    if not links[path].isascii():
                        _check_utf8(os.path.join(here, name), target=links[path])
                else:
                    raise ValidationError(
                        f"{os.path.join(here, name)} is {_special(mode)}",
                        hint=f"remove it, or exclude it in {IGNORE_FILE}",
                    )
        except PermissionError as exc:
            raise ValidationError(f"{here}: cannot read ({exc.strerror})", hint="check the permissions") from exc
        finally:
            os.close(fd)
    return scan


def _ignored(specs: list[tuple[str, Any]], path: str, is_dir: bool) -> bool:
    for base, spec in specs:
        sub = path[len(base) + 1 :] if base else path
        if spec.match_file(sub + "/" if is_dir else sub):
            return True
    return False
