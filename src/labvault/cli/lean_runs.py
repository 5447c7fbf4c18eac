"""``runs list`` and ``runs show`` on the lean path: what ``cli/runs.py`` prints, byte for byte
(``tests/e2e/test_lean.py`` compares them); see :mod:`labvault.cli.lean`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labvault.cli.render import OUTPUT, print_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from labvault.entities import MetricPoint, Run
    from labvault.vault import LeanReader, Vault

__all__ = ["runs_list", "runs_show"]


def valid_name(name: str, what: str) -> bool:
    from labvault.errors import LabvaultError
    from labvault.refs import validate_name

    try:
        validate_name(name, what=what)
    except LabvaultError:
        return False
    return True


def format_moment(moment: Any) -> str | None:
    from labvault.entities import format_time

    return format_time(moment) if moment is not None else None


def runs_list(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    from labvault.refs import validate_name
    from labvault.services.tracking.filters import parse_filter, parse_sort

    project, limit, deleted = values.get("project"), values.get("limit"), bool(values.get("deleted"))
    text, sort = values.get("filter"), values.get("sort")
    # The checks of Tracking.list, in its order: the same errors, worded by the same functions.
    if project:
        project = validate_name(project, what="project name")
    where = parse_filter(text) if text and text.strip() else None
    order = parse_sort(sort) if sort else None
    found = reader.select_runs(project=project or None, limit=limit, deleted=deleted, where=where, sort=order)
    if values.get("json"):
        print_json([run_json(r) for r in found])
        return True
    rows = []
    for r in found:
        metrics = ",".join(f"{k}={v:.4g}" for k, v in list(r.metrics.items())[:3])
        rows.append((r.id, r.project, r.name, r.status, r.started_at.strftime("%m-%d %H:%M"), run_duration(r), metrics))
    OUTPUT.table(["id", "project", "name", "status", "started", "duration", "metrics"], rows)
    if not found:
        OUTPUT.info("no runs match")
    return True


def run_json(run: Run) -> dict[str, Any]:
    """The JSON form of a run in listings (``id`` and ``ref``, ISO times, NaN as a string)."""
    from labvault.entities import json_safe
    from labvault.services.tracking.export import run_header

    return {
        **run_header(run),
        "seed": run.seed,
        "params": run.params,
        "metrics": {k: json_safe(v) for k, v in run.metrics.items()},
        "tags": run.tags,
        "inputs": list(run.inputs),
        "outputs": [a.name for a in run.outputs],
        "artifacts": [{"name": a.name, "kind": a.kind, "sha256": str(a.digest), "size": a.size} for a in run.artifacts],
        "deleted_at": format_moment(run.deleted_at),
    }


def run_duration(run: Run) -> str:
    seconds = run.duration
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True, slots=True)
class _Sources:
    """``export_run``'s sources: the vault's object store, and the inputs resolved beforehand."""

    objects: Any
    resolve_input: Callable[[str], str | None]


def _resolved_inputs(reader: LeanReader, inputs: tuple[str, ...]) -> dict[str, str] | None:
    """Each data input's manifest hash (``Vault.runs``' ``resolve_input``); None when one does not
    resolve: the service words that error."""
    from labvault.errors import LabvaultError
    from labvault.refs import DataRef, parse_ref

    out = {}
    for text in inputs:
        if not text.startswith("data:"):
            continue
        try:
            ref = parse_ref(text, expect=DataRef)
        except LabvaultError:
            return None
        snapshot = reader.snapshot(ref.name, ref.number) if isinstance(ref, DataRef) else None
        if snapshot is None:
            return None
        out[text] = str(snapshot.content_hash)
    return out


def runs_show(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    """``cli.runs.show``; an unknown, ambiguous or invalid reference is the full path's to report."""
    from labvault.errors import LabvaultError
    from labvault.services.tracking.export import export_run
    from labvault.services.tracking.liveness import process_gone
    from labvault.services.tracking.names import parse_run_id

    try:
        matches = reader.match_runs(parse_run_id(values["run"]))
    except LabvaultError:
        return False
    found = reader.runs(matches) if len(matches) == 1 else []
    resolved = _resolved_inputs(reader, found[0].inputs) if found else None
    if resolved is None:
        return False
    doc = export_run(_Sources(vault.objects, resolved.get), found[0])
    history = reader.metric_history(doc["id"])
    gone = process_gone(status=doc["status"], pid=doc.get("pid"), host=doc["host"])
    reproductions = [
        {"ref": r.ref, "verdict": r.tags.get("reproduce_verdict")}
        for r in reader.runs(reader.tagged_run_ids("reproduces", doc["ref"]))
    ]
    if values.get("json"):
        print_json({**doc, "metric_history": history_json(history), "reproductions": reproductions})
        return True
    print_run(doc, history, gone=gone, reproductions=reproductions)
    return True


def history_json(history: dict[str, list[MetricPoint]]) -> dict[str, list[dict[str, Any]]]:
    from labvault.entities import json_safe

    return {
        key: [{"step": p.step, "timestamp": format_moment(p.timestamp), "value": json_safe(p.value)} for p in points]
        for key, points in history.items()
    }


def status_line(doc: dict[str, Any], *, process_gone: bool) -> str:
    text: str = doc["status"]
    if doc["exit_code"] is not None:
        text += f" (exit code {doc['exit_code']})"
    if process_gone:
        text += f" (its process {doc['pid']} is gone: it was killed or crashed)"
    return text


def print_run(
    doc: dict[str, Any], history: dict[str, list[MetricPoint]], *, gone: bool, reproductions: list[dict[str, Any]]
) -> None:
    code = doc["code"]
    lines = [
        ("run", doc["ref"]),
        ("name", doc["name"]),
        ("project", doc["project"]),
        ("status", status_line(doc, process_gone=gone)),
        ("error", doc["error"]),
        ("parent", doc["parent"]),
        ("started", doc["started_at"]),
        ("ended", doc["ended_at"]),
        ("user", f"{doc['user']} on {doc['host']}"),
        ("command", " ".join(doc["command"] or [])),
        ("cwd", doc["cwd"]),
        (
            "commit",
            f"{code['commit']} ({code['branch']})" + (" dirty" if code["dirty"] else "") if code["commit"] else None,
        ),
        ("patch", code["patch"]),
        ("inputs", ", ".join(i["ref"] for i in doc["inputs"]) or None),
        ("config", ", ".join(c["path"] for c in doc["config"]) or None),
        ("seed", doc["seed"]),
        ("environment", (doc["environment"] or {}).get("sha256")),
        ("deleted", doc["deleted_at"]),
        ("reproduced by", ", ".join(f"{r['ref']} ({r['verdict']})" for r in reproductions) or None),
    ]
    OUTPUT.table(["", ""], [(k, v) for k, v in lines if v not in (None, "")])
    if doc["params"]:
        OUTPUT.table(["param", "value"], sorted(doc["params"].items()), title="params")
    if history:
        rows = [(key, f"{points[-1].value:.4g}", points[-1].step, len(points)) for key, points in history.items()]
        OUTPUT.table(["metric", "latest", "step", "points"], rows, title="metrics")
    if doc["tags"]:
        OUTPUT.table(["tag", "value"], sorted(doc["tags"].items()), title="tags")
    if doc["artifacts"]:
        rows = [(a["name"], a["kind"], a["size"], a["sha256"]) for a in doc["artifacts"]]
        OUTPUT.table(["artifact", "kind", "size", "sha256"], rows, title="artifacts")
    for warning in doc["capture_warnings"]:
        OUTPUT.info(f"capture warning: {warning}")
