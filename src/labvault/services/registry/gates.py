"""Evaluating an alias's policy for one version: every gate, each with its measured value.

Gates run in this order: ``from``, ``approvals``, ``rollback_plan``, ``metrics``, ``drift``,
``reproducible``, then the ``checks`` (slowest last). All of them are evaluated, so a refusal lists every unmet gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labvault.entities import GateResult, ModelVersion, json_safe
from labvault.services.registry import drift_gate
from labvault.services.registry.checks import expand_command, run_check
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.policy import AliasPolicy
from labvault.services.registry.read import cached_copy, read_metrics
from labvault.services.registry.reproducible_gate import reproducible_gate

__all__ = ["AliasState", "evaluate_gates", "unmet_gates"]


@dataclass(frozen=True, slots=True)
class AliasState:
    """What a promotion read before its gates ran; the commit re-checks the lock versions."""

    model_id: int
    version_id: int
    current: str | None  # the version the target alias points at now
    current_id: int | None
    lock: int
    from_current: str | None = None  # the version the `from:` alias points at now
    from_lock: int = 0
    approvers: tuple[str, ...] = ()


def evaluate_gates(
    ctx: RegistryContext,
    version: ModelVersion,
    alias: str,
    policy: AliasPolicy | None,
    state: AliasState,
    *,
    waive_rollback_plan: str | None = None,
) -> list[GateResult]:
    if policy is None:
        return []
    gates: list[GateResult] = []
    if policy.from_ is not None:
        ok = state.from_current == version.version
        gates.append(
            GateResult(
                "from",
                policy.from_,
                ok,
                measured=state.from_current,
                threshold=version.version,
                detail=(
                    f"{policy.from_} points at {version.version}"
                    if ok
                    else f"must first be in {policy.from_}, which points at {state.from_current or 'nothing'}"
                ),
            )
        )
    if policy.approvals:
        count = len(state.approvers)
        gates.append(
            GateResult(
                "approvals",
                "approvals",
                count >= policy.approvals,
                measured=count,
                threshold=policy.approvals,
                detail=("approved by " + ", ".join(state.approvers)) if state.approvers else "no approvals yet",
            )
        )
    if policy.rollback_plan == "required":
        has_plan = state.current is not None and state.current != version.version
        waived = not has_plan and bool(waive_rollback_plan)
        detail = (
            f"rollback to {state.current}"
            if has_plan
            else (f"waived: {waive_rollback_plan}" if waived else f"{alias} has no previous version to roll back to")
        )
        gates.append(
            GateResult(
                "rollback_plan",
                "rollback_plan",
                has_plan or waived,
                measured=state.current,
                threshold="a previous version (or --waive-rollback-plan)",
                detail=detail,
            )
        )
    if policy.metrics:
        gates.extend(_metric_gates(ctx, version, policy))
    if policy.drift is not None:
        gates.extend(drift_gate.drift_gates(ctx, version, policy.drift))
    if policy.reproducible is not None:
        gates.append(reproducible_gate(ctx, version, policy.reproducible))
    if policy.checks:
        gates.extend(_check_gates(ctx, version, policy))
    return gates


def _metric_gates(ctx: RegistryContext, version: ModelVersion, policy: AliasPolicy) -> list[GateResult]:
    metrics, problem = read_metrics(ctx, version)
    out = []
    for name, threshold in policy.thresholds().items():
        raw: Any = None if metrics is None else metrics.get(name)
        value = _number(raw)
        if value is None:
            detail = problem or (f"metric {name} is not recorded" if raw is None else f"metric {name} is not a number")
            out.append(GateResult("metric", name, False, measured=raw, threshold=str(threshold), detail=detail))
            continue
        ok = threshold.holds(value)
        measured: Any = json_safe(value)
        detail = f"{name} = {value:g} {'meets' if ok else 'misses'} {threshold}"
        out.append(GateResult("metric", name, ok, measured=measured, threshold=str(threshold), detail=detail))
    return out


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str) and raw in ("NaN", "Infinity", "-Infinity"):
        return float(raw.replace("Infinity", "inf"))
    return None


def _check_gates(ctx: RegistryContext, version: ModelVersion, policy: AliasPolicy) -> list[GateResult]:
    model_dir = cached_copy(ctx, version)
    out = []
    for check in policy.checks:
        argv = expand_command(check.run, model_dir=model_dir, model=version.name, version=version.version)
        result = run_check(
            argv,
            cwd=ctx.root,
            timeout=check.timeout,
            env={"LABVAULT_MODEL": version.name, "LABVAULT_MODEL_VERSION": version.version},
        )
        digest = ctx.objects.put_bytes(result.output)
        out.append(
            GateResult(
                "check",
                check.name,
                result.passed,
                measured=result.exit_code,
                threshold=0,
                detail=f"{result.detail} ({result.seconds:.1f}s)",
                output=digest,
            )
        )
    return out


# A missed threshold, said the other way round: "auc >= 0.9" missed reads "auc (0.85 < 0.9)".
_MISSED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}


def unmet_gates(gates: tuple[GateResult, ...] | list[GateResult]) -> str:
    """The failed gates in one line, each with its reason: ``rollback_plan (no previous version),
    drift (max PSI 0.31 > 0.2)``."""
    return ", ".join(_why(g) for g in gates if not g.passed)


def _why(g: GateResult) -> str:
    measured = g.measured
    limit = str(g.threshold).removeprefix("<= ")
    if g.gate == "from":
        return f"from ({g.name} points at {measured or 'nothing'})"
    if g.gate == "approvals":
        return f"approvals ({measured} of {g.threshold})"
    if g.gate == "rollback_plan":
        return "rollback_plan (no previous version)"
    if g.gate == "metric":
        value = _number(measured)
        op, _, number = str(g.threshold).partition(" ")
        if value is None or math.isnan(value):
            return f"metric {g.name} ({g.detail.removeprefix(f'metric {g.name} is ') if value is None else 'NaN'})"
        return f"metric {g.name} ({value:g} {_MISSED.get(op, 'misses ' + op)} {number})"
    if g.gate == "drift" and isinstance(measured, int | float):
        what = {"max_psi": "max PSI", "max_record_change": "record change"}.get(g.name, g.name)
        return f"drift ({what} {measured:.3g} > {limit})"
    if g.gate == "drift" and g.name == "schema":
        return "drift (schema changed)"
    if g.gate == "drift":
        return f"drift ({g.detail})"
    if g.gate == "reproducible":
        return f"reproducible ({g.detail})"
    if g.gate == "check":
        return f"check {g.name} ({g.detail.rsplit(' (', 1)[0]})"
    return f"{g.gate} {g.name} ({g.detail})"
