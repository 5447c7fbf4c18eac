"""What the lean read commands print (``runs`` in :mod:`labvault.cli.lean_runs`): the same bytes as
the typer commands in ``cli/runs.py``, ``cli/models.py``, ``cli/data.py`` and ``cli/audit.py``
(``tests/e2e/test_lean.py`` compares them).

Each command returns False, having printed nothing, when the full path must answer (an unknown
name, a form it does not handle): the services own those messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labvault.cli.lean_runs import format_moment as _time
from labvault.cli.lean_runs import runs_list, runs_show
from labvault.cli.lean_runs import valid_name as _valid_name
from labvault.cli.render import OUTPUT, human_bytes, print_json

if TYPE_CHECKING:
    from labvault.entities import AuditEvent, Manifest, ModelVersion, RegisteredModel, Snapshot
    from labvault.vault import LeanReader, Vault

__all__ = [
    "COMMANDS",
    "model_json",
    "model_version_doc",
    "print_audit_events",
    "print_manifest",
    "print_model",
    "print_model_version",
    "print_models",
    "print_versions",
    "version_json",
]


def _models_list(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    print_models(reader.models(), json_output=bool(values.get("json")))
    return True


def print_models(models: list[RegisteredModel], *, json_output: bool) -> None:
    if json_output:
        print_json([model_json(m) for m in models])
        return
    rows = [
        (m.ref, m.versions, m.latest or "-", ", ".join(f"{a}={v}" for a, v in m.aliases.items()) or "-") for m in models
    ]
    OUTPUT.table(["model", "versions", "latest", "aliases"], rows)


def model_json(m: RegisteredModel) -> dict[str, Any]:
    """``cli.models.model_json``."""
    return {
        "id": m.ref,
        "ref": m.ref,
        "project": m.project,
        "model": m.model,
        "versions": m.versions,
        "latest": m.latest,
        "aliases": m.aliases,
        "created_at": _time(m.created_at),
        "created_by": m.created_by,
    }


def version_json(v: ModelVersion) -> dict[str, Any]:
    """The JSON form of a model version (``id`` and ``ref``, ISO times)."""
    return {
        "id": v.ref,
        "ref": v.ref,
        "project": v.project,
        "model": v.model,
        "version": v.version,
        "tree": str(v.tree),
        "content": str(v.content),
        "size": v.size,
        "files": v.files,
        "created_at": _time(v.created_at),
        "created_by": v.created_by,
        "run": f"run:{v.run_id}" if v.run_id else None,
        "message": v.message,
        "source": v.source,
        "notes": list(v.notes),
        "archived": v.archived,
        "archived_at": _time(v.archived_at),
        "aliases": list(v.aliases),
    }


def _models_versions(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    from labvault.errors import LabvaultError
    from labvault.refs import ModelRef, parse_ref

    try:
        ref = parse_ref(values["name"], expect=ModelRef)
    except LabvaultError:
        return False
    model = reader.model_id(ref.project, ref.model) if isinstance(ref, ModelRef) and ref.version is None else None
    if model is None:
        return False
    print_versions(
        reader.versions(model, include_archived=bool(values.get("all"))), json_output=bool(values.get("json"))
    )
    return True


def print_versions(found: list[ModelVersion], *, json_output: bool) -> None:
    if json_output:
        print_json([version_json(v) for v in found])
        return
    rows = [
        (
            v.version,
            ", ".join(v.aliases) or "-",
            human_bytes(v.size),
            _time(v.created_at),
            v.created_by,
            "archived" if v.archived else "",
            v.message or "",
        )
        for v in found
    ]
    OUTPUT.table(["version", "aliases", "size", "registered", "by", "", "message"], rows)


def _models_show(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    """``models show PROJECT/MODEL[@VERSION|ALIAS]``; an unknown name or version is the full path's to word."""
    from labvault.errors import LabvaultError
    from labvault.refs import ModelRef, parse_ref, parse_semver

    try:
        ref = parse_ref(values["ref"], expect=ModelRef)
        if isinstance(ref, ModelRef) and ref.version is not None and not ref.is_alias:
            parse_semver(ref.version)
    except LabvaultError:
        return False
    if not isinstance(ref, ModelRef):
        return False
    if ref.version is not None:
        found = reader.find_version(ref.project, ref.model, ref.version, alias=ref.is_alias)
        if found is None:
            return False
        print_model_version(model_version_doc(vault, found), json_output=bool(values.get("json")))
        return True
    model = reader.model_id(ref.project, ref.model)
    if model is None:
        return False
    versions = reader.versions(model, include_archived=True)
    print_model(ref.name, reader.aliases(model), versions, json_output=bool(values.get("json")))
    return True


def print_model(name: str, aliases: dict[str, str], found: list[ModelVersion], *, json_output: bool) -> None:
    """``models show PROJECT/MODEL``: its aliases, then every version."""
    versions = [version_json(v) for v in found]
    if json_output:
        print_json({"id": name, "ref": name, "aliases": aliases, "versions": versions})
        return
    OUTPUT.line(f"model    {name}")
    OUTPUT.line("aliases  " + (", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"))
    OUTPUT.table(
        ["version", "aliases", "size", "status"],
        [
            (d["version"], ", ".join(d["aliases"]) or "-", human_bytes(d["size"]), "archived" if d["archived"] else "")
            for d in versions
        ],
    )


def model_version_doc(vault: Vault, version: ModelVersion) -> dict[str, Any]:
    """``models show PROJECT/MODEL@VERSION --json``: the version, its metrics and its files (read verified)."""
    from labvault.services.registry.show import version_file_list, version_metrics

    files = version_file_list(vault.objects, version)
    return {
        **version_json(version),
        "metrics": version_metrics(vault.objects, files)[0],
        "file_list": [{"path": f.path, "sha256": str(f.digest), "size": f.size} for f in files],
    }


