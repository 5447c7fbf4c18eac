"""The drift gate: compare the version's training data with a reference snapshot (``vault.data``)."""

from __future__ import annotations

from labvault.entities import GateResult, ModelVersion
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.policy import DriftSpec

__all__ = ["drift_gates"]


def drift_gates(ctx: RegistryContext, version: ModelVersion, spec: DriftSpec) -> list[GateResult]:
    data = ctx.data()
    if data is None:
        return [
            GateResult(
                "drift",
                "drift",
                False,
                measured=None,
                threshold=spec.reference,
                detail="unavailable: this labvault has no data snapshot diff to measure drift with",
            )
        ]
    return [
        GateResult(
            "drift", "drift", False, measured=None, threshold=spec.reference, detail="unavailable: not implemented"
        )
    ]
