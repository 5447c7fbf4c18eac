"""``data import``: snapshot data from outside the project through fsspec (http(s), s3, gs, local).

The source is copied into a private temp folder inside the vault, snapshotted like a local folder,
and the temp folder removed. A local source is recorded as a ``file://`` URL. Failures of the source
are translated once, here: not there is exit 3; no credentials, access denied, or a source that
cannot be reached (refused, timed out) is exit 7. The snapshot records the source URL (credentials stripped) and the
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
from pathlib import Path
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


_CREDENTIALS_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or "
    "AWS_PROFILE; AWS_ENDPOINT_URL names an S3-compatible store",
    "gcs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
    "or run `gcloud auth application-default login`",
}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}


def _unreachable(exc: BaseException) -> bool:
    """fsspec's HTTP back end reports a refused connection, a timeout and a server error (5xx) as
    FileNotFoundError too; its cause says which."""
    cause = exc.__cause__
    status = getattr(cause, "status", None)
    if isinstance(status, int):
        return status >= 500
    return isinstance(cause, OSError | TimeoutError) and not isinstance(cause, FileNotFoundError)


def _denied(exc: BaseException) -> bool:
    return isinstance(exc, PermissionError) or getattr(exc.__cause__, "status", None) in (401, 403)


def _source_error(exc: Exception, public: str, scheme: str) -> LabvaultError:
    """One labvault error for whatever an fsspec back end raised (botocore, aiohttp, google-auth...)."""
    if isinstance(exc, LabvaultError):
        return exc
    kind = _EXTRAS.get(scheme, scheme)
    if _denied(exc):
        return ExternalError(f"{public}: access denied", hint=_CREDENTIALS_HINT.get(kind, "check your credentials"))
    if isinstance(exc, FileNotFoundError) and not _unreachable(exc):
        return NotFound(f"{public} does not exist", hint="check the URL")
    if _NO_CREDENTIALS & {cls.__name__ for cls in type(exc).__mro__}:
        return ExternalError(
            f"no credentials to read {public}", hint=_CREDENTIALS_HINT.get(kind, "check your credentials")
        )
    detail = str(exc.__cause__ or exc) or type(exc).__name__
    return ExternalError(f"cannot reach {public}: {detail}", hint="check the URL and the network, then retry")


def _storage_uri(fs: Any, path: str, public: str) -> str:
    """A local source is recorded as a ``file://`` URL, never a bare absolute path."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return Path(path).resolve().as_uri() if "file" in protocols else public


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
    scheme = urlsplit(url).scheme
    public = _storage_uri(fs, path, _public_url(url))
    try:
        info = fs.info(path)
    except Exception as exc:  # each fsspec back end raises its own types; translated here, once
        raise _source_error(exc, public, scheme) from exc
    staging = svc.vault_dir / "tmp" / f"import-{os.getpid()}-{secrets.token_hex(6)}"
    tmp = Dest.open(svc.vault_dir / "tmp")
    try:
        try:
            target, source_version = _copy(fs, path, info, tmp, staging.name, public, scheme)
        except Exception as exc:
            raise _source_error(exc, public, scheme) from exc
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
    finally:
        with contextlib.suppress(LabvaultError):
            tmp.remove(staging.name)
        tmp.close()


def _copy(
    fs: Any, path: str, info: dict[str, Any], tmp: Dest, staging: str, public: str, scheme: str
) -> tuple[Path, str | None]:
    """Copy the source below ``tmp/staging``; the copy's path and the version the source reports."""
    if info.get("type") != "directory":
        leaf = path.rstrip("/").rsplit("/", 1)[-1] or "data"
        tmp.write(f"{staging}/{leaf}", functools.partial(_download, fs, path, public, scheme))
        return tmp.path / staging / leaf, _version_of(info)
    base = path.rstrip("/")
    versions = []
    with tmp.sub(f"{staging}/data") as into:
        for full, meta in sorted(fs.find(base, detail=True).items()):
            rel = full[len(base) :].lstrip("/")
            if not rel or ".." in rel.split("/"):
                continue
            # Names come from the remote listing: written below the staging folder only.
            into.write(rel, functools.partial(_download, fs, full, public, scheme))
            versions.append((rel, _version_of(meta)))
    have = [v for _, v in versions if v]
    if have and len(have) == len(versions):
        digest = hashlib.sha256(json.dumps(versions, separators=(",", ":")).encode()).hexdigest()
        return tmp.path / staging / "data", f"sha256:{digest}"
    return tmp.path / staging / "data", None


def _download(fs: Any, path: str, public: str, scheme: str, out: int) -> None:
    """Copy ``path`` to ``out``; a failure to read is the source's (not found, network), not the disk's."""
    try:
        src = fs.open(path, "rb")
    except Exception as exc:
        raise _source_error(exc, public, scheme) from exc
    with src:
        while True:
            try:
                chunk = src.read(8 * 1024 * 1024)
            except Exception as exc:
                raise _source_error(exc, public, scheme) from exc
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