def print_model_version(doc: dict[str, Any], *, json_output: bool) -> None:
    """``models show PROJECT/MODEL@VERSION``."""
    if json_output:
        print_json(doc)
        return
    for key in ("ref", "content", "created_at", "created_by", "run", "message"):
        if doc.get(key):
            OUTPUT.line(f"{key:<11}{doc[key]}")
    OUTPUT.line(f"{'aliases':<11}{', '.join(doc['aliases']) or '-'}")
    if doc["archived"]:
        OUTPUT.line(f"{'archived':<11}{doc['archived_at']}")
    metrics = doc["metrics"] or {}
    if metrics:
        OUTPUT.line(f"{'metrics':<11}" + ", ".join(f"{k}={metrics[k]}" for k in sorted(metrics)))
    for note in doc["notes"]:
        OUTPUT.line(f"{'note':<11}{note}")
    OUTPUT.table(
        ["file", "size", "sha256"], [(f["path"], human_bytes(f["size"]), f["sha256"]) for f in doc["file_list"]]
    )


def _data_show(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    from labvault.errors import LabvaultError
    from labvault.refs import DataRef, parse_ref

    text = values["ref"]
    if text.startswith(("sha256:", "run:")) or "/" in text:
        return False
    try:
        ref = parse_ref(text if text.startswith("data:") else f"data:{text}", expect=DataRef)
    except LabvaultError:
        return False
    snapshot = reader.snapshot(ref.name, ref.number) if isinstance(ref, DataRef) else None
    if snapshot is None:
        return False
    print_manifest(vault.data.manifest(snapshot), json_output=bool(values.get("json")))
    return True


def print_manifest(manifest: Manifest, *, json_output: bool) -> None:
    """``data show``: the summary keys, then every file with its sha256, size, record count and schema."""
    if json_output:
        print_json(manifest.to_json())
        return
    doc = manifest.snapshot.to_json()
    for key in _SHOW_KEYS:
        if key in doc:
            OUTPUT.line(f"{key + ':':<16}{'' if doc[key] is None else doc[key]}")
    for note in manifest.snapshot.notes:
        OUTPUT.line(f"{'note:':<16}{note}")
    OUTPUT.table(
        ["path", "size", "sha256", "records", "schema"],
        [
            [
                f.path,
                f.size,
                f.sha256.short,
                "" if f.record_count is None else f.record_count,
                ", ".join(f"{c}:{t}" for c, t in f.schema) if f.schema else "",
            ]
            for f in manifest.files
        ],
    )


_SHOW_KEYS = (
    "ref",
    "storage_uri",
    "content_hash",
    "file_count",
    "total_bytes",
    "tabular",
    "record_count",
    "schema_hash",
    "created_at",
    "created_by",
    "message",
    "source_url",
    "source_version",
)


def _summary(s: Snapshot) -> list[Any]:
    """``cli.data._summary`` without its first cell."""
    records = "" if s.record_count is None else s.record_count
    return [s.file_count, human_bytes(s.total_bytes), records, s.created_at.strftime("%Y-%m-%d %H:%M")]


def _data_list(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    rows = reader.datasets()
    if values.get("json"):
        print_json([{**s.to_json(), "versions": n} for s, n in rows])
        return True
    OUTPUT.table(
        ["dataset", "latest", "versions", "files", "size", "records", "created"],
        [[s.name, s.ref, n, *_summary(s)] for s, n in rows],
    )
    return True


def _data_log(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    name = values["name"].removeprefix("data:")
    if not _valid_name(name, "dataset name"):
        return False
    versions = reader.snapshots(name)
    if not versions:
        return False
    if values.get("json"):
        print_json([s.to_json() for s in versions])
        return True
    OUTPUT.table(
        ["version", "content", "files", "size", "records", "created", "by", "message"],
        [[s.ref, s.content_hash.short, *_summary(s), s.created_by, s.message] for s in versions],
    )
    return True


def _audit_log(reader: LeanReader, values: dict[str, Any], vault: Vault) -> bool:
    events = reader.audit_events(
        subject_prefix=values.get("subject"), action=values.get("action"), limit=values.get("limit")
    )
    print_audit_events(events, json_output=bool(values.get("json")))
    return True


def print_audit_events(events: list[AuditEvent], *, json_output: bool) -> None:
    """``audit log``: the events given newest first, printed oldest first."""
    events = list(reversed(events))
    docs = [
        {
            "id": e.seq,
            "ref": f"audit:{e.seq}",
            "seq": e.seq,
            "at": _time(e.at),
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "before": e.before,
            "after": e.after,
            "policy_hash": f"sha256:{e.policy_hash}" if e.policy_hash else None,
            "details": e.details,
            "prev_hash": f"sha256:{e.prev_hash}",
            "hash": f"sha256:{e.hash}",
        }
        for e in events
    ]
    if json_output:
        print_json(docs)
        return
    OUTPUT.table(
        ["#", "at", "actor", "action", "subject", "before", "after"],
        [
            (d["seq"], d["at"], d["actor"], d["action"], d["subject"], d["before"] or "-", d["after"] or "-")
            for d in docs
        ],
    )


COMMANDS: dict[tuple[str, str], Callable[[LeanReader, dict[str, Any], Vault], bool]] = {
    ("runs", "list"): runs_list,
    ("runs", "show"): runs_show,
    ("models", "list"): _models_list,
    ("models", "versions"): _models_versions,
    ("models", "show"): _models_show,
    ("data", "show"): _data_show,
    ("data", "list"): _data_list,
    ("data", "log"): _data_log,
    ("audit", "log"): _audit_log,
}
