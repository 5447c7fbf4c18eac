"""One function that turns an object-store location (a path or a URL) into an object store.

- a plain path, or a ``file://`` URL: the local store in that folder (packs, locks, temp files);
- ``s3://``, ``gs://``, ``az://``, ``abfs://``, ``memory://``: :class:`FsspecObjectStore`, with a local
  read-through cache when ``cache_dir`` is given;
- anything else: a validation error (exit 2).

Credentials never pass through here: each provider reads its own chain or environment (``AWS_*`` for
S3, ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS, ``AZURE_STORAGE_*`` for Azure). A URL holding a user or
a password is refused, so that none ends up in ``config.json``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from labvault.errors import NotFound, StorageError, ValidationError
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["DEFAULT_CACHE_SIZE", "REMOTE_SCHEMES", "open_object_store"]

DEFAULT_CACHE_SIZE = 10 * 1024**3  # 10 GiB
REMOTE_SCHEMES = ("s3", "gs", "az", "abfs", "memory")

_CREDENTIAL_VARIABLES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
    "abfs": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
}


def open_object_store(
    location: str | Path,
    *,
    cache_dir: Path | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    create: bool = True,
    refresh_after: float | None = None,
) -> ObjectStore:
    """The object store at ``location``; ``create=False`` refuses a local folder that holds no store.

    ``refresh_after`` (remote stores): see :class:`~labvault.storage.objects.remote.FsspecObjectStore`.
    """
    if cache_size < 0:
        raise ValidationError(f"cache size {cache_size} is negative", hint="give a size in bytes, 0 for no cache")
    if isinstance(location, Path) or "://" not in location:
        return _local(Path(location), create=create)
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValidationError(
                f"{location!r} names a host ({parts.netloc}); a file:// URL must be local",
                hint="write file:///absolute/path (three slashes) or give a plain path",
            )
        if parts.query or parts.fragment:
            raise ValidationError(f"{location!r} has a query or fragment", hint="write file:///absolute/path")
        return _local(Path(unquote(parts.path)), create=create)
    if scheme not in REMOTE_SCHEMES:
        shown = ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        raise ValidationError(
            f"unknown object store scheme {scheme!r} in {_public(location)}",
            hint=f"use a path, file://, or one of {shown}",
        )
    if "@" in parts.netloc:
        variables = _CREDENTIAL_VARIABLES.get(scheme, "the provider's environment variables")
        raise ValidationError(
            f"{_public(location)}: keep credentials out of the URL",
            hint=f"set {variables} in the environment instead",
        )
    if not parts.netloc and scheme != "memory":
        raise ValidationError(f"{location!r} names no bucket", hint=f"write {scheme}://bucket/prefix")
    from labvault.storage.objects.remote import FsspecObjectStore

    return FsspecObjectStore(location, cache_dir=cache_dir, cache_size=cache_size, refresh_after=refresh_after)


def _local(path: Path, *, create: bool) -> LocalObjectStore:
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{path} is a file, not a folder", hint="give the folder that holds the objects")
    if not create:
        if not (path / "objects").is_dir():
            raise NotFound(f"no object store at {path}", hint="check the path, or create the store with init")
        return LocalObjectStore(path)
    try:
        return LocalObjectStore.create(path)
    except OSError as exc:
        raise StorageError(f"cannot create the object store at {path}: {exc.strerror or exc}") from exc


def _public(url: str) -> str:
    """The URL without whatever stands before an ``@`` in its host part (a user or a password)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
