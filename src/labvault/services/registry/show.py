"""What ``models show PROJECT/MODEL@VERSION`` reads from the object store: the version's files and
its ``metrics.json``. Free of the metadata store, so the lean read path (``cli/lean_views.py``) and
:mod:`.read` share it."""

from __future__ import annotations

from typing import Any

from labvault.entities import ModelVersion
from labvault.errors import ValidationError
from labvault.safeload import loads_json
from labvault.services.registry.layout import FileEntry, version_files
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["version_file_list", "version_metrics"]


def version_file_list(objects: ObjectStore, version: ModelVersion) -> list[FileEntry]:
    """The version's files, sorted by path."""
    return version_files(objects, version.content)


def version_metrics(objects: ObjectStore, files: list[FileEntry]) -> tuple[dict[str, Any] | None, str]:
    """The version's ``metrics.json`` (verified read) and a note when it is absent or not a mapping."""
    entry = next((f for f in files if f.path == "metrics.json"), None)
    if entry is None:
        return None, "the version has no metrics.json"
    try:
        doc = loads_json(objects.get_bytes(entry.digest), name="metrics.json")
    except ValidationError as err:
        return None, err.message
    if not isinstance(doc, dict):
        return None, "metrics.json is not a JSON object of metric values"
    return doc, ""
