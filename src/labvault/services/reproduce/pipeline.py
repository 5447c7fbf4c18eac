"""Reproducing a pipeline run: the whole pipeline reruns in the workspace with the cache off (every
stage forced, no cache row written), and every stage the original recorded is compared with the
rerun's stage of the same name: its outputs by hash, its metrics within the tolerances.

The stages run in this process (``run_stages``, given by the vault), rooted at the workspace: a
``labvault pipeline run`` subprocess would find the project through the vault folder instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from labvault.entities import Artifact, Run
from labvault.errors import LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.reproduce.compare import ArtifactCheck, MetricCheck, compare_artifacts, compare_metrics
from labvault.services.reproduce.record import Recipe
from labvault.services.reproduce.rerun import Rerun
from labvault.services.reproduce.settings import Tolerances
from labvault.services.reproduce.workspace import Workspace
from labvault.services.tracking.service import Tracking

__all__ = [
    "PipelineRerun",
    "compare_stages",
    "is_pipeline_run",
    "rerun_pipeline",
    "stage_runs",
    "stage_tolerances",
    "up_to_date_stages",
]

#: (workspace root, the open rerun's id, extra environment of every stage) -> (exit code: 0, or 1 when a
#: stage failed; the first failure's error). The rerun stays open: reproduce stores its report on it.
PipelineRerun = Callable[[Path, str, Mapping[str, str]], tuple[int, str | None]]


def is_pipeline_run(run: Run) -> bool:
    return run.tags.get("pipeline") == "run"


def stage_tolerances(tolerances: Tolerances) -> Tolerances:
    """A stage run's ``log.txt`` is a record of the run, not an output (it may hold times and paths)."""
    return dataclasses.replace(tolerances, ignore_artifacts=tolerances.ignore_artifacts | {"log.txt"})


def rerun_pipeline(
    runs: Tracking, recipe: Recipe, workspace: Workspace, *, run_stages: PipelineRerun, venv: Path | None
) -> Rerun:
    original = recipe.run
    run = runs.create(
        project=original.project,
        name=original.name,
        inputs=recipe.inputs,
        command=list(recipe.command),
        cwd=workspace.cwd,
        seed=original.seed,
        tags={"reproduces": original.ref, "pipeline": "reproduce"},
        capture=False,
    )
    env: dict[str, str] = {}
    if venv is not None:  # the rebuilt environment's interpreter comes first for every stage
        import os

        env["PATH"] = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(venv)
    started = time.perf_counter()
    try:
        code, failure = run_stages(workspace.root, run.id, env)
    except LabvaultError as exc:  # the pipeline cannot run there (a bad definition at that commit): a result
        error = f"the pipeline did not run in the workspace: {exc.message}"
        return Rerun(runs.get(run.id), exc.exit_code, time.perf_counter() - started, "failed", error=error)
    except BaseException:  # Ctrl-C: record it, go on dying
        runs.finish(run.id, status="killed", exit_code=130, error="reproduce was interrupted")
        raise
    seconds = time.perf_counter() - started
    if code != 0:
        return Rerun(runs.get(run.id), code, seconds, "failed", error=failure)
    return Rerun(runs.get(run.id), code, seconds, "finished")


def stage_runs(runs: Tracking, parent: Run) -> dict[str, Run]:
    """Stage name -> the stage run under ``parent`` (the first, if a record holds several)."""
    found = runs.list(project=parent.project, filter="tags.pipeline.stage like '%'")
    out: dict[str, Run] = {}
    for r in sorted(found, key=lambda r: (r.started_at, r.id)):
        if r.parent_id == parent.id:
            out.setdefault(r.tags.get("pipeline.stage") or r.name, r)
    return out


def up_to_date_stages(runs: Tracking, parent: Run) -> dict[str, Run]:
    """Stage name -> the record of each stage ``parent`` found up to date: the run that computed its
    outputs, or, when this vault has no such run (a lock pulled with the code), the outputs
    ``labvault.lock`` recorded, as a run holding only those (its metrics are not known)."""
    doc = parent.capture.get("pipeline_up_to_date")
    out: dict[str, Run] = {}
    if not isinstance(doc, dict):
        return out
    for name, entry in doc.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            continue
        producer = entry.get("run")
        if isinstance(producer, str):
            try:
                out[name] = runs.get(producer)
                continue
            except (NotFound, ValidationError):
                pass  # deleted, or never in this vault: the recorded outputs still say what to expect
        outs, trees = entry.get("outs"), entry.get("trees")
        if not isinstance(outs, dict) or not isinstance(trees, list):
            continue
        try:
            arts = tuple(
                Artifact(
                    path.replace("/", "_"),
                    Digest(str(digest).removeprefix("sha256:")),
                    "tree" if path in trees else "file",
                    0,
                    path,
                )
                for path, digest in sorted(outs.items())
            )
        except (ValidationError, AttributeError):
            continue
        out[name] = Run(parent.id, parent.project, name, "finished", parent.started_at, artifacts=arts)
    return out


def compare_stages(
    runs: Tracking, recorded: Run, rerun: Run, tolerances: Tolerances
) -> tuple[list[ArtifactCheck], list[MetricCheck]]:
    """Every stage the original recorded (ran, restored from cache, or up to date: the run that
    computed its outputs) against the rerun's stage of that name; each check is named
    ``STAGE: output`` or ``STAGE: metric``. A stage the rerun did not complete is one DIFFERENT check."""
    before, after = stage_runs(runs, recorded), stage_runs(runs, rerun)
    for name, found in up_to_date_stages(runs, recorded).items():
        before.setdefault(name, found)
    artifacts: list[ArtifactCheck] = []
    metrics: list[MetricCheck] = []
    for name in sorted(before):
        old, new = before[name], after.get(name)
        if new is None or new.status != "finished":
            state = "did not run" if new is None else new.status
            artifacts.append(ArtifactCheck(f"{name}: (stage)", "DIFFERENT", old.status, state))
            continue
        for check in compare_artifacts(runs.objects, old, new, tolerances.ignore_artifacts):
            artifacts.append(dataclasses.replace(check, name=f"{name}: {check.name}"))
        for metric in compare_metrics(old, new, tolerances):
            metrics.append(dataclasses.replace(metric, key=f"{name}: {metric.key}"))
    return artifacts, metrics
