"""HTTP to a labvault server: one client, errors mapped back to labvault's exit codes.

Every failure is a :class:`~labvault.errors.LabvaultError` with the server's own message and hint
(the body is ``{"error", "hint", "code"}``): 401/403 are :class:`NotAllowed` (exit 8), an unreachable
server is :class:`ExternalError` (exit 7), and a server speaking another API version is a usage
error (exit 2) naming both versions. Requests that are safe to repeat (GET, PUT, and POSTs carrying an
``Idempotency-Key``) are retried with backoff for ``retry_for`` seconds.
"""

from __future__ import annotations

import functools
import os
import random
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from labvault.client.settings import ENV_TOKEN, ServerTarget
from labvault.errors import (
    CheckFailed,
    Conflict,
    ExternalError,
    IntegrityError,
    LabvaultError,
    LockedError,
    NotAllowed,
    NotFound,
    ValidationError,
)

# httpx's package root imports its command-line tool whenever click, rich and pygments are installed,
# and typer installs them: a third of what a process working through a server imported before its first
# request. A None in sys.modules makes that one import fail, and httpx then binds a stub ``httpx.main``
# (this package never calls it); the entry is removed at once, so ``import httpx._main`` still works.
_HTTPX_CLI = "httpx._main"
_skip_cli = "httpx" not in sys.modules  # only its first import binds httpx.main
if _skip_cli:
    sys.modules[_HTTPX_CLI] = None  # type: ignore[assignment]
try:
    import httpcore
    import httpx
finally:
    if _skip_cli:
        del sys.modules[_HTTPX_CLI]

__all__ = ["API_VERSION", "CLIENT_VERIFIES", "VERIFIED_BY_CLIENT", "VERIFY_HEADER", "Transport"]

#: The REST API version this client speaks (the ``/api/v1`` prefix); ``GET /api/v1/version`` says the server's.
API_VERSION = "1"

_ERRORS: dict[int, type[LabvaultError]] = {
    1: CheckFailed,
    2: ValidationError,
    3: NotFound,
    4: Conflict,
    5: IntegrityError,
    6: LockedError,
    7: ExternalError,
}
#: Sent with a download that this client hashes itself against the digest it asked for: the server then
#: does not hash it too, which halves what a download costs the server's CPU (server/routes/objects.py).
VERIFY_HEADER, VERIFIED_BY_CLIENT = "X-Labvault-Verify", "client"
CLIENT_VERIFIES = {VERIFY_HEADER: VERIFIED_BY_CLIENT}
# httpcore reads a response 64 KiB at a time: a large download was then 16,000 reads per GiB, each
# parsed, buffered and copied in Python, which cost more CPU than hashing it. 1 MiB reads cut the
# client's CPU per GiB downloaded by a third; small responses are unaffected (a read returns what
# has arrived).
_READ_SIZE = 1 << 20
if httpcore.HTTP11Connection.READ_NUM_BYTES < _READ_SIZE:
    httpcore.HTTP11Connection.READ_NUM_BYTES = _READ_SIZE
_SLICE = 1 << 20  # a request body larger than this goes to httpx in views of this size (_Slices)
_CODE_OF_STATUS = {400: 2, 404: 3, 409: 4, 413: 2, 422: 1, 423: 6, 503: 7}
_RETRYABLE_STATUS = {502, 503, 504}


def _user_agent() -> str:
    from labvault import __version__

    return f"labvault/{__version__}"


