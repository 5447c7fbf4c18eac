"""The object store of a team vault, built from ``config.json``'s ``objects`` section.

The URL goes to :func:`labvault.storage.objects.opener.open_object_store` (fsspec underneath for
``s3://``, ``gs://``, ``az://``; the local store for ``file://`` and a folder), whose constructor
already reads the store's layout marker: a missing bucket, an endpoint that does not answer or a
store from a newer labvault fail there, with one line, before ``init`` writes anything.
"""

from __future__ import annotations

from pathlib import Path

from labvault.errors import ValidationError
from labvault.storage.objects.opener import open_object_store
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["normalise_objects_url", "open_objects"]


def normalise_objects_url(url: str, *, base: Path) -> str:
    """A plain folder path becomes an absolute ``file://`` URL (so every command finds the same
    folder wherever it runs); other URLs are kept as given, without a trailing slash."""
    if not url or len(url) > 4096 or any(ord(c) < 32 for c in url):
        raise ValidationError(f"invalid object store URL {url[:80]!r}", hint="give s3://bucket/prefix or a folder")
    if "://" not in url:
        return (base / Path(url).expanduser()).resolve().as_uri()
    return url if url.lower().startswith("file://") else url.rstrip("/")


def open_objects(url: str, *, cache_dir: Path, cache_size: int, create: bool = False) -> ObjectStore:
    """The object store at ``url``, with a local read-through cache of ``cache_size`` bytes for a remote one."""
    return open_object_store(url, cache_dir=cache_dir, cache_size=cache_size, create=create)
