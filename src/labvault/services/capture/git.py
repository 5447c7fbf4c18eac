"""Git state of the working tree: commit, branch, remote, dirty flag and the full uncommitted patch.

The patch covers tracked changes (staged or not) and untracked files that are not ignored: a copy
of the index marks untracked files intent-to-add, so ``git diff HEAD --binary`` shows them as new
files without writing anything into the repository. ``git apply`` on a checkout of ``commit``
restores the exact tree, except for what is left out on purpose, which ``info["left_out"]`` lists:
the paths the caller excludes (the datasets ``labvault.lock`` pins, restored from their snapshots)
and untracked files larger than a limit, recorded by path, size and sha256 without their bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MAX_UNTRACKED", "GitState", "cached_git_state", "capture_git"]

_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_TIMEOUT = 30
_CHUNK = 8 * 1024 * 1024
#: Untracked files larger than this are recorded by path, size and sha256, without their bytes.
DEFAULT_MAX_UNTRACKED = 1024 * 1024


@dataclass(slots=True)
class GitState:
    info: dict[str, Any] = field(default_factory=dict)  # commit, branch, remote, dirty, root
    patch: bytes | None = None  # None when clean or unknown
    warnings: list[str] = field(default_factory=list)


def _find_root(start: Path) -> tuple[Path, Path, Path] | None:
    """(work tree root, this work tree's git dir, common git dir), walking up like git does."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return folder, dot, dot
        if dot.is_file():
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                gitdir = (folder / text[len("gitdir:") :].strip()).resolve()
                common = gitdir / "commondir"
                if common.is_file():
                    return folder, gitdir, (gitdir / common.read_text(encoding="utf-8").strip()).resolve()
                return folder, gitdir, gitdir
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


def capture_git(
    cwd: Path | None = None, *, exclude: Sequence[Path] = (), max_untracked: int = DEFAULT_MAX_UNTRACKED
) -> GitState:
    """The git state of the work tree holding ``cwd``; ``exclude`` are paths left out of it (and
    of ``dirty``), untracked files larger than ``max_untracked`` bytes are listed, not patched.

    A sweep of runs over an unchanged tree asks git once: the result is kept with a fingerprint of
    what git's own stat cache looks at (HEAD, refs, index, and the size, mtime and inode of every
    tracked file, of the untracked files and of their folders, where a new file shows). When the
    fingerprint is unchanged, so is the state; anything touched in the last 2 seconds, or a tree of
    more than 5,000 tracked files, is always asked afresh.
    """
    here = (cwd or Path.cwd()).resolve()
    found = _find_root(here)
    if found is None:
        return GitState(warnings=[f"git: {here} is not in a git repository; no commit recorded"])
    if shutil.which("git") is None:
        return GitState(warnings=["git: the git executable was not found; no commit recorded"])
    limits = _Limits(_relative(found[0], exclude), max_untracked)
    return _cached(*found, limits) or _capture(*found, limits)


def cached_git_state(
    cwd: Path | None = None, *, exclude: Sequence[Path] = (), max_untracked: int = DEFAULT_MAX_UNTRACKED
) -> GitState | None:
    """The kept state when the tree is unchanged since it was captured (no git process), else None."""
    found = _find_root((cwd or Path.cwd()).resolve())
    if found is None:
        return None
    return _cached(*found, _Limits(_relative(found[0], exclude), max_untracked))


@dataclass(frozen=True, slots=True)
class _Limits:
    exclude: tuple[str, ...]  # posix paths relative to the work tree root
    max_untracked: int

    def pathspecs(self) -> list[str]:
        """Arguments that limit a git command to the tree minus ``exclude`` (none when nothing is)."""
        if not self.exclude:
            return []
        return ["--", ":/", *(f":(top,literal,exclude){p}" for p in self.exclude)]


def _relative(root: Path, paths: Sequence[Path]) -> tuple[str, ...]:
    """The paths inside ``root``, relative to it; the root itself and paths outside are dropped."""
    out = set()
    for path in paths:
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            out.add(rel.as_posix())
    return tuple(sorted(out))


def _cached(root: Path, worktree_dir: Path, gitdir: Path, limits: _Limits) -> GitState | None:
    cached = _STATES.get(str(root))
    if cached is None or cached.limits != limits:
        return None
    fingerprint = _fingerprint(root, worktree_dir, gitdir, cached.tracked, cached.untracked)
    if fingerprint is None or fingerprint != cached.fingerprint:
        return None
    return GitState(dict(cached.state.info), cached.state.patch, list(cached.state.warnings))


@dataclass(slots=True)
class _Cached:
    limits: _Limits
    fingerprint: tuple[Any, ...]
    tracked: list[str]
    untracked: list[str]
    state: GitState


_STATES: dict[str, _Cached] = {}
_MAX_TRACKED = 5000
_RACY_SECONDS = 2.0


def _fingerprint(
    root: Path, worktree_dir: Path, gitdir: Path, tracked: list[str], untracked: list[str]
) -> tuple[Any, ...] | None:
    """Stats of everything whose change could change ``git status``; None when too recent to trust."""
    head = worktree_dir / "HEAD"
    try:
        head_text = head.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    paths = [head, worktree_dir / "index", gitdir / "packed-refs", gitdir / "info" / "exclude"]
    if head_text.startswith("ref: "):
        paths.append(gitdir / head_text[5:])
    folders = {root}
    for rel in (*tracked, *untracked):
        path = root / rel
        paths.append(path)
        parent = path.parent
        while parent not in folders and parent != root:
            folders.add(parent)
            parent = parent.parent
    paths.extend(folders)
    stats = [_stat(p) for p in paths]
    newest = max((st[1] for st in stats if st is not None), default=0)
    if newest / 1e9 > time.time() - _RACY_SECONDS:
        return None
    return (head_text, *stats)


def _tracked_files(root: Path) -> list[str] | None:
    out = _git(["--no-optional-locks", "ls-files", "-z"], root)
    if out.returncode != 0:
        return None
    names = [n.decode("utf-8", errors="surrogateescape") for n in out.stdout.split(b"\0") if n]
    return names if len(names) <= _MAX_TRACKED else None


def _capture(root: Path, worktree_dir: Path, gitdir: Path, limits: _Limits) -> GitState:
    state = GitState()
    try:
        tracked = _tracked_files(root)
        status = _git(
            [
                "--no-optional-locks",
                "status",
                "--porcelain=v2",
                "--branch",
                "-z",
                "--untracked-files=all",
                *limits.pathspecs(),
            ],
            root,
        )
        if status.returncode != 0:
            state.warnings.append(f"git: status failed: {status.stderr.decode(errors='replace').strip()[:200]}")
            return state
        commit = branch = None
        dirty = False
        changed: list[tuple[str, str]] = []
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
                changed.append((line.rsplit(" ", 1)[-1] if line[0] in "12u" else line[2:], line))
        state.info = {
            "commit": commit,
            "branch": branch,
            "remote": _scrub(_remote_url(gitdir)),
            "dirty": dirty,
            "root": str(root),
        }
        if commit is None:
            state.warnings.append("git: the repository has no commit yet; the patch is against the empty tree")
        untracked = [p for p, line in changed if line.startswith("?")]
        # Taken before the patch: a change made while it is built shows as a different fingerprint.
        fingerprint = _fingerprint(root, worktree_dir, gitdir, tracked, untracked) if tracked is not None else None
        large = _large_files(root, untracked, limits.max_untracked)
        if limits.exclude or large:
            state.info["left_out"] = {"pinned": list(limits.exclude), "untracked": large}
        if large:
            state.warnings.append(_large_warning(large, limits.max_untracked))
        if dirty:
            skip = _Limits((*limits.exclude, *(f["path"] for f in large)), limits.max_untracked)
            state.patch = _patch(root, worktree_dir, commit, skip.pathspecs()) or None
        if fingerprint is not None and tracked is not None:
            _STATES[str(root)] = _Cached(limits, fingerprint, tracked, untracked, state)
        else:
            _STATES.pop(str(root), None)
    except (OSError, subprocess.SubprocessError) as exc:
        state.warnings.append(f"git: {type(exc).__name__}: {exc}")
    return GitState(dict(state.info), state.patch, list(state.warnings))


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What git's own stat cache compares: a content change shows in size, mtime or inode."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _large_files(root: Path, untracked: list[str], limit: int) -> list[dict[str, Any]]:
    """Untracked regular files above ``limit`` bytes: path, size and sha256, read once each."""
    found = []
    for rel in untracked:
        path = root / rel
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or st.st_size <= limit:
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError:
            continue  # gone or unreadable since git listed it: git diff will say what it can
        found.append({"path": rel, "size": st.st_size, "sha256": f"sha256:{h.hexdigest()}"})
    return found


def _large_warning(large: list[dict[str, Any]], limit: int) -> str:
    named = ", ".join(f"{f['path']} ({f['size']} bytes)" for f in large[:20])
    more = f" and {len(large) - 20} more" if len(large) > 20 else ""
    files = "1 untracked file" if len(large) == 1 else f"{len(large)} untracked files"
    return (
        f"git: {files} larger than {limit} bytes left out of the patch (recorded by path, size and sha256 "
        f"only; the run cannot restore them): {named}{more}"
    )


def _patch(root: Path, worktree_dir: Path, commit: str | None, pathspecs: list[str]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="labvault-git-") as tmp:
        index = Path(tmp) / "index"
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        real = worktree_dir / "index"  # a linked work tree keeps its own index
        if real.is_file():
            shutil.copy2(real, index)  # with its mtime: git re-reads entries racily clean against it
        _git(["add", "--all", "--intent-to-add", *(pathspecs or ["--", ":/"])], root, env)
        diff = _git(["diff", "--binary", "--no-color", "--no-ext-diff", commit or _EMPTY_TREE, *pathspecs], root, env)
        if diff.returncode != 0:
            raise OSError(diff.stderr.decode(errors="replace").strip()[:200])
        return diff.stdout
