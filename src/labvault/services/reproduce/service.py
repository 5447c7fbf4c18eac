"""``reproduce``: rebuild a past run's workspace, rerun it, and judge the result against the record.

Order: refuse what cannot be rerun (bad usage, exit 2; a running run, exit 4), list everything the
record names that is gone (exit 3) or missing (exit 5) before anything runs, then clone, place data
and config, rerun (twice with ``twice``), compare, store the report on the (first) rerun, end it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from labvault.entities import ModelVersion, RegisteredModel, Run
from labvault.errors import Conflict, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest, ModelRef, parse_ref
from labvault.services.reproduce.compare import ArtifactCheck, MetricCheck, compare_artifacts, compare_metrics
from labvault.services.reproduce.envbuild import BuiltEnvironment, EnvironmentUnavailable, build_environment
from labvault.services.reproduce.environment import (
    EnvironmentDrift,
    current_environment,
    environment_drift,
    load_environment,
    same_python_minor,
)
from labvault.services.reproduce.files import remove_tree
from labvault.services.reproduce.nested import counterpart, top_run
from labvault.services.reproduce.pipeline import (
    PipelineRerun,
    compare_stages,
    is_pipeline_run,
    rerun_pipeline,
    stage_tolerances,
)
from labvault.services.reproduce.record import Recipe, read_recipe
from labvault.services.reproduce.report import ReproduceReport, render_markdown, report_json
from labvault.services.reproduce.rerun import Rerun, end_rerun, rerun
from labvault.services.reproduce.settings import Tolerances, load_tolerances
from labvault.services.reproduce.workspace import Placed, find_problems, prepare_workspace, project_repository
from labvault.services.snapshots.service import DataService
from labvault.services.tracking.service import Tracking

__all__ = ["ENV_MODES", "ModelIndex", "expand_model_shorthand", "reproduce"]

ENV_MODES = ("auto", "current", "rebuild")

Check = ArtifactCheck | MetricCheck


class ModelIndex(Protocol):
    """What reproduce reads of a registry (a local vault's or a server's): a version, and the models."""

    def resolve(self, ref: str, /) -> ModelVersion: ...

    def models(self) -> Sequence[RegisteredModel]: ...


def expand_model_shorthand(ref: str, *, project: str, models: Sequence[str]) -> str:
    """``@VERSION`` or ``@ALIAS`` -> ``project/model@...`` for the default project's single model.

    ``models`` are the registered model names (``project/model``)."""
    tail = ref[1:]
    if not tail or "@" in tail or "/" in tail:
        raise ValidationError(f"{ref!r} is not a version or alias", hint="write @1.2.0, @prod or project/model@1.2.0")
    mine = sorted(m for m in models if m.split("/", 1)[0] == project)
    if not mine:
        others = ", ".join(sorted(models)[:10]) or "none registered"
        raise NotFound(f"no model in project {project} for {ref}", hint=f"name one in full: {others}")
    if len(mine) > 1:
        shown = ", ".join(f"{m}{ref}" for m in mine[:10]) + (" ..." if len(mine) > 10 else "")
        raise ValidationError(f"{ref} is ambiguous: project {project} has {len(mine)} models", hint=f"write {shown}")
    return str(parse_ref(f"{mine[0]}{ref}", expect=ModelRef))


def _resolve_run(runs: Tracking, ref: str, registry: ModelIndex) -> Run:
    if "/" in ref and not ref.startswith("run:"):
        parsed = parse_ref(ref, expect=ModelRef)
        run_id = registry.resolve(str(parsed)).run_id
        if run_id is None:
            raise ValidationError(
                f"{ref} records no source run", hint="only versions registered from a run can be reproduced"
            )
        return runs.get(run_id)
    return runs.get(ref)


def _summary(drift: EnvironmentDrift) -> str:
    parts = [f"Python {drift.python[0]} recorded, {drift.python[1]} here"] if drift.python else []
    n = len(drift.packages())
    if n:
        parts.append(f"{n} package difference{'s' if n != 1 else ''}")
    return ", ".join(parts)


def _environment_mode(env: str, drift: EnvironmentDrift | None) -> tuple[str, str]:
    if drift is None:
        if env == "rebuild":
            raise ValidationError("the run recorded no environment to rebuild", hint="use --env current")
        return "current", "the run recorded no environment"
    if env == "current":
        return "current", "asked for" + (f"; {_summary(drift)}" if not drift.empty else "; it matches the record")
    if env == "rebuild":
        return "rebuild", "asked for"
    if same_python_minor(drift) and not drift.packages():
        return "current", "Python major.minor and every package match the record"
    return "rebuild", _summary(drift)


def _name(check: Check) -> str:
    return check.name if isinstance(check, ArtifactCheck) else check.key


def _causes(
    recorded: Run,
    first: Rerun,
    checks: Sequence[Check],
    placed: Sequence[Placed],
    twice: Sequence[Check],
    drift: EnvironmentDrift | None,
) -> list[str]:
    out = []
    for p in placed:
        if p.kind == "untracked" and p.note:
            what = "is gone" if p.note == "gone" else "has changed"
            out.append(f"undeclared input: {p.path} (recorded by path and {p.source}, without its bytes) {what}")
    if twice:
        names = ", ".join(_name(c) for c in twice[:10])
        out.append(f"nondeterminism: two reruns in the same environment disagree on {names}")
    if drift is not None and not drift.empty:
        items = ([f"Python {drift.python[0]} -> {drift.python[1]}"] if drift.python else []) + drift.packages()
        more = f" and {len(items) - 20} more" if len(items) > 20 else ""
        out.append(f"environment drift: {', '.join(items[:20])}{more}")
    if not out:
        different = [_name(c) for c in checks if c.verdict == "DIFFERENT"]
        if recorded.exit_code != first.exit_code:
            different.append(f"exit code {first.exit_code} (recorded {recorded.exit_code})")
        out.append(
            "unknown: code, data, config and variables were restored as recorded and the environment matches; "
            f"differs: {', '.join(different[:10])}"
        )
    return out


def _judge(
    runs: Tracking,
    recipe: Recipe,
    reruns: Sequence[Rerun],
    placed: tuple[Placed, ...],
    tolerances: Tolerances,
    drift: EnvironmentDrift | None,
    base: dict[str, Any],
    chain: list[Run],
) -> ReproduceReport:
    recorded = chain[-1] if chain else recipe.run
    targets = [_target(runs, r, chain) for r in reruns]
    first = targets[0] or dataclasses.replace(reruns[0].run, metrics={}, artifacts=())
    pipeline = is_pipeline_run(recipe.run) and not chain  # a whole pipeline run: stage by stage
    if is_pipeline_run(recipe.run):
        tolerances = stage_tolerances(tolerances)
    if pipeline:
        artifacts, metrics = compare_stages(runs, recorded, first, tolerances)
    else:
        artifacts = compare_artifacts(runs.objects, recorded, first, tolerances.ignore_artifacts)
        metrics = compare_metrics(recorded, first, tolerances)
    checks: list[Check] = [*artifacts, *metrics]
    twice: list[Check] = []
    if len(reruns) > 1:
        second = targets[1] or dataclasses.replace(reruns[1].run, metrics={}, artifacts=())
        if pipeline:
            stage_artifacts, stage_metrics = compare_stages(runs, first, second, tolerances)
            between: list[Check] = [*stage_artifacts, *stage_metrics]
        else:
            between = [
                *compare_artifacts(runs.objects, first, second, tolerances.ignore_artifacts),
                *compare_metrics(first, second, tolerances),
            ]
        twice = [c for c in between if c.verdict == "DIFFERENT"]
        if reruns[1].exit_code != reruns[0].exit_code:
            twice.append(MetricCheck("exit code", "DIFFERENT", reruns[0].exit_code, reruns[1].exit_code))
    top_code = recipe.run.exit_code
    ok = all(c.verdict != "DIFFERENT" for c in checks) and reruns[0].exit_code == top_code and not twice
    causes = [] if ok else _causes(recipe.run, reruns[0], checks, placed, twice, drift)
    if chain and targets[0] is None:
        causes.insert(0, f"the rerun made no nested run at {' / '.join(r.name for r in chain)}")
    if not ok and reruns[0].error:
        causes.insert(0, reruns[0].error)  # why the pipeline (or which stage) failed
    return ReproduceReport(
        verdict="reproduced" if ok else "not reproduced",
        exit_code=0 if ok else 1,
        reruns=tuple(r.run.ref for r in reruns),
        exit_codes=(top_code, *(r.exit_code for r in reruns)),
        compared=tuple(t.ref for t in targets if t is not None) if chain else (),
        artifacts=tuple(artifacts),
        metrics=tuple(metrics),
        causes=tuple(causes),
        restored=placed,
        twice=tuple(twice),
        **base,
    )


def _target(runs: Tracking, done: Rerun, chain: list[Run]) -> Run | None:
    """What is compared with the original: the rerun itself, or for a nested run its counterpart."""
    return counterpart(runs, done.run.id, chain) if chain else runs.get(done.run.id)


def _env_digest(run: Run) -> Digest | None:
    ref = run.capture.get("environment")
    try:
        return Digest(ref.removeprefix("sha256:")) if isinstance(ref, str) else None
    except ValidationError:
        return None


def _check_workdir(workdir: Path | None, project_root: Path) -> Path | None:
    if workdir is None:
        return None
    folder = workdir.expanduser().resolve()
    root = project_root.resolve()
    if folder == root or root in folder.parents or folder in root.parents:
        raise ValidationError(f"--workdir {folder} overlaps the project {root}", hint="give a folder outside it")
    used = [p.name for p in (folder / "rerun-1", folder / "rerun-2") if os.path.lexists(p)]
    if used:
        raise ValidationError(
            f"--workdir {folder} already holds {', '.join(used)}", hint="remove it, or give another folder"
        )
    return folder


def reproduce(
    *,
    runs: Tracking,
    data: DataService,
    registry: ModelIndex,
    project_root: Path,
    envs_dir: Path,
    vault_env: Mapping[str, str],
    ref: str,
    env: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    ignore_metrics: Sequence[str] = (),
    ignore_artifacts: Sequence[str] = (),
    twice: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    pipeline_rerun: PipelineRerun | None = None,
) -> ReproduceReport:
    """Rerun ``ref`` (a run, or a model version's source run) on a clean workspace and judge it.

    ``envs_dir`` holds the environments ``--env rebuild`` builds; ``vault_env`` are the variables that
    let the rerun's command reach this vault (``LABVAULT_DIR``, or ``LABVAULT_URI`` through a server).
    Without ``pipeline_rerun`` a pipeline run is refused (exit 2): its stages rerun against a local vault.
    """
    started = time.perf_counter()
    if env not in ENV_MODES:
        raise ValidationError(f"unknown environment mode {env!r}", hint="choose auto, current or rebuild")
    tolerances = load_tolerances(
        project_root, rtol=rtol, atol=atol, ignore_metrics=ignore_metrics, ignore_artifacts=ignore_artifacts
    )
    folder = _check_workdir(Path(workdir) if workdir is not None else None, project_root)
    if ref.startswith("@"):  # the default project (the project root's folder name) has one model
        ref = expand_model_shorthand(ref, project=project_root.name, models=[m.ref for m in registry.models()])
    recorded = _resolve_run(runs, ref, registry)
    if recorded.status == "running":
        raise Conflict(f"{recorded.ref} is still running", hint="reproduce it once it has ended")
    top, chain = top_run(runs, recorded)  # a nested run is reproduced by rerunning its process
    if pipeline_rerun is None and is_pipeline_run(top):
        raise ValidationError(
            f"{top.ref} is a pipeline run: reproducing it reruns its stages, which runs against a local vault",
            hint="pull it into a local vault (`labvault pull`) and reproduce it there",
        )
    env_digest = _env_digest(top)
    recorded_env = load_environment(runs.objects, env_digest)
    recipe = read_recipe(top, recorded_env)
    if env == "rebuild" and recorded_env is None:
        raise ValidationError(f"{top.ref} recorded no environment to rebuild", hint="use --env current")
    repo = project_repository(project_root)
    # This machine's environment is read (for the drift and the rerun's own record) while the
    # workspace is cloned and its data checked out: the two do not wait on each other.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labvault-env")
    here = pool.submit(current_environment, project_root) if recorded_env else None
    pool.shutdown(wait=False)

    def settle() -> tuple[dict[str, Any], BuiltEnvironment | None, list[str]]:
        """The report's environment fields, the rebuilt environment, and what could not be had."""
        drift = environment_drift(recorded_env, here.result()) if recorded_env and here else None
        mode, reason = _environment_mode(env, drift)
        base = {
            "original": recorded.ref,
            "target": ref,
            "env": mode,
            "env_reason": reason,
            "variables": tuple(recipe.variables.items()),
            "drift": drift,
        }
        if mode != "rebuild" or recorded_env is None or env_digest is None:
            return base, None, []
        building = time.perf_counter()
        try:
            built = build_environment(recorded_env, env_digest, envs_dir=envs_dir)
        except EnvironmentUnavailable as exc:
            return base, None, list(exc.missing)
        how = "cached" if built.cached else f"built in {time.perf_counter() - building:.1f}s"
        skipped = f"; not installed: {', '.join(built.skipped)}" if built.skipped else ""
        base["env_reason"] = f"{reason}; uv environment {how} in {built.folder}{skipped}"
        base["drift"] = None  # the rebuilt environment has the recorded pins
        return base, built, []

    problems = find_problems(recipe, objects=runs.objects, data=data, repo=repo)
    if problems:
        code = 3 if any(p.exit_code == 3 for p in problems) else 5
        missing = tuple(p.what for p in problems)
        return ReproduceReport(verdict="not attempted", exit_code=code, missing=missing, **settle()[0])
    folder = folder or Path(tempfile.mkdtemp(prefix="labvault-reproduce-"))
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    reruns: list[Rerun] = []
    try:
        placed: tuple[Placed, ...] = ()
        for attempt in range(2 if twice else 1):
            made.append(folder / f"rerun-{attempt + 1}")
            try:
                ws = prepare_workspace(recipe, objects=runs.objects, data=data, repo=repo, dest=made[-1])
            except (NotFound, IntegrityError) as exc:
                return ReproduceReport(
                    verdict="not attempted", exit_code=exc.exit_code, missing=(exc.message,), **settle()[0]
                )
            if attempt == 0:
                base, built, unavailable = settle()
                if unavailable:
                    return ReproduceReport(verdict="not attempted", exit_code=7, missing=tuple(unavailable), **base)
            placed = placed or ws.placed
            python = ((recorded_env or {}).get("python") or {}).get("executable")
            venv = built.folder if built is not None else None
            if pipeline_rerun is not None and is_pipeline_run(top):
                reruns.append(rerun_pipeline(runs, recipe, ws, run_stages=pipeline_rerun, venv=venv))
            else:
                reruns.append(rerun(runs, recipe, ws, vault_env=vault_env, recorded_python=python, venv=venv))
        report = _judge(runs, recipe, reruns, placed, tolerances, base["drift"], base, chain)
        command = sum(r.seconds for r in reruns)
        report = dataclasses.replace(
            report,
            overhead_seconds=round(time.perf_counter() - started - command, 3),
            command_seconds=round(command, 3),
            workdir=str(folder) if keep else None,
        )
        first = reruns[0].run.id
        for done in reruns:  # the original is never changed: `runs show` finds its reproductions by tag
            runs.set_tags(done.run.id, {"reproduce_verdict": report.verdict})
        runs.log_bytes(first, render_markdown(report).encode(), name="reproduce.md")
        runs.log_bytes(first, json.dumps(report_json(report), indent=2, sort_keys=True).encode(), name="reproduce.json")
        return report
    finally:
        for done in reruns:
            end_rerun(runs, done)
        if not keep:
            for dest in made:
                remove_tree(dest)
            if workdir is None:
                remove_tree(folder)
