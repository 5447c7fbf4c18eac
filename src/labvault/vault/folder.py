"""The vault folder on disk: finding one and reading its config (``Vault.open``), making one
(``Vault.init``), marking an older one with this format, and rewriting its ``config.json``.

Making a vault is safe to run concurrently: the first process creates it under the folder's init lock,
the others find it made. ``config.json`` is written last, atomically, once the database is migrated,
so a vault whose init was interrupted is simply initialised again; every later change of it is made
under the same lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from labvault.config import (
    CONFIG_NAME,
    FORMAT_VERSION,
    VAULT_DIRNAME,
    Settings,
    VaultConfig,
    check_database_url,
    check_objects_url,
    find_vault_dir,
)
from labvault.errors import StorageError, ValidationError
from labvault.storage.contained import write_text
from labvault.storage.locks import file_lock
from labvault.storage.objects.local import LocalObjectStore

if TYPE_CHECKING:
    from labvault.vault import Vault

__all__ = ["init_vault", "open_config", "update_config", "upgrade_format"]

_GITIGNORE_LINE = f"{VAULT_DIRNAME}/"


def open_config(path: str | os.PathLike[str] | None, settings: Settings) -> tuple[Path, VaultConfig]:
    """The vault folder at ``path`` (a project root or a ``.labvault`` folder), else found by walking
    up, and its config, upgraded to this format; credential warnings go to stderr."""
    if path is not None:
        start = Path(path).expanduser()
        if start.name == VAULT_DIRNAME and (start / CONFIG_NAME).is_file():
            vault_dir = start.resolve()
        else:
            vault_dir = find_vault_dir(start, settings=Settings())
    else:
        vault_dir = find_vault_dir(settings=settings)
    config = VaultConfig.load(vault_dir)
    if config.format_version < FORMAT_VERSION:
        config = upgrade_format(vault_dir, config)
    for warning in config.credential_warnings():
        sys.stderr.write(f"warning: {warning}\n")
    return vault_dir, config


def init_vault(
    cls: type[Vault],
    path: str | os.PathLike[str] | None,
    settings: Settings,
    *,
    database_url: str | None,
    objects_url: str | None,
    cache_size: int | None,
) -> tuple[Vault, bool]:
    """Make the vault in ``path/.labvault`` (or ``LABVAULT_DIR``); ``(vault, created)``."""
    if path is None and settings.vault_dir is not None:
        vault_dir = settings.vault_dir.resolve()
    else:
        root = Path(path or Path.cwd()).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise ValidationError(f"{root} is not a folder", hint="give the project root folder")
        vault_dir = root / VAULT_DIRNAME
    if database_url:
        from labvault.storage.meta.store import normalise_url

        database_url = normalise_url(check_database_url(database_url))
    if objects_url:
        from labvault.storage.team_store import normalise_objects_url

        objects_url = normalise_objects_url(check_objects_url(objects_url), base=vault_dir.parent)
    if (vault_dir / CONFIG_NAME).is_file():
        return cls(vault_dir, VaultConfig.load(vault_dir), settings), False
    if objects_url:  # reached before anything is written: a typo leaves no half-made vault behind
        from labvault.storage.team_store import open_objects

        open_objects(objects_url, cache_dir=vault_dir / "cache" / "objects", cache_size=0, create=True)
    try:
        LocalObjectStore.create(vault_dir)
    except OSError as exc:
        raise StorageError(f"cannot create {vault_dir}: {exc.strerror}") from exc
    with file_lock(vault_dir / "locks" / "init.lock", timeout=120, what="the vault being initialised"):
        if (vault_dir / CONFIG_NAME).is_file():
            return cls(vault_dir, VaultConfig.load(vault_dir), settings), False
        config = VaultConfig(database_url=database_url, objects_url=objects_url)
        if cache_size is not None:
            config = dataclasses.replace(config, cache_size=cache_size)
        vault = cls(vault_dir, config, settings)
        vault.meta  # noqa: B018 - opening the store runs the migrations, before config.json says "ready"
        _write_atomic(vault_dir / CONFIG_NAME, config.to_json())
        _ignore_in_git(vault_dir.parent)
    return vault, True


def update_config(vault_dir: Path, change: Callable[[VaultConfig], VaultConfig]) -> VaultConfig:
    """Rewrite ``config.json`` with ``change`` applied to what it says now, under the init lock."""
    with file_lock(vault_dir / "locks" / "init.lock", timeout=120, what="the vault's config"):
        config = change(VaultConfig.load(vault_dir))
        _write_atomic(vault_dir / CONFIG_NAME, config.to_json())
    return config


def upgrade_format(vault_dir: Path, config: VaultConfig) -> VaultConfig:
    """Mark an older vault with this format before anything is written in it.

    Format 2 only adds packs beside the format-1 layout, so the upgrade is the version number: an
    older labvault then refuses the vault (it would not see packed objects) instead of misreading it.
    """
    upgraded = dataclasses.replace(config, format_version=FORMAT_VERSION)
    try:
        with file_lock(vault_dir / "locks" / "init.lock", timeout=120, what="the vault being upgraded"):
            if VaultConfig.load(vault_dir).format_version < FORMAT_VERSION:
                _write_atomic(vault_dir / CONFIG_NAME, upgraded.to_json())
    except (OSError, StorageError):
        return config  # a read-only vault: readable as it is; a write would fail on its own anyway
    return upgraded


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text, durable=True)


def _ignore_in_git(root: Path) -> None:
    """Add ``.labvault/`` to the project's .gitignore once."""
    gitignore = root / ".gitignore"
    with contextlib.suppress(FileNotFoundError):
        lines = gitignore.read_text(encoding="utf-8").splitlines()
        if any(line.strip() in (_GITIGNORE_LINE, VAULT_DIRNAME, f"/{_GITIGNORE_LINE}") for line in lines):
            return
    try:
        existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
        sep = "" if not existing or existing.endswith("\n") else "\n"
        _write_atomic(gitignore, f"{existing}{sep}{_GITIGNORE_LINE}\n")
    except OSError as exc:
        raise StorageError(f"cannot update {gitignore}: {exc.strerror}") from exc
