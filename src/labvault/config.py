"""Settings: where the vault is, who is acting, and the vault's own config file.

Kept free of heavy imports (no pydantic, no SQLAlchemy): every command reads it at start-up.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError, VaultNotFound
from labvault.safeload import load_json

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_CACHE_SIZE",
    "FORMAT_VERSION",
    "PROJECT_FILE",
    "VAULT_DIRNAME",
    "JoinSettings",
    "Settings",
    "VaultConfig",
    "acting_user",
    "check_database_url",
    "check_objects_url",
    "find_vault_dir",
    "format_size",
    "parse_size",
    "read_join_settings",
    "redact_url",
]

VAULT_DIRNAME = ".labvault"
CONFIG_NAME = "config.json"
#: Storage format version written in config.json; see docs/design/storage-format.md.
#: 2 added packs of small objects; a format-1 vault is read as is and marked 2 when opened.
FORMAT_VERSION = 2
#: The read-through cache of a remote object store (``objects.cache_size``), when not set.
DEFAULT_CACHE_SIZE = 10 * 1024**3


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
    """The content of ``.labvault/config.json``.

    ``objects_url`` is None for the object store in the vault folder; a team vault names its store
    (``s3://bucket/prefix``, ``file:///shared/objects``). Credentials never live here: each provider's
    own chain supplies them (``AWS_*``, ``PGPASSWORD``, ``~/.pgpass``).
    """

    format_version: int = FORMAT_VERSION
    database_url: str | None = None  # None: the embedded SQLite file beside the config
    objects_url: str | None = None
    cache_size: int = DEFAULT_CACHE_SIZE
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
        database_url = raw.get("database_url")
        if database_url is not None and not isinstance(database_url, str):
            raise ValidationError(f"{path}: database_url is not a string", hint="fix or remove it")
        objects_url, cache_size = _load_objects(path, raw.get("objects"))
        recognised = {"format_version", "database_url", "objects"}
        return cls(
            format_version=version,
            database_url=database_url,
            objects_url=objects_url,
            cache_size=cache_size,
            extra={k: v for k, v in raw.items() if k not in recognised},
        )

    @property
    def is_team(self) -> bool:
        """Metadata or objects live outside the vault folder."""
        return bool(self.objects_url) or bool(self.database_url and not self.database_url.startswith("sqlite"))

    def credential_warnings(self) -> list[str]:
        """What in this config holds a credential (written by an older labvault or by hand)."""
        found: list[str] = []
        for label, url, check in (
            ("database_url", self.database_url, check_database_url),
            ("objects.url", self.objects_url, check_objects_url),
        ):
            if url:
                try:
                    check(url)
                except ValidationError as err:
                    found.append(f"config.json {label} holds a credential; {err.hint}, then remove it from the file")
        return found

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format_version": self.format_version, **self.extra}
        if self.database_url:
            doc["database_url"] = self.database_url
        if self.objects_url or self.cache_size != DEFAULT_CACHE_SIZE:
            objects: dict[str, Any] = {"cache_size": self.cache_size}
            if self.objects_url:
                objects["url"] = self.objects_url
            doc["objects"] = objects
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _load_objects(path: Path, raw: object) -> tuple[str | None, int]:
    if raw is None:
        return None, DEFAULT_CACHE_SIZE
    hint = "fix the objects section or re-run `labvault init --objects URL`"
    if not isinstance(raw, dict):
        raise ValidationError(f"{path}: objects is not a JSON object", hint=hint)
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not url or len(url) > 4096):
        raise ValidationError(f"{path}: objects.url is not a URL", hint=hint)
    size = raw.get("cache_size", DEFAULT_CACHE_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 62:
        raise ValidationError(f"{path}: objects.cache_size is not a size in bytes", hint=hint)
    return url, size


# -- credentials stay out of URLs --------------------------------------------------------------
_CREDENTIAL_KEYS = {
    "password",
    "passwd",
    "secret",
    "key",
    "token",
    "sas_token",
    "account_key",
    "access_key",
    "secret_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "session_token",
    "credentials",
    "sig",
}
_OBJECT_HINTS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment instead",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS in the environment instead",
    "az": "set AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_CONNECTION_STRING) in the environment instead",
}
_SCHEME_FAMILY = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}


def _credential_in(parsed: urllib.parse.SplitResult, *, user_is_secret: bool) -> bool:
    try:
        password = parsed.password
        user = parsed.username
    except ValueError:  # a port that is not a number: not ours to judge here
        password, user = None, None
    if password or (user_is_secret and user):
        return True
    keys = {k.lower() for k, _ in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)}
    return bool(keys & _CREDENTIAL_KEYS)


def check_database_url(url: str) -> str:
    """Refuse a database URL that carries a password (``user:secret@host`` or ``?password=``)."""
    parsed = urllib.parse.urlsplit(url)
    if _credential_in(parsed, user_is_secret=False):
        raise ValidationError(
            f"keep credentials out of the URL: the database URL {redact_url(url)} holds a password",
            hint="set PGPASSWORD in the environment or put the password in ~/.pgpass",
        )
    return url


def check_objects_url(url: str) -> str:
    """Refuse an object-store URL that carries keys (``s3://KEY:SECRET@bucket`` or ``?secret=``)."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        return url
    if _credential_in(parsed, user_is_secret=True):
        family = _SCHEME_FAMILY.get(scheme, scheme)
        hint = _OBJECT_HINTS.get(family, "use the storage provider's credential chain (its environment variables)")
        raise ValidationError(f"keep credentials out of the URL: {redact_url(url)} holds a key", hint=hint)
    return url


def redact_url(url: str) -> str:
    """The URL without user information or credential query parameters, for messages and ``vault show``."""
    parsed = urllib.parse.urlsplit(url)
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    try:
        user = parsed.username
        if user and parsed.password is None and parsed.scheme.startswith("postgres"):
            netloc = f"{user}@{netloc}"  # a database user name is no secret
    except ValueError:
        pass
    query = urllib.parse.urlencode(
        [
            (k, "***" if k.lower() in _CREDENTIAL_KEYS else v)
            for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        ],
        safe="=-%*",
    )
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, parsed.fragment))


