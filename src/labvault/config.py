"""Settings: where the vault is, who is acting, and the vault's own config file.

Kept free of heavy imports (no pydantic, no SQLAlchemy): every command reads it at start-up.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError, VaultNotFound
from labvault.safeload import load_json

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "VAULT_DIRNAME",
    "Settings",
    "VaultConfig",
    "acting_user",
    "find_vault_dir",
]

VAULT_DIRNAME = ".labvault"
CONFIG_NAME = "config.json"
#: Storage format version written in config.json; see docs/design/storage-format.md.
#: 2 added packs of small objects; a format-1 vault is read as is and marked 2 when opened.
FORMAT_VERSION = 2


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-level settings read from the environment once, then passed down explicitly."""

    vault_dir: Path | None = None
    uri: str | None = None
    user: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        vault_dir = env.get("LABVAULT_DIR")
        return cls(
            vault_dir=Path(vault_dir).expanduser() if vault_dir else None,
            uri=env.get("LABVAULT_URI") or None,
            user=env.get("LABVAULT_USER") or None,
        )


@dataclass(frozen=True, slots=True)
class VaultConfig:
    """The content of ``.labvault/config.json``."""

    format_version: int = FORMAT_VERSION
    database_url: str | None = None  # None: the embedded SQLite file beside the config
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, vault_dir: Path) -> VaultConfig:
        path = vault_dir / CONFIG_NAME
        try:
            raw = load_json(path, hint="restore the file from a backup, or re-run `labvault init`")
        except FileNotFoundError:
            raise VaultNotFound(f"{vault_dir} is not a labvault vault (no {CONFIG_NAME})") from None
        if not isinstance(raw, dict):
            raise ValidationError(f"{path} is not a JSON object", hint="restore the file from a backup")
        version = raw.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValidationError(
                f"{path} has storage format {version!r}; this labvault reads up to {FORMAT_VERSION}",
                hint="upgrade labvault",
            )
        recognised = {"format_version", "database_url"}
        return cls(
            format_version=version,
            database_url=raw.get("database_url"),
            extra={k: v for k, v in raw.items() if k not in recognised},
        )

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format_version": self.format_version, **self.extra}
        if self.database_url:
            doc["database_url"] = self.database_url
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def find_vault_dir(start: Path | None = None, *, settings: Settings | None = None) -> Path:
    """Find the ``.labvault`` folder: ``LABVAULT_DIR`` if set, else walk up from ``start`` like git."""
    settings = settings or Settings.from_env()
    if settings.vault_dir is not None:
        if not (settings.vault_dir / CONFIG_NAME).is_file():
            raise VaultNotFound(f"LABVAULT_DIR={settings.vault_dir} is not a labvault vault")
        return settings.vault_dir.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / VAULT_DIRNAME
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise VaultNotFound(f"not inside a labvault vault (searched from {here} upwards)")


def acting_user(settings: Settings | None = None) -> str:
    """``LABVAULT_USER``, else git ``user.email``, else the OS user (self-asserted locally)."""
    settings = settings or Settings.from_env()
    if settings.user:
        return settings.user
    try:
        out = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
