"""Rerun the recorded command in the workspace as a new tracked run linked to the original.

The command runs with ``LABVAULT_RUN_ID`` and the variables naming the vault exported
(``LABVAULT_DIR``, or ``LABVAULT_URI`` through a server), so ``lv.start_run()`` inside it attaches to
the new run, exactly as under ``labvault run``. Its output is recorded, not streamed:
``reproduce --json`` prints one document and nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labvault.entities import Run, RunStatus
from labvault.errors import ExternalError, LabvaultError
from labvault.services.reproduce.record import Recipe
from labvault.services.reproduce.workspace import Workspace
from labvault.services.tracking.artifacts import store_path
from labvault.services.tracking.service import Tracking

__all__ = ["Rerun", "end_rerun", "rerun"]

#: Never carried from this process into the rerun: they name this process's run and vault.
_DROPPED = ("LABVAULT_RUN_ID", "LABVAULT_DIR", "LABVAULT_URI", "LABVAULT_SEED")


@dataclass(frozen=True, slots=True)
class Rerun:
    """A rerun whose command has exited; its run stays open until :func:`end_rerun` (the report is
    stored on it first)."""

    run: Run
    exit_code: int
    seconds: float  # the command's own wall time
    status: RunStatus
    ended: bool = False
    error: str | None = None  # why it failed, when more is known than its exit code


def end_rerun(runs: Tracking, done: Rerun) -> None:
    if not done.ended:
        error = None if done.exit_code == 0 else (done.error or f"exit code {done.exit_code}")
        runs.finish(done.run.id, status=done.status, exit_code=done.exit_code, error=error)


def _argv(recipe: Recipe, workspace: Workspace, python: str, recorded_python: str | None) -> list[str]:
    argv = list(recipe.command)
    # A script run by `python train.py` under lv.start_run records the interpreter's full path;
    # the rerun uses the chosen environment's interpreter instead.
    if recorded_python is not None and argv[0] == recorded_python:
        argv[0] = python
    # An absolute path to a file of the original project (`python -m pkg.train` records the
    # module's file) names the same file in the workspace, never the user's checkout. Paths the
    # workspace does not have (a virtual environment or the vault inside the project) stay.
    root = Path(recipe.root)
    for i, arg in enumerate(argv):
        path = Path(arg)
        if (i == 0 and arg == python) or not path.is_absolute() or root not in path.parents:
            continue
        if os.path.lexists(workspace.root / path.relative_to(root)):
            argv[i] = str(workspace.root / path.relative_to(root))
    return argv


def _environ(
    run_id: str, vault_env: Mapping[str, str], variables: Mapping[str, str], venv: Path | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(variables)
    if venv is not None:  # the rebuilt environment comes first, as its `activate` would do
        env["PATH"] = os.pathsep.join([str(venv / "bin"), *([env["PATH"]] if env.get("PATH") else [])])
        env["VIRTUAL_ENV"] = str(venv)
    env.update(vault_env)
    env["LABVAULT_RUN_ID"] = run_id
    return env


def rerun(
    runs: Tracking,
    recipe: Recipe,
    workspace: Workspace,
    *,
    vault_env: Mapping[str, str],
    recorded_python: str | None,
    venv: Path | None = None,
) -> Rerun:
    """Run the command, in the environment ``venv`` (else the current one), with ``vault_env`` (the
    variables that name the vault) exported; the returned run is still open (end it with :func:`end_rerun`)."""
    original = recipe.run
    python = str(venv / "bin" / "python") if venv is not None else sys.executable
    argv = _argv(recipe, workspace, python, recorded_python)
    run = runs.create(
        project=original.project,
        name=original.name,
        inputs=recipe.inputs,
        config=[str(workspace.root / c.project_path) for c in recipe.configs if c.project_path is not None],
        command=argv,
        cwd=workspace.cwd,
        seed=original.seed,
        tags={"reproduces": original.ref},
        capture=True,  # code, environment and config, on this machine also when the run lives on a server
    )
    env = _environ(run.id, vault_env, recipe.variables, venv)
    executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
    if executable is None or not os.path.exists(workspace.cwd / executable):
        runs.finish(run.id, status="failed", exit_code=127, error=f"command {argv[0]!r} not found")
        return Rerun(runs.get(run.id), 127, 0.0, "failed", ended=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                [executable, *argv[1:]], cwd=workspace.cwd, env=env, stdout=out, stderr=err, check=False
            )
        except OSError as exc:
            runs.finish(run.id, status="failed", exit_code=126, error=f"cannot start {argv[0]!r}: {exc}")
            raise ExternalError(f"cannot start the recorded command {argv[0]!r}: {exc}") from exc
        except BaseException:  # Ctrl-C reached the command too (same process group): record it, go on dying
            runs.finish(run.id, status="killed", exit_code=130, error="reproduce was interrupted")
            raise
        seconds = time.perf_counter() - started
        update = {}
        for stream, sink in (("stdout", out), ("stderr", err)):
            sink.seek(0)
            data = sink.read()
            if data:
                update[stream] = str(runs.log_output(run.id, data))
        if update:
            runs.update_capture(run.id, update)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    _store_outputs(runs, run.id, recipe, workspace)
    status: RunStatus = "finished" if code == 0 else ("killed" if proc.returncode < 0 else "failed")
    return Rerun(runs.get(run.id), code, seconds, status)


def _store_outputs(runs: Tracking, run_id: str, recipe: Recipe, workspace: Workspace) -> None:
    """The outputs the original declared (``labvault run --output``), from where it declared them:
    relative to the working directory, or an absolute path into the project mapped into the workspace."""
    warnings = []
    root = Path(recipe.root)
    for art in recipe.run.outputs:
        given = art.path or art.name
        if not Path(given).is_absolute():
            path = workspace.cwd / given
        elif root in Path(given).parents:
            path = workspace.root / Path(given).relative_to(root)
        else:
            continue  # outside the project: the rerun cannot have written it there; compared as missing
        if not path.exists() or workspace.root.resolve() not in path.resolve().parents:
            continue  # compared as missing: not produced, or (a hostile record) outside the workspace
        try:
            runs.record_artifact(run_id, store_path(runs.objects, path, name=art.name, role_path=given), role="output")
        except LabvaultError as exc:
            warnings.append(f"output {given}: {exc}")
    if warnings:
        runs.update_capture(run_id, {"warnings": warnings})
