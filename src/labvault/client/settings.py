"""Which server a process talks to, and the token it uses.

``LABVAULT_URI`` and ``LABVAULT_TOKEN`` win; otherwise what ``labvault login URL`` saved in the user's
config folder (``$XDG_CONFIG_HOME/labvault/credentials.json``, mode 0600). A token never goes in a
project file, a vault's ``config.json`` or a URL.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from labvault.errors import ValidationError

__all__ = [
    "ENV_TOKEN",
    "ENV_URI",
    "ServerTarget",
    "credentials_path",
    "forget_login",
    "normalize_url",
    "save_login",
    "server_target",
    "spool_dir",
]

ENV_URI = "LABVAULT_URI"
ENV_TOKEN = "LABVAULT_TOKEN"


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """A server's base URL (no trailing slash) and the bearer token for it (None: none given)."""

    url: str
    token: str | None

    def __repr__(self) -> str:  # never print a token
        return f"ServerTarget(url={self.url!r}, token={'***' if self.token else None})"


def _config_home(environ: dict[str, str] | os._Environ[str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME")
    return Path(base).expanduser() if base else Path.home() / ".config"


def _cache_home(environ: dict[str, str] | os._Environ[str]) -> Path:
    base = environ.get("XDG_CACHE_HOME")
    return Path(base).expanduser() if base else Path.home() / ".cache"


def credentials_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return _config_home(env) / "labvault" / "credentials.json"


def spool_dir(environ: dict[str, str] | None = None) -> Path:
    """Where tracking through a server keeps what it has not sent yet (``labvault sync`` sends it)."""
    env = os.environ if environ is None else environ
    return _cache_home(env) / "labvault" / "spool"


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; anything else is a usage error."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"{url!r} is not a server URL", hint="give http://HOST:PORT or https://HOST, as `labvault server` prints"
        )
    if parts.username or parts.password:
        raise ValidationError(
            "keep credentials out of the URL", hint=f"set {ENV_TOKEN}, or run `labvault login URL` to store a token"
        )
    if parts.query or parts.fragment:
        raise ValidationError(f"{url!r}: a server URL has no query or fragment", hint="give http://HOST:PORT")
    return text


def _saved(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    path = credentials_path(dict(environ))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise ValidationError(
            f"{path} is not readable JSON", hint="remove it, then run `labvault login URL` again"
        ) from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValidationError(f"{path} is malformed", hint="remove it, then run `labvault login URL` again")
    return raw


def server_target(environ: dict[str, str] | None = None) -> ServerTarget | None:
    """The server this process works through, or None for a local vault."""
    env = os.environ if environ is None else environ
    uri = env.get(ENV_URI) or None
    token = env.get(ENV_TOKEN) or None
    if uri is None:
        saved = _saved(env)
        if "url" not in saved or env.get("LABVAULT_DIR"):  # an explicit local vault wins over a saved login
            return None
        return ServerTarget(normalize_url(saved["url"]), token or saved.get("token"))
    url = normalize_url(uri)
    if token is None:
        saved = _saved(env)
        if saved.get("url") == url:
            token = saved.get("token")
    return ServerTarget(url, token)


def save_login(url: str, token: str, environ: dict[str, str] | None = None) -> Path:
    """Store ``url`` and ``token`` for later commands (mode 0600, written atomically)."""
    path = credentials_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": normalize_url(url), "token": token}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def forget_login(environ: dict[str, str] | None = None) -> bool:
    """Remove the stored login; False when there was none."""
    path = credentials_path(environ)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
