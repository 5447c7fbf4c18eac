"""``data import``: snapshot data from outside the project through fsspec (http(s), s3, gs, local).

The source is copied into a private temp folder inside the vault, snapshotted like a local folder,
and the temp folder removed. The snapshot records the source URL (credentials stripped) and the
version the source reports: a single object's ETag / VersionId / generation, or for a folder a
``sha256:`` over every object's (path, ETag) pair when the source reports them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from labvault.entities import Snapshot
from labvault.errors import ExternalError, NotFound, ValidationError

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
    staging.mkdir(parents=True)
    try:
        if info.get("type") == "directory":
            base = path.rstrip("/")
            found = fs.find(base, detail=True)
            versions = []
            for full, meta in sorted(found.items()):
                rel = full[len(base) :].lstrip("/")
                if not rel or ".." in rel.split("/"):
                    continue
                out = staging / "data" / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(full, str(out))
                versions.append((rel, _version_of(meta)))
            (staging / "data").mkdir(exist_ok=True)
            target = staging / "data"
            have = [v for _, v in versions if v]
            source_version = None
            if have and len(have) == len(versions):
                digest = hashlib.sha256(json.dumps(versions, separators=(",", ":")).encode()).hexdigest()
                source_version = f"sha256:{digest}"
        else:
            leaf = path.rstrip("/").rsplit("/", 1)[-1] or "data"
            target = staging / leaf
            fs.get_file(path, str(target))
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
        shutil.rmtree(staging, ignore_errors=True)
