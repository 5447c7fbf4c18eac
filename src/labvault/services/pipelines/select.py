"""Which stages a command covers, and what a run says about each stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labvault.errors import NotFound
from labvault.services.pipelines.spec import Pipeline

__all__ = ["StageReport", "select_stages"]


@dataclass(slots=True)
class StageReport:
    name: str
    state: str  # ran | restored | up to date | failed | skipped | not started | cancelled
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None  # project-relative path of the stage's log
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "state": self.state,
            "reasons": self.reasons,
            "key": self.key,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "log": self.log,
            "run": f"run:{self.run_id}" if self.run_id else None,
        }


def select_stages(pipeline: Pipeline, targets: list[str], *, downstream: bool) -> list[str]:
    """The stages to consider, in order: targets and their upstream (or, ``downstream``, their dependents)."""
    for t in targets:
        if t not in pipeline.stages:
            raise NotFound(
                f"no stage named {t!r}",
                hint="list the stages with `labvault pipeline status` (matrix stages: NAME@VALUE)",
            )
    order = pipeline.order()
    if not targets:
        return order
    chosen: set[str] = set(targets)
    if downstream:
        down = pipeline.downstream()
        todo = list(targets)
        while todo:
            for d in down[todo.pop()]:
                if d not in chosen:
                    chosen.add(d)
                    todo.append(d)
    else:
        todo = list(targets)
        while todo:
            for u in pipeline.upstream[todo.pop()]:
                if u not in chosen:
                    chosen.add(u)
                    todo.append(u)
    return [n for n in order if n in chosen]
