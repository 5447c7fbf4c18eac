"""Judge a rerun against the original: artifacts by sha256 (a folder file by file), final metrics
exactly or within tolerance, and the exit code."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from labvault.entities import Artifact, Run
from labvault.errors import LabvaultError
from labvault.refs import Digest
from labvault.services.reproduce.settings import Tolerances
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import decode_tree

__all__ = ["REPORT_NAMES", "ArtifactCheck", "MetricCheck", "compare_artifacts", "compare_metrics"]

#: The report a reproduction stores on its rerun; never compared.
REPORT_NAMES = ("reproduce.md", "reproduce.json")


@dataclass(frozen=True, slots=True)
class ArtifactCheck:
    name: str  # an artifact, or a file inside a folder artifact (``plots/roc.png``)
    verdict: str  # IDENTICAL | DIFFERENT
    recorded: str | None  # sha256, None when absent
    rerun: str | None


@dataclass(frozen=True, slots=True)
class MetricCheck:
    key: str
    verdict: str  # EXACT | WITHIN TOLERANCE | DIFFERENT
    recorded: float | None
    rerun: float | None


def _files(objects: ObjectStore, art: Artifact) -> Iterator[tuple[str, str]]:
    """(name, sha256) of a file artifact, or of every file below a folder artifact."""
    if art.kind != "tree":
        yield art.name, str(art.digest)
        return
    stack: list[tuple[str, Digest]] = [(art.name, art.digest)]
    while stack:
        prefix, digest = stack.pop()
        for entry in decode_tree(objects.get_bytes(digest), digest=digest):
            name = f"{prefix}/{entry.name}"
            if entry.type == "dir" and entry.digest is not None:
                stack.append((name, entry.digest))
            elif entry.type == "file":
                yield name, str(entry.digest)
            else:
                yield name, f"link:{entry.target}"


def _flatten(objects: ObjectStore, run: Run, ignored: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for art in run.artifacts:
        if art.name in REPORT_NAMES or art.name in ignored or art.name.split("/", 1)[0] in ignored:
            continue
        try:
            out.update(_files(objects, art))
        except LabvaultError as exc:
            out[art.name] = f"unreadable: {exc.message}"
    return out


def compare_artifacts(objects: ObjectStore, recorded: Run, rerun: Run, ignored: frozenset[str]) -> list[ArtifactCheck]:
    a, b = _flatten(objects, recorded, ignored), _flatten(objects, rerun, ignored)
    out = []
    for name in sorted(set(a) | set(b)):
        same = name in a and name in b and a[name] == b[name] and not a[name].startswith("unreadable")
        out.append(ArtifactCheck(name, "IDENTICAL" if same else "DIFFERENT", a.get(name), b.get(name)))
    return out


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def compare_metrics(recorded: Run, rerun: Run, tolerances: Tolerances) -> list[MetricCheck]:
    out = []
    for key in sorted(set(recorded.metrics) | set(rerun.metrics)):
        if key in tolerances.ignore_metrics:
            continue
        x, y = recorded.metrics.get(key), rerun.metrics.get(key)
        if x is None or y is None:
            verdict = "DIFFERENT"
        elif _same(x, y):
            verdict = "EXACT"
        elif math.isfinite(x) and math.isfinite(y) and tolerances.for_metric(key).allows(x, y):
            verdict = "WITHIN TOLERANCE"
        else:
            verdict = "DIFFERENT"
        out.append(MetricCheck(key, verdict, x, y))
    return out