@functools.cache
def _tls_context(https: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One context per process (and per ``SSL_CERT_FILE``/``SSL_CERT_DIR``): loading the CA bundle
    costs tens of milliseconds, and httpx would load it again for every client."""
    if https:
        return httpx.create_ssl_context()  # what httpx.Client() makes by default, honouring the two variables
    # A plain-HTTP server is never spoken to over TLS (redirects are not followed): a context that
    # trusts no certificate at all, so that nothing could ever be accepted through it.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Transport:
    """A connection to one server. ``request`` returns the decoded JSON (or the raw response when
    ``raw=True``); it raises a LabvaultError for every failure."""

    def __init__(self, target: ServerTarget, *, timeout: float = 60.0, retry_for: float = 0.0) -> None:
        self.target = target
        self.retry_for = retry_for
        headers = {"User-Agent": _user_agent()}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self._client = httpx.Client(
            base_url=f"{target.url}/api/v{API_VERSION}",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            verify=_tls_context(
                target.url.lower().startswith("https://"),
                os.environ.get("SSL_CERT_FILE"),
                os.environ.get("SSL_CERT_DIR"),
            ),
        )
        self._checked = False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API version ---------------------------------------------------------------------
    def check_version(self) -> dict[str, Any]:
        """The server's ``/version``; a usage error (exit 2) when it speaks another API version."""
        try:
            info = self.request("GET", "/version", check=False)
        except NotFound:
            raise ValidationError(
                f"{self.target.url} does not speak labvault API v{API_VERSION} (no /api/v{API_VERSION}/version)",
                hint="upgrade the server, or point LABVAULT_URI at a labvault server",
            ) from None
        served = str(info.get("api", "?")) if isinstance(info, dict) else "?"
        if served != API_VERSION:
            raise ValidationError(
                f"the server at {self.target.url} speaks API v{served}; this labvault speaks v{API_VERSION}",
                hint="use a labvault of the server's version, or upgrade the server",
            )
        self._checked = True
        return dict(info)

    # -- requests -----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        raw: bool = False,
        check: bool = True,
    ) -> Any:
        if check and not self._checked:
            self.check_version()
        hdrs = dict(headers or {})
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key
        body: bytes | _Slices | None = content
        if content is not None and len(content) > _SLICE:
            body = _Slices(content)
            hdrs["Content-Length"] = str(len(content))
        retry = method in ("GET", "HEAD", "PUT", "DELETE") or idempotency_key is not None
        deadline = time.monotonic() + (self.retry_for if retry else 0.0)
        delay = 0.2
        while True:
            try:
                response = self._client.request(
                    method, path, json=json, params=_clean(params), content=body, headers=hdrs
                )
            except httpx.TransportError as err:
                if time.monotonic() + delay < deadline:
                    delay = _sleep(delay)
                    continue
                raise ExternalError(
                    f"cannot reach the server at {self.target.url}: {_reason(err)}",
                    hint="is `labvault server` running there? check LABVAULT_URI and the network",
                ) from None
            if response.status_code in _RETRYABLE_STATUS and time.monotonic() + delay < deadline:
                delay = _sleep(delay)
                continue
            if response.status_code >= 400:
                raise self._error(response)
            if raw:
                return response
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise ExternalError(
                    f"the server at {self.target.url} answered {method} {path} with something that is not JSON",
                    hint="is LABVAULT_URI the labvault server, not a proxy's page?",
                ) from None

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """A streamed response (downloads); errors as for :meth:`request`."""
        if not self._checked:
            self.check_version()
        try:
            with self._client.stream(method, path, params=_clean(params), headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                yield response
        except httpx.TransportError as err:
            raise ExternalError(
                f"cannot reach the server at {self.target.url}: {_reason(err)}",
                hint="is `labvault server` running there? check LABVAULT_URI and the network",
            ) from None

    def _error(self, response: httpx.Response) -> LabvaultError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        message = body.get("error") if isinstance(body, dict) else None
        hint = body.get("hint") if isinstance(body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        if status in (401, 403):
            if status == 401:
                message = f"token rejected by {self.target.url}" + (f": {message}" if message else "")
                hint = hint or f"set {ENV_TOKEN}, or run `labvault login {self.target.url}` with a valid token"
            return NotAllowed(message or "not allowed", hint=hint, status=status)
        if not isinstance(code, int) or code not in _ERRORS:
            code = _CODE_OF_STATUS.get(status, 5 if status >= 500 else 2)
        if not message:
            message = f"the server at {self.target.url} answered HTTP {status}"
        error = _ERRORS[code](str(message), hint=str(hint) if hint else None)
        return error


class _Slices:
    """A large request body handed to httpx as views of :data:`_SLICE` bytes, iterable again for a
    retry. Given one ``bytes``, httpcore sends it by slicing off what each ``send`` took, which copies
    the rest every time: a 64 MiB piece of an upload cost some 13 times its size in copies (a 1 GiB
    file went up at 200 MB/s on 4.3 s of CPU); in views, each byte is copied once."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self._data)
        for at in range(0, len(view), _SLICE):
            yield view[at : at + _SLICE]  # type: ignore[misc]  # h11 joins it into the bytes it sends


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None}


def _sleep(delay: float) -> float:
    time.sleep(delay * (0.5 + random.random() / 2))
    return min(delay * 2, 5.0)


def _reason(err: httpx.TransportError) -> str:
    text = str(err) or type(err).__name__
    return " ".join(text.split())[:200]
