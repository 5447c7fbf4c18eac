"""``data import``: snapshot data from outside the project through fsspec (http(s), s3, gs, local).

The source is copied into a private temp folder inside the vault, snapshotted like a local folder,
and the temp folder removed. The snapshot records the source URL (credentials stripped) and the
version the source reports: a single object's ETag / VersionId / generation, or for a folder a
``sha256:`` over every object's (path, ETag) pair when the source reports them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from labvault.entities import Snapshot
from labvault.errors import ExternalError, LabvaultError, NotFound, ValidationError
from labvault.storage.contained import Dest

if TYPE_CHECKING:
    from labvault.services.snapshots.service import DataService, Progress

__all__ = ["import_url"]

_VERSION_KEYS = ("VersionId", "version_id", "ETag", "etag", "generation", "md5Hash")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    scheme = urlsplit(url).scheme
    try:
        fs, path = fsspec.core.url_to_fs(url)
        return fs, str(path)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise ValidationError(
            f"reading {scheme}:// URLs needs an optional dependency ({exc.name or exc})",
            hint=f"pip install 'labvault[{extra}]'",
        ) from exc
    except ValueError as exc:
        raise ValidationError(f"cannot read {url!r}: {exc}", hint="use http(s)://, s3://, gs:// or a path") from exc


def _version_of(info: dict[str, Any]) -> str | None:
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return None


def import_url(
    svc: DataService, name: str, url: str, *, message: str, progress: Progress | None
) -> tuple[Snapshot, bool]:
    fs, path = _filesystem(url)
    public = _public_url(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NotFound(f"{public} does not exist", hint="check the URL") from None
    except PermissionError as exc:
        raise ExternalError(f"{public}: access denied ({exc})", hint="check your credentials") from exc
    except OSError as exc:
        raise ExternalError(f"cannot reach {public}: {exc}", hint="check the URL and the network") from exc
    staging = svc.vault_dir / "tmp" / f"import-{os.getpid()}-{secrets.token_hex(6)}"
    tmp = Dest.open(svc.vault_dir / "tmp")
    try:
        if info.get("type") == "directory":
            base = path.rstrip("/")
            found = fs.find(base, detail=True)
            versions = []
            with tmp.sub(f"{staging.name}/data") as into:
                for full, meta in sorted(found.items()):
                    rel = full[len(base) :].lstrip("/")
                    if not rel or ".." in rel.split("/"):
                        continue
                    # Names come from the remote listing: written below the staging folder only.
                    into.write(rel, functools.partial(_download, fs, full, public))
                    versions.append((rel, _version_of(meta)))
            target = staging / "data"
            have = [v for _, v in versions if v]
            source_version = None
            if have and len(have) == len(versions):
                digest = hashlib.sha256(json.dumps(versions, separators=(",", ":")).encode()).hexdigest()
                source_version = f"sha256:{digest}"
        else:
            leaf = path.rstrip("/").rsplit("/", 1)[-1] or "data"
            target = staging / leaf
            tmp.write(f"{staging.name}/{leaf}", functools.partial(_download, fs, path, public))
            source_version = _version_of(info)
        snapshot, created, _ = svc._snapshot_local(
            name,
            target,
            public,
            message=message,
            progress=progress,
            source_url=public,
            source_version=source_version,
            use_cache=False,
        )
        return snapshot, created
    except FileNotFoundError as exc:
        raise NotFound(f"{public}: {exc}", hint="check the URL") from exc
    except OSError as exc:
        raise ExternalError(f"reading {public} failed: {exc}", hint="check the URL and the network") from exc
    finally:
        with contextlib.suppress(LabvaultError):
            tmp.remove(staging.name)
        tmp.close()


def _download(fs: Any, path: str, public: str, out: int) -> None:
    """Copy ``path`` to ``out``; a failure to read is the source's (not found, network), not the disk's."""
    try:
        src = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise NotFound(f"{public}: {exc}", hint="check the URL") from exc
    except OSError as exc:
        raise ExternalError(f"reading {public} failed: {exc}", hint="check the URL and the network") from exc
    with src:
        while True:
            try:
                chunk = src.read(8 * 1024 * 1024)
            except OSError as exc:
                raise ExternalError(f"reading {public} failed: {exc}", hint="check the URL and the network") from exc
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
