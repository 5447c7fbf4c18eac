"""Remotes as the vault keeps them: ``"remotes"`` and ``"default_remote"`` in ``.labvault/config.json``.

A remote is another vault. Today that is a folder (a NAS, a mounted disk): the folder holding the
remote's ``.labvault``, made on the first push. Credentials never enter the file: a URL that
carries a user or a password is refused, as is a server URL (not supported yet).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from labvault.config import CONFIG_NAME, VaultConfig
from labvault.errors import Conflict, NotFound, ValidationError
from labvault.refs import validate_name
from labvault.storage.contained import write_text
from labvault.storage.locks import file_lock

__all__ = ["RemoteSpec", "add_remote", "default_remote", "list_remotes", "parse_location", "remove_remote"]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MAX_REMOTES = 100
_ADD_HINT = "labvault remote add NAME /path/to/folder"


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    name: str
    kind: str  # folder
    path: Path
    default: bool = False

    @property
    def url(self) -> str:
        return str(self.path)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url, "default": self.default}


def parse_location(text: str) -> Path:
    """A folder path (or ``file://`` URL) as an absolute path; refuses credentials and other schemes."""
    if not isinstance(text, str) or not text.strip() or "\0" in text or len(text) > 4096:
        raise ValidationError(f"invalid remote location {text[:80]!r}", hint=_ADD_HINT)
    match = _SCHEME_RE.match(text)
    if match is None:
        return Path(os.path.abspath(Path(text).expanduser()))
    scheme = match.group(1).lower()
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
    except ValueError:
        raise ValidationError("invalid remote URL", hint=_ADD_HINT) from None
    if "@" in netloc:
        # Never echo the URL: its user part may hold a password.
        raise ValidationError(
            f"the {scheme}:// URL carries credentials, and config.json never holds them",
            hint="give the URL without user or password; credentials come from the environment",
        )
    if scheme == "file":
        if netloc not in ("", "localhost"):
            raise ValidationError(f"file:// URL names the host {netloc!r}", hint="use file:///absolute/path")
        return Path(unquote(parts.path))
    if scheme in ("http", "https"):
        raise ValidationError(
            "a server remote needs the labvault server, which this labvault does not have yet",
            hint="use a folder remote (a NAS or mounted disk): " + _ADD_HINT,
        )
    raise ValidationError(
        f"unsupported remote scheme {scheme}://",
        hint="a remote is another vault's folder: " + _ADD_HINT,
    )


def _raw_remotes(config: VaultConfig) -> dict[str, Any]:
    raw = config.extra.get("remotes", {})
    return raw if isinstance(raw, dict) else {}


def list_remotes(config: VaultConfig) -> list[RemoteSpec]:
    """The configured remotes, by name; entries that do not validate are skipped (config.json is a file)."""
    default = config.extra.get("default_remote")
    out = []
    for name, entry in sorted(_raw_remotes(config).items())[:_MAX_REMOTES]:
        try:
            validate_name(name, what="remote name")
            if not isinstance(entry, dict) or entry.get("kind", "folder") != "folder":
                continue
            path = parse_location(entry["url"])
        except (ValidationError, KeyError, TypeError):
            continue
        out.append(RemoteSpec(name=name, kind="folder", path=path, default=name == default))
    return out


def default_remote(config: VaultConfig, name: str | None) -> RemoteSpec:
    """The remote named ``name``, else the default one, else the only one."""
    remotes = list_remotes(config)
    if name is not None:
        for spec in remotes:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in remotes) or "none"
        raise NotFound(f"no remote named {name!r} (configured: {known})", hint=_ADD_HINT)
    if not remotes:
        raise NotFound("this vault has no remote", hint=_ADD_HINT)
    for spec in remotes:
        if spec.default:
            return spec
    if len(remotes) == 1:
        return remotes[0]
    raise ValidationError(
        f"{len(remotes)} remotes and none is the default", hint="give --remote NAME, or re-add one with --default"
    )


def _update(vault_dir: Path, change: Any) -> None:
    """Re-read config.json under the vault's init lock, apply ``change`` to its extra keys, write it."""
    with file_lock(vault_dir / "locks" / "init.lock", timeout=60, what="the vault's config.json"):
        config = VaultConfig.load(vault_dir)
        extra = json.loads(json.dumps(config.extra))
        change(extra)
        doc = dataclasses.replace(config, extra=extra)  # every other setting kept as it is
        write_text(vault_dir / CONFIG_NAME, doc.to_json(), durable=True)


def add_remote(vault_dir: Path, *, name: str, location: str, default: bool = False) -> RemoteSpec:
    validate_name(name, what="remote name")
    path = parse_location(location)
    if path == vault_dir.parent or path == vault_dir:
        raise ValidationError(f"{path} is this vault itself", hint="a remote is another vault's folder")

    def change(extra: dict[str, Any]) -> None:
        remotes = extra.get("remotes")
        remotes = remotes if isinstance(remotes, dict) else {}
        old = remotes.get(name)
        if isinstance(old, dict) and old.get("url") != str(path):
            raise Conflict(
                f"remote {name!r} already points at {old.get('url')}",
                hint=f"remove it first: labvault remote remove {name}",
            )
        if name not in remotes and len(remotes) >= _MAX_REMOTES:
            raise ValidationError(f"a vault keeps at most {_MAX_REMOTES} remotes", hint="remove one first")
        remotes[name] = {"kind": "folder", "url": str(path)}
        extra["remotes"] = remotes
        if default:
            extra["default_remote"] = name

    _update(vault_dir, change)
    return RemoteSpec(name=name, kind="folder", path=path, default=default)


def remove_remote(vault_dir: Path, name: str) -> None:
    def change(extra: dict[str, Any]) -> None:
        remotes = extra.get("remotes")
        if not isinstance(remotes, dict) or name not in remotes:
            raise NotFound(f"no remote named {name!r}", hint="list them with `labvault remote list`")
        del remotes[name]
        if extra.get("default_remote") == name:
            del extra["default_remote"]

    _update(vault_dir, change)
