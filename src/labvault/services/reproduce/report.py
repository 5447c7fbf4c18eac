"""The reproducibility report: a frozen value, its JSON form and its one-page Markdown form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labvault.entities import json_safe
from labvault.services.reproduce.compare import ArtifactCheck, MetricCheck
from labvault.services.reproduce.environment import EnvironmentDrift
from labvault.services.reproduce.workspace import Placed

__all__ = ["REPORT_FORMAT", "ReproduceReport", "render_markdown", "report_json"]

REPORT_FORMAT = "labvault.reproduce/1"


@dataclass(frozen=True, slots=True)
class ReproduceReport:
    """What ``reproduce`` did and found. ``verdict`` is ``reproduced``, ``not reproduced`` or
    ``not attempted`` (something the record names is gone: ``missing`` lists all of it)."""

    original: str  # run:<id>
    target: str  # the reference given (a run, or a model version)
    verdict: str
    exit_code: int
    env: str  # current | rebuild
    env_reason: str
    reruns: tuple[str, ...] = ()  # run:<id> of each rerun
    compared: tuple[str, ...] = ()  # for a nested run: its counterpart in each rerun's tree
    exit_codes: tuple[int | None, ...] = ()  # the original's, then each rerun's
    artifacts: tuple[ArtifactCheck, ...] = ()
    metrics: tuple[MetricCheck, ...] = ()
    causes: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    restored: tuple[Placed, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()
    drift: EnvironmentDrift | None = None
    twice: tuple[ArtifactCheck | MetricCheck, ...] = ()  # differences between the two reruns
    workdir: str | None = None  # kept with --keep
    overhead_seconds: float | None = None  # wall time minus the command's own
    command_seconds: float | None = None  # the reruns' own wall time

    @property
    def reproduced(self) -> bool:
        return self.verdict == "reproduced"


def _check(c: ArtifactCheck | MetricCheck) -> dict[str, Any]:
    if isinstance(c, ArtifactCheck):
        return {"artifact": c.name, "verdict": c.verdict, "recorded": c.recorded, "rerun": c.rerun}
    return {"metric": c.key, "verdict": c.verdict, "recorded": json_safe(c.recorded), "rerun": json_safe(c.rerun)}


def report_json(r: ReproduceReport) -> dict[str, Any]:
    drift = r.drift
    return {
        "format": REPORT_FORMAT,
        "original": r.original,
        "target": r.target,
        "verdict": r.verdict,
        "reproduced": r.reproduced,
        "exit_code": r.exit_code,
        "environment": {
            "mode": r.env,
            "reason": r.env_reason,
            "python": list(drift.python) if drift and drift.python else None,
            "packages": drift.packages() if drift else [],
        },
        "reruns": list(r.reruns),
        "compared": list(r.compared),
        "exit_codes": {"recorded": r.exit_codes[0] if r.exit_codes else None, "reruns": list(r.exit_codes[1:])},
        "artifacts": [_check(c) for c in r.artifacts],
        "metrics": [_check(c) for c in r.metrics],
        "twice": [_check(c) for c in r.twice],
        "causes": list(r.causes),
        "missing": list(r.missing),
        "restored": [{"kind": p.kind, "path": p.path, "source": p.source, "note": p.note} for p in r.restored],
        "variables": dict(r.variables),
        "workdir": r.workdir,
        "overhead_seconds": r.overhead_seconds,
        "command_seconds": r.command_seconds,
    }


def _value(v: float | None) -> str:
    return "absent" if v is None else repr(v)


def render_markdown(r: ReproduceReport) -> str:
    lines = [f"# Reproducibility report: {r.original}", ""]
    lines.append(f"**Verdict: {r.verdict.upper()}** (exit code {r.exit_code})")
    lines.append("")
    if r.reruns:
        lines.append(f"- Reruns: {', '.join(r.reruns)} (tagged `reproduces: {r.original}`)")
    if r.compared:
        lines.append(f"- Nested run compared with: {', '.join(r.compared)}")
    lines.append(f"- Environment: `{r.env}` ({r.env_reason})")
    if r.exit_codes:
        lines.append(f"- Exit code: recorded {r.exit_codes[0]}, rerun {', '.join(str(c) for c in r.exit_codes[1:])}")
    if r.causes:
        lines += ["", "## Likely cause", "", *(f"- {c}" for c in r.causes)]
    if r.missing:
        lines += ["", "## Missing", "", *(f"- {m}" for m in r.missing)]
    if r.artifacts:
        lines += ["", "## Artifacts", "", "| artifact | verdict | recorded | rerun |", "|---|---|---|---|"]
        for a in r.artifacts:
            lines.append(f"| `{a.name}` | {a.verdict} | `{a.recorded or 'absent'}` | `{a.rerun or 'absent'}` |")
    if r.metrics:
        lines += ["", "## Metrics", "", "| metric | verdict | recorded | rerun |", "|---|---|---|---|"]
        for m in r.metrics:
            lines.append(f"| `{m.key}` | {m.verdict} | {_value(m.recorded)} | {_value(m.rerun)} |")
    if r.twice:
        lines += ["", "## The two reruns disagree", ""]
        lines += [f"- {_check(c).get('artifact') or _check(c).get('metric')}: {c.verdict}" for c in r.twice]
    if r.drift is not None and not r.drift.empty:
        lines += ["", "## Environment differences (recorded -> current)", ""]
        if r.drift.python:
            lines.append(f"- Python {r.drift.python[0]} -> {r.drift.python[1]}")
        lines += [f"- {p}" for p in r.drift.packages()]
    if r.restored:
        lines += ["", "## Restored", ""]
        for p in r.restored:
            note = f" ({p.note})" if p.note else ""
            lines.append(f"- {p.kind} `{p.path}` from `{p.source}`{note}")
    if r.variables:
        lines += ["", "## Variables set", "", *(f"- `{k}={v}`" for k, v in r.variables)]
    return "\n".join(lines) + "\n"
