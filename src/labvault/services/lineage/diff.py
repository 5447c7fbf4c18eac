"""``lineage diff A B``: what differs in the lineage of two model versions or two runs.

Data (each input snapshot paired with the other side's snapshot of the same dataset, summarised by
the snapshot diff: files, records, schema, the largest PSI), code (the commit range and the files it
changed, from git when both commits are in the project's repository), config (keys changed, old ->
new, from the recorded config files and the params), environment (Python and packages), seeds, and
the metrics side by side. Every record read here is untrusted (it may have been pulled from another
vault): what cannot be read is said, never a crash.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.entities import DataDiff, ModelVersion, Run
from labvault.errors import LabvaultError, ValidationError
from labvault.refs import DataRef, Digest, ModelRef, RunRef, parse_ref
from labvault.safeload import loads_json, loads_yaml
from labvault.services.lineage.diff_values import (
    CodeChange,
    ConfigChange,
    DataChange,
    LineageDiff,
    MetricRow,
    PackageChange,
    SeedRow,
)
from labvault.services.reproduce.environment import environment_drift
from labvault.services.snapshots.diff import diff_verdict
from labvault.storage.objects.protocol import ObjectStore

__all__ = [
    "CodeChange",
    "ConfigChange",
    "DataChange",
    "DiffSources",
    "LineageDiff",
    "MetricRow",
    "PackageChange",
    "SeedRow",
    "diff_lineage",
]

_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_DATA = re.compile(r"data:(.+)@v([0-9]{1,19})")
_GIT_TIMEOUT = 30
_MAX_FILES = 1000  # files listed per code change; the count is always exact
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class DiffSources:
    """What a lineage diff reads, each from the service that owns it (wired in ``labvault.vault``)."""

    objects: ObjectStore
    root: Path
    get_run: Callable[[str], Run]
    resolve_model: Callable[[str], ModelVersion]
    version_metrics: Callable[[ModelVersion], Mapping[str, object] | None]
    diff_data: Callable[[str, str], DataDiff]


# -- the use case -----------------------------------------------------------------------------------
def diff_lineage(src: DiffSources, a: str, b: str) -> LineageDiff:
    """Compare the lineage of ``a`` and ``b``: two model versions, two runs, or one of each."""
    side_a, side_b = _side(src, a), _side(src, b)
    run_a, run_b = side_a[1], side_b[1]
    return LineageDiff(
        a=side_a[0],
        b=side_b[0],
        run_a=run_a.ref,
        run_b=run_b.ref,
        data=_data(src, run_a, run_b),
        code=_code(src.root, run_a, run_b),
        config=_config(src.objects, run_a, run_b),
        **_environment(src.objects, run_a, run_b),
        seeds=_seeds(run_a, run_b),
        metrics=_metrics(side_a[2], side_b[2]),
    )


def _side(src: DiffSources, text: str) -> tuple[str, Run, Mapping[str, object]]:
    """(the ref as shown, the run, the metrics compared): a version's are its ``metrics.json``."""
    text = text.strip()
    parsed = RunRef(text.lower()) if re.fullmatch(r"[0-9a-fA-F]{6,32}", text) else parse_ref(text)
    if isinstance(parsed, ModelRef):
        version = src.resolve_model(str(parsed))
        if version.run_id is None:
            raise ValidationError(
                f"{version.ref} records no source run, so it has no lineage to compare",
                hint="compare versions registered --from a run",
            )
        metrics = src.version_metrics(version)
        run = src.get_run(f"run:{version.run_id}")
        return version.ref, run, metrics if metrics is not None else run.metrics
    if isinstance(parsed, RunRef):
        run = src.get_run(str(parsed))
        return run.ref, run, run.metrics
    what = "a snapshot" if isinstance(parsed, DataRef) else "an object"
    raise ValidationError(
        f"lineage diff compares model versions or runs, and {text!r} is {what}",
        hint="for snapshots use `labvault data diff A B`",
    )


def _dataset(ref: str) -> str:
    match = _DATA.fullmatch(ref)
    return match.group(1) if match else ref


