"""The ``reproducible`` gate: the version's source run must have a passing reproduction.

A reproduction is a run tagged ``reproduces: run:<id>`` that carries the ``reproduce.json`` report
``labvault reproduce`` stores on its (first) rerun; the report's verdict is what counts, and its
``original`` must be the version's run (a nested run is reproduced through its top run, whose rerun
carries the tag). With ``env: rebuild`` only reproductions in a rebuilt environment count; with
``rtol``/``atol`` every compared metric must also lie within ``atol + rtol * |recorded|``, so a
reproduction judged with looser tolerances on the command line does not pass a stricter policy.

Reproduction tags and reports are records like any other: local ones are as trustworthy as the
vault's writers (see docs/registry.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labvault.entities import GateResult, ModelVersion
from labvault.errors import LabvaultError
from labvault.refs import Digest
from labvault.safeload import loads_json
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.policy import ReproducibleSpec
from labvault.storage.meta.repos import lineage as lineage_repo

__all__ = ["reproducible_gate"]

_REPORT = "reproduce.json"
_MAX_PARENTS = 100  # a parent chain longer than this (or a cycle in pulled records) is not followed


@dataclass(frozen=True, slots=True)
class _Reproduction:
    ref: str  # the rerun
    verdict: str
    env: str
    outside: tuple[str, ...]  # metrics beyond the policy's tolerances
    order: str  # when it started: the latest reproduction is named in a refusal


def _command(run_ref: str, spec: ReproducibleSpec) -> str:
    words = ["labvault", "reproduce", run_ref]
    if spec.env == "rebuild":
        words += ["--env", "rebuild"]
    if spec.rtol is not None:
        words += ["--rtol", f"{spec.rtol:g}"]
    if spec.atol is not None:
        words += ["--atol", f"{spec.atol:g}"]
    return "`" + " ".join(words) + "`"


def _requirement(spec: ReproducibleSpec) -> str:
    parts = ["a passing reproduction"]
    if spec.env == "rebuild":
        parts.append("in a rebuilt environment")
    tolerances = [f"{k} {v:g}" for k, v in (("rtol", spec.rtol), ("atol", spec.atol)) if v is not None]
    if tolerances:
        parts.append("with metrics within " + ", ".join(tolerances))
    return " ".join(parts)


def _within(recorded: Any, rerun: Any, spec: ReproducibleSpec) -> bool:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (recorded, rerun)):
        return bool(recorded == rerun)  # "NaN" == "NaN", None == None: the same non-number
    x, y = float(recorded), float(rerun)
    if not (math.isfinite(x) and math.isfinite(y)):
        return x == y
    return abs(y - x) <= (spec.atol or 0.0) + (spec.rtol or 0.0) * abs(x)


def _read(
    ctx: RegistryContext, runs: Any, rerun_id: str, original: str, spec: ReproducibleSpec
) -> _Reproduction | None:
    """The reproduction recorded on ``rerun_id``, or None when it carries no report of ``original``."""
    try:
        rerun = runs.get(f"run:{rerun_id}")
        report = next((a for a in rerun.artifacts if a.name == _REPORT and a.kind != "tree"), None)
        if report is None:
            return None
        doc = loads_json(ctx.objects.get_bytes(Digest(str(report.digest).removeprefix("sha256:"))), name=_REPORT)
    except LabvaultError:
        return None
    if not isinstance(doc, dict) or doc.get("original") != original or not isinstance(doc.get("verdict"), str):
        return None
    env = doc.get("environment")
    mode = env.get("mode") if isinstance(env, dict) else None
    outside = []
    if spec.rtol is not None or spec.atol is not None:
        for check in doc.get("metrics") or []:
            if isinstance(check, dict) and not _within(check.get("recorded"), check.get("rerun"), spec):
                outside.append(str(check.get("metric")))
    return _Reproduction(rerun.ref, doc["verdict"], str(mode), tuple(outside), rerun.started_at.isoformat())


def _ancestors(runs: Any, run: Any) -> list[str]:
    out: list[str] = []
    parent = run.parent_id
    while parent and parent not in out and len(out) < _MAX_PARENTS:
        out.append(parent)
        try:
            parent = runs.get(f"run:{parent}").parent_id
        except LabvaultError:
            break
    return out


def reproducible_gate(ctx: RegistryContext, version: ModelVersion, spec: ReproducibleSpec) -> GateResult:
    need = _requirement(spec)

    def result(passed: bool, detail: str, measured: Any = None) -> GateResult:
        return GateResult("reproducible", "reproducible", passed, measured=measured, threshold=need, detail=detail)

    runs = ctx.runs()
    if runs is None:
        return result(False, "unavailable: this labvault has no runs to look for reproductions in")
    if version.run_id is None:
        return result(False, "the version records no source run to reproduce (register it --from the run)")
    run = runs.get(f"run:{version.run_id}")
    original = run.ref
    with ctx.meta.read() as conn:
        tagged = lineage_repo.reproductions_of(conn, {run.id, *_ancestors(runs, run)})
    found = [r for ids in tagged.values() for rerun, _ in ids if (r := _read(ctx, runs, rerun, original, spec))]
    command = _command(original, spec)
    if not found:
        return result(False, f"{original} was never reproduced: run {command}")
    found.sort(key=lambda r: r.order)
    passing = [r for r in found if r.verdict == "reproduced"]
    qualifying = [r for r in passing if (spec.env != "rebuild" or r.env == "rebuild") and not r.outside]
    if qualifying:
        best = qualifying[-1]
        return result(
            True, f"reproduced by {best.ref} (environment: {best.env})", measured=f"{best.verdict} (env {best.env})"
        )
    latest = found[-1]
    if not passing:
        detail = (
            f"not reproduced: {latest.ref} says {latest.verdict} ({len(found)} attempt(s)); fix it, then run {command}"
        )
        return result(False, detail, measured=latest.verdict)
    reasons = []
    if spec.env == "rebuild" and not any(r.env == "rebuild" for r in passing):
        reasons.append(f"no passing reproduction in a rebuilt environment ({passing[-1].ref} ran in {passing[-1].env})")
    outside = sorted({m for r in passing for m in r.outside})
    if outside:
        reasons.append(f"metrics beyond the policy's tolerances: {', '.join(outside[:10])}")
    return result(False, "; ".join(reasons) + f"; run {command}", measured=f"{latest.verdict} (env {latest.env})")