# -- sizes ---------------------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?$")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """``10GiB``, ``500MB``, ``2g``, ``0`` or plain bytes."""
    m = _SIZE_RE.match(text.strip().lower())
    if not m or len(text) > 40:
        raise ValidationError(f"invalid size {text[:40]!r}", hint="write e.g. 0, 500MiB, 10GiB or 2TB")
    base = 1024 if m.group(3) or not m.group(2) else 1000
    value = int(float(m.group(1)) * base ** _SIZE_POWERS[m.group(2)])
    if value >= 1 << 62:
        raise ValidationError(f"size {text!r} is too large", hint="write e.g. 500MiB, 10GiB or 2TB")
    return value


def format_size(n: int) -> str:
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024**power and n % 1024**power == 0:
            return f"{n // 1024**power}{unit}"
    return str(n)


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


# -- labvault.yaml's vault: section (init --join) ------------------------------------------------
PROJECT_FILE = "labvault.yaml"
_JOIN_KEYS = {"db", "objects", "cache_size"}
_JOIN_HINT = "write e.g.  vault: {db: postgresql://host/db, objects: s3://bucket/prefix, cache_size: 10GiB}"


@dataclass(frozen=True, slots=True)
class JoinSettings:
    database_url: str | None
    objects_url: str | None
    cache_size: int | None


def read_join_settings(root: Path) -> JoinSettings:
    """The team vault's settings from ``ROOT/labvault.yaml`` (``vault:`` section), validated.

    Only that section is constructed (bounded, through :mod:`labvault.safeload`); credentials in
    either URL are refused as on the command line.
    """
    import yaml

    from labvault.safeload import compose_yaml, construct_yaml, read_limited

    hint = f"fix {PROJECT_FILE}: {_JOIN_HINT}"
    try:
        data = read_limited(root / PROJECT_FILE, name=PROJECT_FILE, hint=hint)
    except FileNotFoundError:
        raise ValidationError(f"no {PROJECT_FILE} in {root} to join from", hint=_JOIN_HINT) from None
    node = compose_yaml(data, name=PROJECT_FILE, hint=hint)
    section = None
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "vault":
                section = (value_node.start_mark.line + 1, construct_yaml(value_node, name=PROJECT_FILE, hint=hint))
    if section is None:
        raise ValidationError(f"{PROJECT_FILE} has no vault: section", hint=_JOIN_HINT)
    line, value = section
    where = f"{PROJECT_FILE}:{line}: vault"
    if not isinstance(value, dict):
        raise ValidationError(f"{where} is not a mapping", hint=_JOIN_HINT)
    unknown = sorted(str(k) for k in value if k not in _JOIN_KEYS)
    if unknown:
        raise ValidationError(
            f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(sorted(_JOIN_KEYS))}"
        )
    db, objects, size = value.get("db"), value.get("objects"), value.get("cache_size")
    for key, item in (("db", db), ("objects", objects)):
        if item is not None and (not isinstance(item, str) or not item):
            raise ValidationError(f"{where}.{key} must be a URL", hint=_JOIN_HINT)
    if db is None and objects is None:
        raise ValidationError(f"{where} names neither db nor objects", hint=_JOIN_HINT)
    cache_size: int | None = None
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int | str):
            raise ValidationError(f"{where}.cache_size must be a size such as 10GiB", hint=_JOIN_HINT)
        cache_size = parse_size(str(size))
    if db is not None:
        check_database_url(db)
    if objects is not None:
        check_objects_url(objects)
    return JoinSettings(database_url=db, objects_url=objects, cache_size=cache_size)