def _data(src: DiffSources, run_a: Run, run_b: Run) -> tuple[DataChange, ...]:
    inputs_a = {_dataset(r): r for r in run_a.inputs if r.startswith("data:")}
    inputs_b = {_dataset(r): r for r in run_b.inputs if r.startswith("data:")}
    out = []
    for name in sorted(set(inputs_a) | set(inputs_b)):
        ra, rb = inputs_a.get(name), inputs_b.get(name)
        if ra is None or rb is None:
            out.append(DataChange(name, ra, rb, verdict="added" if ra is None else "removed"))
        elif ra == rb:
            out.append(DataChange(name, ra, rb))
        else:
            out.append(_data_change(src, name, ra, rb))
    return tuple(out)


def _data_change(src: DiffSources, name: str, ra: str, rb: str) -> DataChange:
    try:
        diff = src.diff_data(ra, rb)
    except LabvaultError as err:
        return DataChange(name, ra, rb, verdict="unknown", note=f"cannot compare: {err.message}")
    verdict = diff_verdict(diff)
    column, worst = None, None
    for table in diff.tabular:
        for col in table.columns:
            if col.psi is not None and (worst is None or col.psi > worst):
                column, worst = col.column, col.psi
    return DataChange(
        name,
        ra,
        rb,
        files_added=len(diff.added),
        files_removed=len(diff.removed),
        files_modified=len(diff.modified),
        records=(diff.record_count_before, diff.record_count_after),
        schema=verdict.schema
        or tuple(
            f"{what} {c}"
            for t in diff.tabular
            for what, cols in (("added", t.columns_added), ("removed", t.columns_removed))
            for c in cols
        ),
        max_psi=worst,
        max_psi_column=column,
        verdict=verdict.status,
    )


# -- code -------------------------------------------------------------------------------------------
def _commit(run: Run) -> str | None:
    git = run.capture.get("git")
    commit = git.get("commit") if isinstance(git, dict) else None
    # It reaches git's command line: hex only, as reproduce requires.
    return commit if isinstance(commit, str) and _COMMIT.fullmatch(commit) else None


def _patch(run: Run) -> str | None:
    patch = run.capture.get("patch")
    return patch if isinstance(patch, str) and patch.startswith("sha256:") else None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=_GIT_TIMEOUT, check=False, text=True
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _code(root: Path, run_a: Run, run_b: Run) -> CodeChange:
    a, b = _commit(run_a), _commit(run_b)
    pa, pb = _patch(run_a), _patch(run_b)
    if a is None or b is None:
        which = " and ".join(r.ref for r, c in ((run_a, a), (run_b, b)) if c is None)
        return CodeChange(a, b, note=f"{which} recorded no git commit", patch_a=pa, patch_b=pb)
    if a == b:
        return CodeChange(a, b, commits=0, commits_back=0, files_changed=0, patch_a=pa, patch_b=pb)
    if shutil.which("git") is None:
        return CodeChange(a, b, note="git is not installed here: files changed unknown", patch_a=pa, patch_b=pb)
    absent = [c[:12] for c in (a, b) if _git(root, "cat-file", "-e", f"{c}^{{commit}}") is None]
    if absent:
        note = f"commit {', '.join(absent)} is not in the repository at {root}: files changed unknown"
        return CodeChange(a, b, note=note, patch_a=pa, patch_b=pb)
    listed = _git(root, "diff", "--name-status", "--no-renames", "-z", a, b)
    counts = (_git(root, "rev-list", "--left-right", "--count", f"{a}...{b}") or "").split()
    if listed is None:
        return CodeChange(a, b, note="git diff failed: files changed unknown", patch_a=pa, patch_b=pb)
    words = listed.split("\0")
    files = [(words[i], words[i + 1]) for i in range(0, len(words) - 1, 2)]
    return CodeChange(
        a,
        b,
        commits=int(counts[1]) if len(counts) == 2 and counts[1].isdigit() else None,
        commits_back=int(counts[0]) if len(counts) == 2 and counts[0].isdigit() else None,
        files=tuple(files[:_MAX_FILES]),
        files_changed=len(files),
        patch_a=pa,
        patch_b=pb,
    )


