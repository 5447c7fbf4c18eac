"""What a rerun needs, read from a run's record: command, code, data, config and variables.

The record is untrusted input (it may come from another vault): every path in it is checked to
stay inside the project before it names a file in the workspace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from labvault.entities import Run
from labvault.errors import Conflict, ValidationError
from labvault.refs import Digest

__all__ = ["RESTORED_VARIABLES", "ConfigFile", "Recipe", "UntrackedFile", "read_recipe"]

#: Variables set as recorded. PATH, HOME and device selection (CUDA_VISIBLE_DEVICES) never are.
RESTORED_VARIABLES = (
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
)


_COMMIT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: str  # as recorded
    digest: Digest
    project_path: str | None  # relative to the project root; None when it was outside the project


@dataclass(frozen=True, slots=True)
class UntrackedFile:
    """A file the run's patch left out for its size: recorded by path and sha256, without its bytes."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Recipe:
    run: Run
    command: tuple[str, ...]
    cwd: str  # relative to the project (git) root, posix; "." at the root
    root: str  # the project root the run had
    commit: str
    remote: str | None
    patch: Digest | None
    configs: tuple[ConfigFile, ...]
    inputs: tuple[str, ...]
    pinned: tuple[str, ...]
    untracked: tuple[UntrackedFile, ...]
    variables: Mapping[str, str]
    environment: Digest | None


def _inside(rel: str) -> str | None:
    """``rel`` as a clean relative posix path, or None when it is absolute or climbs out."""
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not rel:
        return None
    return path.as_posix()


def _relative(path: str, base: Path) -> str | None:
    try:
        rel = Path(path).relative_to(base)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else "."


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _variables(run: Run, env_doc: Mapping[str, Any] | None) -> dict[str, str]:
    cap = run.capture
    seeds = _dict(cap.get("seeds"))
    settings = _dict(seeds.get("settings"))
    out: dict[str, str] = {}
    recorded_env = _dict((env_doc or {}).get("env"))
    for name in RESTORED_VARIABLES:
        value = recorded_env.get(name) if isinstance(recorded_env, dict) else None
        if isinstance(value, str) and value != "<present>":
            out[name] = value
    threads = _dict(settings.get("threads"))
    out.update({k: str(v) for k, v in threads.items() if k in RESTORED_VARIABLES})
    if isinstance(settings.get("cublas_workspace_config"), str):
        out["CUBLAS_WORKSPACE_CONFIG"] = settings["cublas_workspace_config"]
    hashseed = cap.get("pythonhashseed") or seeds.get("pythonhashseed") or settings.get("pythonhashseed")
    if isinstance(hashseed, str):
        out["PYTHONHASHSEED"] = hashseed
    if run.seed is not None:
        out["LABVAULT_SEED"] = str(run.seed)
    return dict(sorted(out.items()))


def read_recipe(run: Run, env_doc: Mapping[str, Any] | None) -> Recipe:
    """The rerun recipe of a top run (a nested run's is its top run's); refuses runs that cannot be
    rerun, saying why."""
    if run.status == "running":
        raise Conflict(f"{run.ref} is still running", hint="reproduce it once it has ended")
    cap = run.capture
    command = cap.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise ValidationError(
            f"{run.ref} recorded no command to rerun (it was logged without one, or imported)",
            hint="only runs made by `labvault run` or `lv.start_run` in a script can be reproduced",
        )
    git = _dict(cap.get("git"))
    commit, root = git.get("commit"), git.get("root")
    if not isinstance(commit, str) or not isinstance(root, str):
        raise ValidationError(
            f"{run.ref} recorded no git commit, so its code cannot be restored",
            hint="runs made outside a git repository (or in one without a commit) cannot be reproduced",
        )
    if not _COMMIT_RE.fullmatch(commit):  # it reaches git's command line: hex only
        raise ValidationError(f"{run.ref} records a malformed commit {commit[:80]!r}", hint="it cannot be reproduced")
    cwd = _relative(str(cap.get("cwd") or root), Path(root))
    if cwd is None:
        raise ValidationError(f"{run.ref} ran outside its repository {root}", hint="it cannot be reproduced")
    configs = []
    for entry in cap.get("config") or []:
        given = str(entry.get("path", ""))
        full = Path(given) if Path(given).is_absolute() else Path(root) / cwd / given
        rel = _relative(os.path.normpath(full), Path(root))
        configs.append(ConfigFile(given, Digest(str(entry["sha256"]).removeprefix("sha256:")), rel and _inside(rel)))
    left_out = _dict(git.get("left_out"))
    untracked = tuple(
        UntrackedFile(p, str(f.get("sha256")), int(f.get("size", 0)))
        for f in left_out.get("untracked") or []
        if (p := _inside(str(f.get("path", "")))) is not None
    )
    patch = cap.get("patch")
    environment = cap.get("environment")
    return Recipe(
        run=run,
        command=tuple(command),
        cwd=cwd,
        root=root,
        commit=commit,
        remote=git.get("remote") if isinstance(git.get("remote"), str) else None,
        patch=Digest(patch.removeprefix("sha256:")) if isinstance(patch, str) else None,
        configs=tuple(configs),
        inputs=tuple(run.inputs),
        pinned=tuple(p for p in (left_out.get("pinned") or []) if _inside(str(p))),
        untracked=untracked,
        variables=_variables(run, env_doc),
        environment=Digest(environment.removeprefix("sha256:")) if isinstance(environment, str) else None,
    )
