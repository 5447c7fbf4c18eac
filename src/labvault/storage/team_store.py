"""The object store of a team vault, built from ``config.json``'s ``objects`` section.

``open_objects`` hands the URL to the object-store opener (fsspec underneath: ``s3://``, ``gs://``,
``az://``, ``file://``); ``probe_objects`` checks, once at ``init`` and in ``vault show``, that the
store can be reached and its bucket exists, so a typo fails with one line at once instead of at
the first upload.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from labvault.errors import ExternalError, NotFound, ValidationError
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["normalise_objects_url", "open_objects", "probe_objects"]

_BUCKETED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
# Fail fast on an endpoint that does not answer: one line after seconds, not minutes of retries.
_S3_PROBE_OPTIONS = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 2}}}


def normalise_objects_url(url: str, *, base: Path) -> str:
    """A plain path becomes an absolute ``file://`` URL; other URLs are kept as given."""
    if not url or len(url) > 4096 or any(ord(c) < 32 for c in url):
        raise ValidationError(f"invalid object store URL {url[:80]!r}", hint="give s3://bucket/prefix or a folder")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme:
        return (base / Path(url).expanduser()).resolve().as_uri()
    if scheme == "file":
        return url
    if scheme in _BUCKETED or scheme in ("memory", "gcs"):
        if not url.split("://", 1)[1].strip("/"):
            raise ValidationError(f"{url} names no bucket", hint="give s3://bucket/prefix")
        return url.rstrip("/")
    raise ValidationError(
        f"unsupported object store URL {url.split('://', 1)[0]}://",
        hint="use s3://bucket/prefix, gs://, az://, file:///folder or a plain folder path",
    )


def open_objects(url: str, *, cache_dir: Path, cache_size: int) -> ObjectStore:
    """The object store at ``url``, with a local read-through cache when the opener provides one."""
    try:
        opener: Any = importlib.import_module("labvault.storage.objects.opener")
    except ImportError:
        from labvault.storage.objects.remote import FsspecObjectStore

        return FsspecObjectStore(url)
    store: ObjectStore = opener.open_object_store(url, cache_dir=cache_dir, cache_size=cache_size)
    return store


def probe_objects(url: str, *, create: bool = False) -> None:
    """Reach the store: exit 7 if it does not answer, exit 3 if its bucket (or folder) does not exist."""
    from fsspec.core import url_to_fs

    scheme = url.split("://", 1)[0].lower()
    options: dict[str, Any] = dict(_S3_PROBE_OPTIONS) if scheme in ("s3", "s3a") else {}
    if scheme in ("s3", "s3a"):
        options["skip_instance_cache"] = True
    try:
        fs, base = url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise ExternalError(
            f"cannot open {url}: {exc}", hint=f"install the filesystem for {scheme}:// (e.g. labvault[s3])"
        ) from exc
    base = base.rstrip("/")
    try:
        if scheme in _BUCKETED:
            bucket = base.split("/", 1)[0]
            if not fs.exists(bucket) and not _bucket_answers(fs, bucket):
                raise NotFound(f"bucket {bucket!r} does not exist at {url}", hint="create the bucket, or fix the URL")
        elif scheme == "file":
            path = Path(base)
            if create:
                os.makedirs(path, exist_ok=True)
            elif not path.is_dir():
                raise NotFound(f"folder {path} does not exist", hint="create it, or fix the URL")
    except NotFound:
        raise
    except Exception as exc:  # botocore, aiohttp and OS errors alike: the store could not be asked
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ExternalError(
            f"cannot reach the object store at {url}: {text[:300]}",
            hint="check the endpoint, the network and the credentials in the environment",
        ) from exc


def _bucket_answers(fs: Any, bucket: str) -> bool:
    """``exists`` says False both for a missing bucket and for one we may list but not stat."""
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        return False
    return True