# -- config -----------------------------------------------------------------------------------------
def _configs(run: Run) -> dict[str, str]:
    out = {}
    for item in run.capture.get("config") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str) and isinstance(item.get("sha256"), str):
            out[item["path"]] = item["sha256"]
    return out


def _parse(objects: ObjectStore, digest: str, path: str) -> Any:
    """The config file as a value: its mapping when it parses (YAML or JSON), else its sha256."""
    try:
        data = objects.get_bytes(Digest(digest.removeprefix("sha256:")))
        doc = loads_json(data, name=path) if path.endswith(".json") else loads_yaml(data, name=path)
    except LabvaultError:
        return digest
    return doc if isinstance(doc, dict) else digest


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _changes(source: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[ConfigChange]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key, _MISSING), b.get(key, _MISSING)
        if x is _MISSING:
            out.append(ConfigChange(source, key, None, y, "added"))
        elif y is _MISSING:
            out.append(ConfigChange(source, key, x, None, "removed"))
        elif x != y or type(x) is not type(y):
            out.append(ConfigChange(source, key, x, y, "changed"))
    return out


def _config(objects: ObjectStore, run_a: Run, run_b: Run) -> tuple[ConfigChange, ...]:
    files_a, files_b = _configs(run_a), _configs(run_b)
    out: list[ConfigChange] = []
    for path in sorted(set(files_a) | set(files_b)):
        da, db = files_a.get(path), files_b.get(path)
        if da == db:
            continue
        va = _flatten(_parse(objects, da, path)) if da else {}
        vb = _flatten(_parse(objects, db, path)) if db else {}
        out.extend(_changes(path, va, vb))
    out.extend(_changes("params", dict(run_a.params), dict(run_b.params)))
    return tuple(out)


# -- environment, seeds, metrics --------------------------------------------------------------------
def _environment(objects: ObjectStore, run_a: Run, run_b: Run) -> dict[str, Any]:
    refs = [r.capture.get("environment") for r in (run_a, run_b)]
    if refs[0] == refs[1]:
        return {"environment": (), "environment_note": None if refs[0] else "neither run recorded an environment"}
    docs = []
    for run, ref in zip((run_a, run_b), refs, strict=True):
        doc = None
        if isinstance(ref, str) and ref.startswith("sha256:"):
            try:  # bounded: the document may have come from another vault
                doc = loads_json(objects.get_bytes(Digest(ref.removeprefix("sha256:"))), name=f"environment {ref}")
            except LabvaultError:
                doc = None
        if not isinstance(doc, dict):
            return {"environment": (), "environment_note": f"{run.ref} recorded no readable environment"}
        docs.append(doc)
    drift = environment_drift(docs[0], docs[1])
    out = [PackageChange("python", *drift.python)] if drift.python else []
    out += [PackageChange(n, x, y) for n, x, y in drift.changed]
    out += [PackageChange(p.split("==")[0], None, p.split("==", 1)[-1]) for p in drift.added]
    out += [PackageChange(p.split("==")[0], p.split("==", 1)[-1], None) for p in drift.removed]
    return {"environment": tuple(out), "environment_note": None}


def _seeding(run: Run, key: str) -> Any:
    seeds = run.capture.get("seeds")
    value = seeds.get(key) if isinstance(seeds, dict) else None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value if isinstance(value, bool | int | str) or value is None else str(value)


def _seeds(run_a: Run, run_b: Run) -> tuple[SeedRow, ...]:
    """The seed, PYTHONHASHSEED, and what ``seed_everything`` seeded and how (deterministic algorithms)."""
    seeded = [_seeding(r, "seeded") for r in (run_a, run_b)]
    return (
        SeedRow("seed", run_a.seed, run_b.seed),
        SeedRow("pythonhashseed", run_a.capture.get("pythonhashseed"), run_b.capture.get("pythonhashseed")),
        SeedRow("deterministic", _seeding(run_a, "deterministic"), _seeding(run_b, "deterministic")),
        SeedRow("seeded", *seeded),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return None


def _metrics(a: Mapping[str, object], b: Mapping[str, object]) -> tuple[MetricRow, ...]:
    return tuple(MetricRow(k, _number(a.get(k)), _number(b.get(k))) for k in sorted(set(a) | set(b)))
