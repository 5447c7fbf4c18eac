"""Remotes as the vault keeps them: ``"remotes"`` and ``"default_remote"`` in ``.labvault/config.json``.

A remote is another vault: a folder (a NAS, a mounted disk) holding the remote's ``.labvault``,
made on the first push; or a team vault, named by its database and object-store URLs and reached
through a small vault folder of its own under ``.labvault/remotes/NAME`` that joins it (its
config and read cache); or a labvault server by its ``http(s)://`` URL, whose transfers go through
its API (``labvault.client.remote``; the token comes from ``LABVAULT_TOKEN`` or the saved login for
that URL). Credentials never enter the file: a URL that carries a password, key or token is refused.
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

from labvault.config import CONFIG_NAME, VaultConfig, check_database_url, check_objects_url, redact_url
from labvault.errors import Conflict, ExternalError, LabvaultError, NotFound, ValidationError, VaultNotFound
from labvault.refs import validate_name
from labvault.storage.contained import write_text
from labvault.storage.locks import file_lock

__all__ = [
    "RemoteSpec",
    "add_remote",
    "default_remote",
    "is_server_url",
    "list_remotes",
    "parse_location",
    "parse_server_url",
    "remove_remote",
    "require_vault",
    "unreachable",
]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MAX_REMOTES = 100
_ADD_HINT = "labvault remote add NAME /path/to/folder"
_SERVER_HINT = "give http://HOST:PORT or https://HOST, as `labvault server` prints"


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    name: str
    kind: str  # folder | team | server
    path: Path  # the folder; for a team vault, the local folder that joins it (unused for a server)
    default: bool = False
    database_url: str | None = None  # team vaults only
    objects_url: str | None = None
    server_url: str | None = None  # servers only: http(s)://host[:port][/prefix], no trailing slash

    @property
    def url(self) -> str:
        if self.kind == "server":
            return self.server_url or ""
        if self.kind == "team":
            return f"{redact_url(self.database_url or '')} + {redact_url(self.objects_url or '')}"
        return str(self.path)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url, "default": self.default}


def team_folder(vault_dir: Path, name: str) -> Path:
    """The local folder whose ``.labvault`` joins a team-vault remote."""
    return vault_dir / "remotes" / name


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
            "a server URL is a server remote, not a folder",
            hint="add it with `labvault remote add NAME https://HOST[:PORT]`",
        )
    raise ValidationError(
        f"unsupported remote scheme {scheme}://",
        hint="a remote is another vault's folder: " + _ADD_HINT,
    )


def is_server_url(text: str) -> bool:
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def parse_server_url(text: str) -> str:
    """A labvault server's URL, ``http(s)://host[:port][/prefix]`` without a trailing slash; refuses
    credentials (a token never goes in config.json), queries and fragments, never echoing them."""
    if not isinstance(text, str) or not text.strip() or "\0" in text or len(text) > 2048 or text != text.strip():
        raise ValidationError("invalid server URL", hint=_SERVER_HINT)
    try:
        parts = urlsplit(text.rstrip("/"))
        hostname, _port = parts.hostname, parts.port  # a bad port raises here
    except ValueError:
        raise ValidationError("invalid server URL (host or port)", hint=_SERVER_HINT) from None
    if "@" in parts.netloc:
        raise ValidationError(
            f"the {parts.scheme}:// URL carries credentials, and config.json never holds them",
            hint="give the URL alone; the token comes from LABVAULT_TOKEN or `labvault login URL`",
        )
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise ValidationError("invalid server URL", hint=_SERVER_HINT)
    if parts.query or parts.fragment:
        raise ValidationError("a server URL has no query or fragment", hint=_SERVER_HINT)
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path}"


def require_vault(spec: RemoteSpec) -> RemoteSpec:
    """``spec``, unless it is a server remote: those move through the server's API, not a vault's stores."""
    if spec.kind == "server":
        raise ValidationError(
            f"remote {spec.name!r} is a server ({spec.url}); this works only with a folder or team-vault remote",
            hint=f"`labvault push|pull --remote {spec.name}` and `labvault remote status {spec.name}` work with it "
            "(from Python: open the vault with labvault.open())",
        )
    return spec


def unreachable(spec: RemoteSpec) -> LabvaultError:
    """The error for a remote with no vault to read: a folder not there (exit 7), else none made yet (exit 3)."""
    if spec.kind == "folder" and not spec.path.is_dir():
        return ExternalError(
            f"cannot reach remote {spec.name!r}: {spec.path} is not there",
            hint="mount the disk or fix the path (see `labvault remote list`)",
        )
    return VaultNotFound(f"remote {spec.name!r} ({spec.path}) holds no vault yet", hint="push to it first")


def _raw_remotes(config: VaultConfig) -> dict[str, Any]:
    raw = config.extra.get("remotes", {})
    return raw if isinstance(raw, dict) else {}


def _team_urls(db: str, objects: str) -> tuple[str, str]:
    for url, what in ((db, "database"), (objects, "object store")):
        if not isinstance(url, str) or not url or len(url) > 4096 or "\0" in url:
            raise ValidationError(f"invalid {what} URL", hint="labvault remote add NAME --db URL --objects URL")
    if not db.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise ValidationError(
            f"a team vault's database is PostgreSQL, not {redact_url(db)[:80]!r}", hint="give --db postgresql://host/db"
        )
    return check_database_url(db), check_objects_url(objects)


def list_remotes(config: VaultConfig, vault_dir: Path | None = None) -> list[RemoteSpec]:
    """The configured remotes, by name; entries that do not validate are skipped (config.json is a file)."""
    default = config.extra.get("default_remote")
    out = []
    for name, entry in sorted(_raw_remotes(config).items())[:_MAX_REMOTES]:
        try:
            validate_name(name, what="remote name")
            if not isinstance(entry, dict):
                continue
            if entry.get("kind") == "team" and vault_dir is not None:
                db, objects = _team_urls(entry["db"], entry["objects"])
                spec = RemoteSpec(name, "team", team_folder(vault_dir, name), name == default, db, objects)
            elif entry.get("kind") == "server":
                url = parse_server_url(entry["url"])
                spec = RemoteSpec(name, "server", Path(), name == default, server_url=url)
            elif entry.get("kind", "folder") == "folder":
                spec = RemoteSpec(name=name, kind="folder", path=parse_location(entry["url"]), default=name == default)
            else:
                continue
        except (ValidationError, KeyError, TypeError):
            continue
        out.append(spec)
    return out


def default_remote(config: VaultConfig, name: str | None, vault_dir: Path | None = None) -> RemoteSpec:
    """The remote named ``name``, else the default one, else the only one."""
    remotes = list_remotes(config, vault_dir)
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


def add_remote(
    vault_dir: Path,
    *,
    name: str,
    location: str | None = None,
    database_url: str | None = None,
    objects_url: str | None = None,
    default: bool = False,
) -> RemoteSpec:
    """Add a folder remote (``location``) or a team-vault remote (``database_url`` and ``objects_url``)."""
    validate_name(name, what="remote name")
    if database_url is not None or objects_url is not None:
        if location is not None or database_url is None or objects_url is None:
            raise ValidationError(
                "a team vault remote takes both --db and --objects, and no PATH",
                hint="labvault remote add NAME --db postgresql://host/db --objects s3://bucket/prefix",
            )
        db, objects = _team_urls(database_url, objects_url)
        spec = RemoteSpec(name, "team", team_folder(vault_dir, name), default, db, objects)
        _save(vault_dir, name, {"kind": "team", "db": db, "objects": objects}, default=default)
        return spec
    if location is None:
        raise ValidationError("give the remote's folder", hint=_ADD_HINT)
    if is_server_url(location):
        url = parse_server_url(location)
        _save(vault_dir, name, {"kind": "server", "url": url}, default=default)
        return RemoteSpec(name, "server", Path(), default, server_url=url)
    path = parse_location(location)
    if path == vault_dir.parent or path == vault_dir:
        raise ValidationError(f"{path} is this vault itself", hint="a remote is another vault's folder")
    _save(vault_dir, name, {"kind": "folder", "url": str(path)}, default=default)
    return RemoteSpec(name=name, kind="folder", path=path, default=default)


def _save(vault_dir: Path, name: str, entry: dict[str, str], *, default: bool) -> None:

    def change(extra: dict[str, Any]) -> None:
        remotes = extra.get("remotes")
        remotes = remotes if isinstance(remotes, dict) else {}
        old = remotes.get(name)
        if isinstance(old, dict) and {**old, "kind": old.get("kind", "folder")} != entry:
            raise Conflict(
                f"remote {name!r} already points elsewhere",
                hint=f"remove it first: labvault remote remove {name}",
            )
        if name not in remotes and len(remotes) >= _MAX_REMOTES:
            raise ValidationError(f"a vault keeps at most {_MAX_REMOTES} remotes", hint="remove one first")
        remotes[name] = entry
        extra["remotes"] = remotes
        if default:
            extra["default_remote"] = name

    _update(vault_dir, change)


def remove_remote(vault_dir: Path, name: str) -> None:
    def change(extra: dict[str, Any]) -> None:
        remotes = extra.get("remotes")
        if not isinstance(remotes, dict) or name not in remotes:
            raise NotFound(f"no remote named {name!r}", hint="list them with `labvault remote list`")
        del remotes[name]
        if extra.get("default_remote") == name:
            del extra["default_remote"]

    _update(vault_dir, change)
