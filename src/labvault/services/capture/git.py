"""Git state of the working tree: commit, branch, remote, dirty flag and the full uncommitted patch.

The patch covers tracked changes (staged or not) and untracked files that are not ignored: a copy
of the index marks untracked files intent-to-add, so ``git diff HEAD --binary`` shows them as new
files without writing anything into the repository. ``git apply`` on a checkout of ``commit``
restores the exact tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GitState", "capture_git"]

_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_TIMEOUT = 30
# root -> (fingerprint, patch): a sweep of runs over an unchanged dirty tree builds its patch once.
_PATCHES: dict[str, tuple[tuple[Any, ...], bytes]] = {}


@dataclass(slots=True)
class GitState:
    info: dict[str, Any] = field(default_factory=dict)  # commit, branch, remote, dirty, root
    patch: bytes | None = None  # None when clean or unknown
    warnings: list[str] = field(default_factory=list)


def _find_root(start: Path) -> tuple[Path, Path] | None:
    """(work tree root, common git dir), walking up like git does."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return folder, dot
        if dot.is_file():
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                gitdir = (folder / text[len("gitdir:") :].strip()).resolve()
                common = gitdir / "commondir"
                if common.is_file():
                    gitdir = (gitdir / common.read_text(encoding="utf-8").strip()).resolve()
                return folder, gitdir
    return None


def _remote_url(gitdir: Path) -> str | None:
    """``remote.origin.url`` (else the first remote's), read from the config file: no subprocess."""
    try:
        text = (gitdir / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    urls: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        head = re.match(r'^\[remote\s+"([^"]+)"\]$', line)
        if head:
            section = head.group(1)
            continue
        if line.startswith("["):
            section = None
            continue
        m = re.match(r"^url\s*=\s*(.+)$", line)
        if section and m and section not in urls:
            urls[section] = m.group(1).strip()
    return urls.get("origin") or next(iter(urls.values()), None)


def _scrub(url: str | None) -> str | None:
    """Drop credentials embedded in a remote URL (https://user:token@host/...)."""
    return re.sub(r"(://)[^/@]+@", r"\1", url) if url else url


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_TIMEOUT, check=False, env=env)


def capture_git(cwd: Path | None = None) -> GitState:
    state = GitState()
    here = (cwd or Path.cwd()).resolve()
    found = _find_root(here)
    if found is None:
        state.warnings.append(f"git: {here} is not in a git repository; no commit recorded")
        return state
    root, gitdir = found
    if shutil.which("git") is None:
        state.warnings.append("git: the git executable was not found; no commit recorded")
        return state
    try:
        status = _git(["--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z"], root)
        if status.returncode != 0:
            state.warnings.append(f"git: status failed: {status.stderr.decode(errors='replace').strip()[:200]}")
            return state
        commit = branch = None
        dirty = False
        changed: list[str] = []
        entries = status.stdout.split(b"\0")
        for entry in entries:
            line = entry.decode("utf-8", errors="replace")
            if line.startswith("# branch.oid "):
                oid = line.split(" ", 2)[2]
                commit = None if oid == "(initial)" else oid
            elif line.startswith("# branch.head "):
                head = line.split(" ", 2)[2]
                branch = None if head == "(detached)" else head
            elif line and not line.startswith("#"):
                dirty = True
                changed.append(line.rsplit(" ", 1)[-1] if line[0] in "12u" else line[2:])
        state.info = {
            "commit": commit,
            "branch": branch,
            "remote": _scrub(_remote_url(gitdir)),
            "dirty": dirty,
            "root": str(root),
        }
        if commit is None:
            state.warnings.append("git: the repository has no commit yet; the patch is against the empty tree")
        if dirty:
            fingerprint = (status.stdout, *(_stat(root / p) for p in changed))
            cached = _PATCHES.get(str(root))
            if cached is not None and cached[0] == fingerprint:
                state.patch = cached[1]
            else:
                state.patch = _patch(root, gitdir, commit)
                _PATCHES[str(root)] = (fingerprint, state.patch)
    except (OSError, subprocess.SubprocessError) as exc:
        state.warnings.append(f"git: {type(exc).__name__}: {exc}")
    return state


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What git's own stat cache compares: a content change shows in size, mtime or inode."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _patch(root: Path, gitdir: Path, commit: str | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="labvault-git-") as tmp:
        index = Path(tmp) / "index"
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        # GIT_DIR of a worktree keeps its own index; `git rev-parse --git-path index` finds it.
        where = _git(["rev-parse", "--git-path", "index"], root)
        real = Path(where.stdout.decode().strip()) if where.returncode == 0 else gitdir / "index"
        if not real.is_absolute():
            real = root / real
        if real.is_file():
            shutil.copyfile(real, index)
        _git(["add", "--all", "--intent-to-add"], root, env)
        diff = _git(["diff", "--binary", "--no-color", "--no-ext-diff", commit or _EMPTY_TREE], root, env)
        if diff.returncode != 0:
            raise OSError(diff.stderr.decode(errors="replace").strip()[:200])
        return diff.stdout
