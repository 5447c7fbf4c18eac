"""What an fsspec back end raised, as one labvault error: translated here, once, at the storage edge.

Back ends raise their own types (botocore, aiohttp, google-auth, azure); they are told apart by class
name and module, so that none of them is imported here. A missing object stays a ``FileNotFoundError``
for the store to decide on (absent is often an answer, not an error); a missing bucket is not.
"""

from __future__ import annotations

from labvault.errors import ExternalError, LabvaultError, NotFound

__all__ = ["BACKEND_MODULES", "is_backend_error", "missing_bucket", "translate"]

BACKEND_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "adlfs", "azure", "fsspec")

CREDENTIALS_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or "
    "AWS_PROFILE; AWS_ENDPOINT_URL names an S3-compatible store",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
    "or run `gcloud auth application-default login`",
    "az": "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_CONNECTION_STRING)",
}
CREDENTIALS_HINT["abfs"] = CREDENTIALS_HINT["az"]
_NO_CREDENTIALS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "DefaultCredentialsError",
    "CredentialRetrievalError",
}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "AllAccessDisabled"}


def _names(exc: BaseException) -> set[str]:
    names: set[str] = set()
    seen: BaseException | None = exc
    while seen is not None and len(names) < 64:
        names |= {cls.__name__ for cls in type(seen).__mro__}
        code = getattr(seen, "response", None)
        if isinstance(code, dict):
            names.add(str(code.get("Error", {}).get("Code", "")))
        seen = seen.__cause__ or seen.__context__
        if seen is exc:
            break
    return names


def is_backend_error(exc: BaseException) -> bool:
    """An error a storage back end raised (as opposed to a bug of ours: those are left alone)."""
    return isinstance(exc, OSError | TimeoutError) or type(exc).__module__.split(".", 1)[0] in BACKEND_MODULES


def missing_bucket(exc: BaseException) -> bool:
    names = _names(exc)
    return "NoSuchBucket" in names or "ContainerNotFound" in names or "bucket does not exist" in str(exc)


def translate(exc: BaseException, *, url: str, scheme: str, action: str) -> LabvaultError:
    """One labvault error for a back-end failure while ``action`` (``"uploading objects"``...)."""
    if isinstance(exc, LabvaultError):
        return exc
    names = _names(exc)
    hint = CREDENTIALS_HINT.get(scheme, "check your credentials")
    if missing_bucket(exc):
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return NotFound(
            f"the bucket {bucket!r} of {url} does not exist",
            hint=f"create it, or check the URL ({scheme}://BUCKET/PREFIX)",
        )
    if names & _NO_CREDENTIALS:
        return ExternalError(f"no credentials for {url} while {action}", hint=hint)
    if names & _DENIED or isinstance(exc, PermissionError):
        return ExternalError(f"access to {url} denied while {action}", hint=hint)
    if names & _UNREACHABLE or isinstance(exc, ConnectionError | TimeoutError):
        endpoint = " (AWS_ENDPOINT_URL)" if scheme == "s3" else ""
        return ExternalError(
            f"cannot reach the object store of {url} while {action}: {_first_line(exc)}",
            hint=f"check the endpoint{endpoint} and the network, then retry",
        )
    return ExternalError(
        f"{action} on {url} failed: {_first_line(exc)}", hint="check the URL and credentials, then retry"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
