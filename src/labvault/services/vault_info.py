"""``labvault vault show``: where a vault's metadata and objects are, and how much they hold."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labvault.config import VaultConfig, redact_url
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["VaultInfo", "describe_vault"]


@dataclass(frozen=True, slots=True)
class VaultInfo:
    path: str
    metadata: str  # a URL without credentials, or the SQLite file
    objects: str  # a URL without credentials, or the vault folder's objects/
    team: bool
    format_version: int
    object_count: int
    object_bytes: int
    cache_size: int
    cache_bytes: int
    cache_files: int


def describe_vault(*, vault_dir: Path, config: VaultConfig, objects: ObjectStore) -> VaultInfo:
    """Count the stored objects (one listing of the store) and the local cache's files."""
    count = size = 0
    for info in objects.iter_objects():
        count += 1
        size += info.size
    cache_files, cache_bytes = _folder_use(vault_dir / "cache" / "objects")
    return VaultInfo(
        path=str(vault_dir),
        metadata=redact_url(config.database_url) if config.database_url else str(vault_dir / "meta.db"),
        objects=redact_url(config.objects_url) if config.objects_url else str(vault_dir / "objects"),
        team=config.is_team,
        format_version=config.format_version,
        object_count=count,
        object_bytes=size,
        cache_size=config.cache_size,
        cache_bytes=cache_bytes,
        cache_files=cache_files,
    )


def _folder_use(folder: Path) -> tuple[int, int]:
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(folder):  # never follows links
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            files += 1
            nbytes += st.st_size
    return files, nbytes
