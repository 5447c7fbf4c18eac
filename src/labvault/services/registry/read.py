"""Reading the registry: resolve references, list, show, and materialise verified copies."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Any

from labvault.entities import ModelVersion, RegisteredModel
from labvault.errors import NotFound, StorageError, ValidationError
from labvault.refs import ModelRef
from labvault.safeload import load_json
from labvault.services.registry.context import RegistryContext, parse_version
from labvault.services.registry.layout import FileEntry, write_version
from labvault.services.registry.register import parse_model_name
from labvault.services.registry.show import version_file_list, version_metrics
from labvault.storage.contained import Dest
from labvault.storage.locks import file_lock
from labvault.storage.meta.repos import registry as repo

__all__ = ["cached_copy", "list_models", "list_versions", "materialize", "read_metrics", "resolve"]


def _model_id(conn: Any, ref: ModelRef) -> int:
    mid = repo.model_id(conn, ref.project, ref.model)
    if mid is None:
        raise NotFound(f"no model {ref.name} in the registry", hint="list models with `labvault models list`")
    return mid


def resolve(ctx: RegistryContext, text: str | ModelRef) -> ModelVersion:
    """``project/model@version`` or ``@alias`` -> the registered version (archived ones included),
    with every alias that points at it."""
    with ctx.meta.read() as conn:
        _, version_id, version = resolve_in(conn, text)
        return dataclasses.replace(version, aliases=repo.aliases_on(conn, version_id))


def resolve_in(conn: Any, text: str | ModelRef) -> tuple[int, int, ModelVersion]:
    """``(model_id, version_id, version)`` inside the caller's transaction."""
    ref = parse_model_name(text) if isinstance(text, str) else text
    if ref.version is None:
        raise ValidationError(f"{ref} names no version", hint=f"write {ref}@1.2.0 or {ref}@prod")
    if not ref.is_alias:
        parse_version(ref.version)
    found = repo.find_version(conn, ref.project, ref.model, ref.version, alias=ref.is_alias)
    if found is not None:
        return found
    _model_id(conn, ref)  # raises NotFound for an unknown model
    if ref.is_alias:
        raise NotFound(
            f"{ref.name} has no alias {ref.version!r}", hint=f"see its aliases with `labvault models show {ref.name}`"
        )
    raise NotFound(
        f"{ref.name} has no version {ref.version}", hint=f"list them with `labvault models versions {ref.name}`"
    )


def list_models(ctx: RegistryContext) -> list[RegisteredModel]:
    with ctx.meta.read() as conn:
        return repo.list_models(conn)


def list_versions(ctx: RegistryContext, name: str, *, include_archived: bool = False) -> list[ModelVersion]:
    ref = parse_model_name(name)
    if ref.version is not None:
        raise ValidationError(f"{ref} names a version; versions lists a model", hint=f"write {ref.name}")
    with ctx.meta.read() as conn:
        return repo.list_versions(conn, _model_id(conn, ref), include_archived=include_archived)


def aliases(ctx: RegistryContext, name: str) -> dict[str, str]:
    ref = parse_model_name(name)
    with ctx.meta.read() as conn:
        return repo.aliases_of(conn, _model_id(conn, ref))


def files_of(ctx: RegistryContext, version: ModelVersion) -> list[FileEntry]:
    return version_file_list(ctx.objects, version)


def read_metrics(ctx: RegistryContext, version: ModelVersion) -> tuple[dict[str, Any] | None, str]:
    """The version's ``metrics.json`` (verified read) and a note when it is absent or not a mapping."""
    return version_metrics(ctx.objects, files_of(ctx, version))


def materialize(ctx: RegistryContext, version: ModelVersion, dest: Path, *, flat: bool = False) -> Path:
    """Write the version's verified files to ``dest/PROJECT/MODEL/VERSION`` (or ``dest`` with ``flat``).

    Files already there with the right content are kept; a different file in the way is a conflict,
    found before anything is written.
    """
    rel = "." if flat else f"{version.project}/{version.model}/{version.version}"
    return write_version(ctx.objects, version.content, dest, rel)


def _stamp(folder: Path, files: list[FileEntry]) -> dict[str, list[int]]:
    out = {}
    for f in files:
        st = os.stat(folder / f.path)
        out[f.path] = [st.st_size, st.st_mtime_ns]
    return out


def cached_copy(ctx: RegistryContext, version: ModelVersion) -> Path:
    """A verified copy under ``<vault>/cache/models/PROJECT/MODEL/VERSION``.

    Its files are verified when written; later calls compare each file's size and mtime with what
    was recorded then, and rebuild the copy if anything changed.
    """
    base = ctx.vault_dir / "cache" / "models" / version.project / version.model
    final = base / version.version
    stamp_path = base / f".{version.version}.stamp.json"
    files = files_of(ctx, version)
    with Dest.open(ctx.vault_dir / "cache" / "models") as models:
        models.sub(f"{version.project}/{version.model}").close()  # never through a link
    # One builder at a time per version: a concurrent reader never sees a half-replaced copy.
    with file_lock(base / f".{version.version}.lock", timeout=600, what=f"the cached copy of {version.ref}"):
        # The stamp is a file in the vault folder, not a record: one that is missing, unreadable or not
        # what this code wrote (hand-edited, hostile) only means the copy is rebuilt.
        try:
            recorded = load_json(stamp_path, name="model cache stamp")
            if (
                isinstance(recorded, dict)
                and recorded.get("content") == version.content.hex
                and recorded.get("files") == _stamp(final, files)
            ):
                return final
        except (OSError, ValidationError, StorageError):
            pass
        tmp = f".tmp-{secrets.token_hex(6)}"
        with Dest.open(base, create=False) as into:
            try:
                built = write_version(ctx.objects, version.content, base, tmp)
                doc = {"content": version.content.hex, "files": _stamp(built, files)}
                into.remove(stamp_path.name)
                into.remove(version.version)
                into.rename(tmp, version.version)
                into.write_file(stamp_path.name, json.dumps(doc).encode())
            except OSError as exc:
                raise StorageError(f"cannot write the model cache {base}: {exc.strerror}") from exc
            finally:
                into.remove(tmp)
    return final
