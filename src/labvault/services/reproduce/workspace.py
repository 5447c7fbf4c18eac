"""The clean workspace of a rerun: code, data, config and undeclared files, in a folder of its own.

Code is a ``git clone --shared --no-checkout`` of the local repository (nothing is written into the
user's ``.git``), or a clone of the recorded remote when the commit is not local; then the recorded
commit is checked out and the recorded patch applied. Data is checked out from the recorded
snapshots at the paths they had, config restored byte for byte. The user's checkout is only read.

Every file written here stays inside the workspace: paths from the record are checked, and no write
follows a symlink (``files``: the one module of reproduce that writes files).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labvault.errors import ExternalError, IntegrityError, LabvaultError, NotFound
from labvault.refs import DataRef, Digest, parse_ref
from labvault.services.reproduce.files import contained, copy_file, remove_empty_dir, write_contained
from labvault.services.reproduce.record import Recipe
from labvault.services.snapshots.lockfile import read_lock
from labvault.services.snapshots.service import DataService
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["Placed", "Problem", "Workspace", "find_problems", "prepare_workspace", "project_repository"]

_TIMEOUT = 600


@dataclass(frozen=True, slots=True)
class Problem:
    """Something the record names that cannot be had; ``exit_code`` 3 (gone) or 5 (missing/corrupt)."""

    exit_code: int
    what: str


@dataclass(frozen=True, slots=True)
class Placed:
    kind: str  # input | pinned | config | untracked
    path: str  # relative to the workspace root
    source: str  # a data ref, a sha256
    note: str = ""  # "changed" / "gone" for undeclared files; "outside the project" for configs


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    cwd: Path
    placed: tuple[Placed, ...]


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    # The remote comes from a record (untrusted): no prompts, and no transport that runs commands (ext::).
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh"}
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_TIMEOUT, check=False, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExternalError(f"git {args[0]} failed: {exc}", hint="check that git is installed") from exc


def project_repository(project_root: Path) -> Path | None:
    """The top of the git work tree holding the project, or None."""
    out = _git(["rev-parse", "--show-toplevel"], project_root)
    return Path(out.stdout.decode().strip()) if out.returncode == 0 else None


def _has_commit(repo: Path | None, commit: str) -> bool:
    if repo is None:
        return False
    return _git(["--no-optional-locks", "cat-file", "-e", f"{commit}^{{commit}}"], repo).returncode == 0


def _snapshot_problems(data: DataService, objects: ObjectStore, ref: str) -> list[Problem]:
    try:
        snapshot = data.resolve(ref)
    except NotFound as exc:
        return [Problem(3, f"input {ref}: {exc.message}")]
    try:
        flat = data.flat(snapshot)
    except LabvaultError as exc:
        return [Problem(5, f"input {ref}: {exc.message}")]
    missing = sorted(rel for rel, entry in flat.files.items() if not objects.has(Digest(entry[0])))
    return [Problem(5, f"input {ref}: object of {rel} is missing from the vault") for rel in missing]


def find_problems(recipe: Recipe, *, objects: ObjectStore, data: DataService, repo: Path | None) -> list[Problem]:
    """Everything the record names that is gone or missing, all of it (nothing is written)."""
    problems: list[Problem] = []
    if not _has_commit(repo, recipe.commit) and recipe.remote is None:
        problems.append(
            Problem(3, f"commit {recipe.commit} is not in the local repository and the run recorded no remote")
        )
    if recipe.patch is not None and not objects.has(recipe.patch):
        problems.append(Problem(5, f"the uncommitted patch {recipe.patch} is missing from the vault"))
    for config in recipe.configs:
        if not objects.has(config.digest):
            problems.append(Problem(5, f"config {config.path} ({config.digest}) is missing from the vault"))
    for ref in recipe.inputs:
        if ref.startswith("data:"):
            problems += _snapshot_problems(data, objects, ref)
    return problems


def _clone(recipe: Recipe, repo: Path | None, dest: Path) -> None:
    if repo is not None and _has_commit(repo, recipe.commit):
        source, how = str(repo), "the local repository"
        args = ["clone", "--quiet", "--shared", "--no-checkout", "--", source, str(dest)]
    elif recipe.remote is not None:
        source, how = recipe.remote, f"the recorded remote {recipe.remote}"
        args = ["clone", "--quiet", "--no-checkout", "--", source, str(dest)]
    else:
        raise NotFound(f"commit {recipe.commit} is gone", hint="fetch it into the repository, then retry")
    out = _git(args, dest.parent)
    if out.returncode != 0:
        raise ExternalError(f"cloning {how} failed: {out.stderr.decode(errors='replace').strip()[:300]}")
    out = _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", recipe.commit], dest)
    if out.returncode != 0:
        raise NotFound(
            f"commit {recipe.commit} is not in {how}", hint="push or fetch the commit, then run reproduce again"
        )


def _apply_patch(recipe: Recipe, objects: ObjectStore, dest: Path) -> None:
    if recipe.patch is None:
        return
    data = objects.get_bytes(recipe.patch)  # verified: a corrupt patch is exit 5
    with tempfile.NamedTemporaryFile(prefix="labvault-patch-", suffix=".diff") as f:
        f.write(data)
        f.flush()
        out = _git(["apply", "--binary", "--whitespace=nowarn", f.name], dest)
    if out.returncode != 0:
        raise IntegrityError(
            f"the recorded patch does not apply to commit {recipe.commit}: "
            f"{out.stderr.decode(errors='replace').strip()[:300]}",
            hint="this is a bug in labvault: please report it with `labvault runs export`",
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _place_data(recipe: Recipe, data: DataService, root: Path) -> list[Placed]:
    lock = read_lock(root)  # the lock file as it was at the run, patch included
    by_ref = {str(e.ref): e.path for e in lock.values()}
    wanted: dict[str, tuple[str, str]] = {}
    for ref in recipe.inputs:
        parsed = parse_ref(ref)
        if not isinstance(parsed, DataRef):
            continue
        path = by_ref.get(ref) or data.resolve(ref).storage_uri
        wanted[path] = (ref, "input")
    for path in recipe.pinned:  # left out of the patch: restored from the snapshot the lock pinned
        if path in lock and path not in wanted:
            wanted[path] = (str(lock[path].ref), "pinned")
    placed = []
    for path, (ref, kind) in sorted(wanted.items()):
        dest = contained(root, path)
        # Verified bytes (a corrupt object is exit 5); a throwaway folder, so no stat cache for it.
        data.checkout(ref, dest, force=True, cache_stats=False)
        placed.append(Placed(kind, path, ref))
    return placed


def _place_untracked(recipe: Recipe, repo: Path | None, root: Path) -> list[Placed]:
    """Large untracked files were recorded without their bytes: bring the user's copy, and say
    whether it still has the recorded sha256."""
    placed = []
    for f in recipe.untracked:
        current = repo / f.path if repo is not None else None
        if current is None or not current.is_file() or current.is_symlink():
            placed.append(Placed("untracked", f.path, f.sha256, "gone"))
            continue
        dest = copy_file(current, root, f.path)
        note = "" if _sha256(dest) == f.sha256 else "changed"
        placed.append(Placed("untracked", f.path, f.sha256, note))
    return placed


def prepare_workspace(
    recipe: Recipe, *, objects: ObjectStore, data: DataService, repo: Path | None, dest: Path
) -> Workspace:
    """Clone, check out, patch, then place data, config and undeclared files in ``dest`` (made empty)."""
    dest.mkdir(parents=True, exist_ok=False)
    remove_empty_dir(dest)  # git clone makes it
    _clone(recipe, repo, dest)
    _apply_patch(recipe, objects, dest)
    placed = _place_data(recipe, data, dest)
    for config in recipe.configs:
        if config.project_path is None:
            placed.append(Placed("config", config.path, str(config.digest), "outside the project"))
            continue
        write_contained(dest, config.project_path, objects.get_bytes(config.digest))
        placed.append(Placed("config", config.project_path, str(config.digest)))
    placed += _place_untracked(recipe, repo, dest)
    cwd = dest if recipe.cwd == "." else contained(dest, recipe.cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    return Workspace(dest, cwd, tuple(placed))
