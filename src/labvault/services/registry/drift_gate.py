"""The drift gate: compare the data the version was trained on with a reference snapshot.

The training data is the list of snapshot references in the version's ``data_manifest.json`` (the
source run's inputs). For each, ``vault.data.diff(reference, training)`` gives the schema change,
the record counts and the per-column PSI; the gate takes the worst value over the inputs. A value
that cannot be measured (no input data, no tabular file, no numeric column) fails the gate: a
promotion gate that cannot see is not a pass.
"""

from __future__ import annotations

from typing import Any

from labvault.entities import GateResult, ModelVersion
from labvault.errors import LabvaultError, ValidationError
from labvault.safeload import loads_json
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.layout import version_files
from labvault.services.registry.policy import DriftSpec

__all__ = ["drift_gates", "training_inputs"]


def training_inputs(ctx: RegistryContext, version: ModelVersion) -> list[str]:
    """The data references recorded in the version's ``data_manifest.json``."""
    entry = next((f for f in version_files(ctx.objects, version.content) if f.path == "data_manifest.json"), None)
    if entry is None:
        return []
    try:
        doc = loads_json(ctx.objects.get_bytes(entry.digest), name="data_manifest.json")
    except ValidationError:
        return []
    refs = []
    for item in doc if isinstance(doc, list) else []:
        ref = item.get("ref") if isinstance(item, dict) else item if isinstance(item, str) else None
        if isinstance(ref, str) and ref.startswith("data:"):
            refs.append(ref)
    return refs


def _fail(name: str, spec: DriftSpec, detail: str, threshold: Any = None) -> GateResult:
    return GateResult("drift", name, False, measured=None, threshold=threshold or spec.reference, detail=detail)


def drift_gates(ctx: RegistryContext, version: ModelVersion, spec: DriftSpec) -> list[GateResult]:
    data = ctx.data()
    if data is None:
        return [_fail("drift", spec, "unavailable: this labvault has no data snapshot diff to measure drift with")]
    inputs = training_inputs(ctx, version)
    if not inputs:
        return [_fail("drift", spec, "the version records no input data (register it --from the run that trained it)")]
    diffs = []
    for ref in inputs:
        try:
            diffs.append((ref, data.diff(spec.reference, ref)))
        except LabvaultError as err:
            return [_fail("drift", spec, f"cannot compare {spec.reference} with {ref}: {err.message}")]
    gates: list[GateResult] = []
    against = f"{spec.reference} vs {', '.join(inputs)}"
    if not spec.allow_schema_change:
        changed = [ref for ref, d in diffs if getattr(d, "schema_changed", False)]
        gates.append(
            GateResult(
                "drift",
                "schema",
                not changed,
                measured="changed" if changed else "unchanged",
                threshold="unchanged",
                detail=f"schema changed in {', '.join(changed)}" if changed else f"same schema ({against})",
            )
        )
    if spec.max_psi is not None:
        values = [v for _, d in diffs if (v := _psi(d)) is not None]
        if not values:
            gates.append(_fail("max_psi", spec, "no numeric column to measure PSI on", f"<= {spec.max_psi:g}"))
        else:
            worst = max(values)
            gates.append(
                GateResult(
                    "drift",
                    "max_psi",
                    worst <= spec.max_psi,
                    measured=round(worst, 6),
                    threshold=f"<= {spec.max_psi:g}",
                    detail=f"largest column PSI {worst:.4f} ({against})",
                )
            )
    if spec.max_record_change is not None:
        changes = [_relative_change(d) for _, d in diffs]
        if any(c is None for c in changes):
            gates.append(
                _fail(
                    "max_record_change",
                    spec,
                    "record counts unknown (not tabular data)",
                    f"<= {spec.max_record_change:g}",
                )
            )
        else:
            worst_change = max(c for c in changes if c is not None)
            gates.append(
                GateResult(
                    "drift",
                    "max_record_change",
                    worst_change <= spec.max_record_change,
                    measured=round(worst_change, 6),
                    threshold=f"<= {spec.max_record_change:g}",
                    detail=f"record count changed by {worst_change:.1%} ({against})",
                )
            )
    return gates


def _psi(diff: Any) -> float | None:
    psi = getattr(diff, "max_psi", None)
    if psi is None and not getattr(diff, "changed", True):
        return 0.0  # the same bytes: no drift at all
    return None if psi is None else float(psi)


def _relative_change(diff: Any) -> float | None:
    before = getattr(diff, "record_count_before", None)
    after = getattr(diff, "record_count_after", None)
    if before is None or after is None:
        return None
    if before == 0:
        return 0.0 if after == 0 else float("inf")
    return float(abs(after - before) / before)
