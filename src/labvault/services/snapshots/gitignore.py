"""Keeping a snapshotted path out of git: one anchored line in the project root's ``.gitignore``.

The data is restored from its snapshot (``labvault.lock`` pins it), so git need not hold it; a data
file git does not ignore would otherwise show up as untracked in every run's code patch. When git
already tracks the path, ignoring it changes nothing: the caller warns, with the command that stops
tracking it (``git rm --cached``), and leaves the decision to the user.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labvault.errors import StorageError
from labvault.storage.contained import write_text
from labvault.storage.locks import file_lock

__all__ = ["GitIgnored", "gitignore_line", "ignore_in_git"]

_TIMEOUT = 30
_SPECIAL = re.compile(r"([\\*?\[])")


@dataclass(frozen=True, slots=True)
class GitIgnored:
    """What :func:`ignore_in_git` did for one path (relative to the project root, posix)."""

    path: str
    line: str  # the anchored .gitignore line for the path
    added: bool  # the line was appended to .gitignore
    reason: str | None = None  # why it was not, when it was not
    tracked: tuple[str, ...] = ()  # files below the path that git tracks (ignoring does not untrack them)


def gitignore_line(key: str) -> str:
    """``/data/raw``: the path anchored at the .gitignore's folder, with git's pattern characters escaped."""
    line = "/" + _SPECIAL.sub(r"\\\1", key)
    if line.endswith(" "):
        line = line[:-1] + "\\ "
    return line


def ignore_in_git(root: Path, vault_dir: Path, key: str) -> GitIgnored:
    """Append the anchored line for ``key`` to ``ROOT/.gitignore`` unless git already ignores it."""
    line = gitignore_line(key)
    if key in ("", "."):
        return GitIgnored(key, line, False, "it is the project root")
    tracked = _tracked(root, key)
    gitignore = root / ".gitignore"
    if gitignore.is_symlink():
        return GitIgnored(key, line, False, ".gitignore is a symlink, which labvault does not write through", tracked)
    (vault_dir / "locks").mkdir(parents=True, exist_ok=True)
    with file_lock(vault_dir / "locks" / "gitignore.lock", timeout=60, what=".gitignore"):
        try:
            existing = gitignore.read_text(encoding="utf-8")
        except FileNotFoundError:
            existing = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"cannot read {gitignore}: {exc}") from exc
        lines = {x.rstrip("\r") for x in existing.splitlines()}
        if line in lines or f"{line}/" in lines:
            return GitIgnored(key, line, False, "already in .gitignore", tracked)
        if _ignored_by_git(root, key):
            return GitIgnored(key, line, False, "git already ignores it", tracked)
        sep = "" if not existing or existing.endswith("\n") else "\n"
        _replace(gitignore, f"{existing}{sep}{line}\n")
    return GitIgnored(key, line, True, None, tracked)


def _replace(path: Path, text: str) -> None:
    write_text(path, text, durable=True)


def _git(root: Path, args: list[str]) -> subprocess.CompletedProcess[bytes] | None:
    """A git command in ``root``; None when git is not installed or did not answer."""
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=root, capture_output=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _ignored_by_git(root: Path, key: str) -> bool:
    """Whether a rule git already has ignores the path (outside a repository: no rule does)."""
    done = _git(root, ["check-ignore", "-q", "--no-index", "--", key])
    return done is not None and done.returncode == 0


def _tracked(root: Path, key: str) -> tuple[str, ...]:
    """Files git tracks at or below the path (none outside a repository)."""
    done = _git(root, ["ls-files", "-z", "--", f":(literal){key}"])  # relative to the project root
    if done is None or done.returncode != 0:
        return ()
    return tuple(n.decode("utf-8", errors="replace") for n in done.stdout.split(b"\0") if n)
