"""Signing in to the web UI: a token becomes an HttpOnly, SameSite=Strict session cookie; CSRF on every change.

The cookie never holds the token. It reads ``v1.<token id>.<issued>.<mac>``: the HMAC-SHA256, under a
per-vault secret (``ui-session.key`` in the vault folder, mode 0600, made once and shared by every
server process of the vault), of the token's public id and the time it was issued. Each request looks
the token up again, so revoking or expiring it ends its sessions at once; a session also ends after
:data:`SESSION_SECONDS`. Signing out clears the cookie (a copy of it stays valid until it expires or
the token is revoked: revoke the token to end every session of it).

The CSRF token is the HMAC of the session cookie, so it is tied to the session; it is in a
``<meta name="csrf-token">`` tag (htmx sends it as ``X-CSRF-Token``) and in every form, and
:func:`check_csrf` is called by every state-changing page route. The sign-in form itself carries a
token tied to a short-lived, SameSite=Strict cookie, so that another site cannot sign a browser in
with a token of its choosing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from labvault.entities.access import ApiToken, role_allows
from labvault.errors import IntegrityError, LabvaultError, NotAllowed, StorageError
from labvault.server.deps import Caller, ServerState

__all__ = [
    "CSP",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "check_csrf",
    "install_handlers",
    "page_caller",
    "protect",
    "router",
    "safe_next",
    "template_context",
]

router = APIRouter(include_in_schema=False)

SESSION_COOKIE = "labvault_session"
_LOGIN_COOKIE = "labvault_login"
CSRF_HEADER = "x-csrf-token"
#: A session lasts this long after signing in (12 hours), whatever the token's own expiry.
SESSION_SECONDS = 12 * 3600
_SECRET_FILE = "ui-session.key"
_SESSION_RE = re.compile(r"v1\.([0-9a-f]{12})\.(\d{1,12})\.([0-9a-f]{64})")
_secrets: dict[str, bytes] = {}
_secrets_lock = threading.Lock()


class SignInRequired(Exception):
    """Raised by :func:`page_caller` when no valid session comes with a page request."""

    def __init__(self, next_url: str) -> None:
        super().__init__("sign in first")
        self.next_url = next_url


# -- the per-vault secret --------------------------------------------------------------------------
def _read_secret(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        text = f.read(200).strip()
    if not re.fullmatch(rb"[0-9a-f]{64}", text):
        raise IntegrityError(
            f"{path} is not a web UI session key",
            hint=f"delete {path} and restart the server (every web session then signs in again)",
        )
    return bytes.fromhex(text.decode())


def _make_secret(path: Path) -> None:
    # Written beside it, then linked into place: a server process starting at the same moment either
    # wins the link or reads the winner's complete file, never a partial one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def session_secret(vault_dir: Path) -> bytes:
    """The vault's web UI session key, made on first use (mode 0600)."""
    key = str(vault_dir)
    with _secrets_lock:
        found = _secrets.get(key)
        if found is None:
            path = vault_dir / _SECRET_FILE
            found = _read_secret(path)
            if found is None:
                _make_secret(path)
                found = _read_secret(path)
            if found is None:
                raise StorageError(f"cannot read the session key {path}", hint="check the vault folder's permissions")
            _secrets[key] = found
        return found


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.labvault
    return state


def _mac(request: Request, purpose: str, value: str) -> str:
    secret = session_secret(Path(_state(request).vault.dir))
    return hmac.new(secret, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()


# -- sessions --------------------------------------------------------------------------------------
def _session_value(request: Request, token_id: str, issued: int) -> str:
    return f"v1.{token_id}.{issued}.{_mac(request, 'session', f'{token_id}.{issued}')}"


def _session_token(request: Request) -> ApiToken | None:
    """The active token the request's session cookie names, or None."""
    value = request.cookies.get(SESSION_COOKIE, "")
    match = _SESSION_RE.fullmatch(value)
    if match is None:
        return None
    token_id, issued = match.group(1), int(match.group(2))
    if not hmac.compare_digest(_session_value(request, token_id, issued), value):
        return None
    if not 0 <= time.time() - issued <= SESSION_SECONDS:
        return None
    now = datetime.now(UTC)
    token = next((t for t in _state(request).vault.access.tokens() if t.id == token_id), None)
    if token is None or token.state(now) != "active":
        return None
    return token


def _local_token(state: ServerState) -> ApiToken:
    return ApiToken("local", state.vault.user, "admin", datetime.now(UTC), state.vault.user, None, None)


def _csrf_token(request: Request) -> str:
    if _state(request).no_auth:
        return _mac(request, "csrf", "local")[:40]
    session = request.cookies.get(SESSION_COOKIE, "")
    return _mac(request, "csrf", session)[:40] if session else ""


def safe_next(value: str | None) -> str:
    """``value`` when it is a path on this site (``/runs?x=1``), else ``/runs``: never another site."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or "\\" in value
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
        or len(value) > 2000
    ):
        return "/runs"
    return value


def page_caller(needed: str) -> Callable[[Request], Caller]:
    """A dependency for pages: the signed-in caller, redirected to ``/login?next=...`` when there is
    none, and refused (a 403 page naming the role) when its role is below ``needed``."""

    def dependency(request: Request) -> Caller:
        state = _state(request)
        if state.no_auth:  # labvault ui / server --no-auth: loopback only, Host and Origin checked
            token = _local_token(state)
        else:
            found = _session_token(request)
            if found is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise SignInRequired(safe_next(target))
            token = found
            if not role_allows(token.role, needed):
                raise NotAllowed(
                    f"{token.user} is a {token.role}; this page needs the {needed} role",
                    hint="ask an admin for a token with that role, then sign in with it",
                    status=403,
                )
        request.state.user = token.user
        return Caller(token=token, vault=state.vault_for(token.user))

    dependency.__name__ = f"page_needs_{needed}"
    return dependency


def check_csrf(request: Request, form_value: str | None) -> None:
    """Refuse (403) a state-changing page request without the session's CSRF token, given in the form
    (``form_value``) or the ``X-CSRF-Token`` header, or sent from another origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise NotAllowed(f"a request from {origin[:100]} is not accepted", hint="use the labvault pages", status=403)
    expected = _csrf_token(request)
    given = form_value or request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise NotAllowed(
            "missing or invalid CSRF token",
            hint="reload the page and try again (sign in again if the session ended)",
            status=403,
        )


def _own_origin(request: Request) -> str:
    # Behind a proxy that ends TLS the server sees http; the browser's Origin says https.
    return f"{'https' if _secure(request) else request.url.scheme}://{request.headers.get('host', '')}"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def template_context(request: Request) -> dict[str, Any]:
    """What every page's base template needs: the user signed in and the CSRF token."""
    return {
        "user": getattr(request.state, "user", None),
        "csrf_token": _csrf_token(request),
        "no_auth": _state(request).no_auth,
    }


#: The pages' Content-Security-Policy: scripts and styles from this server's files only, so that text
#: that slipped through escaping still could not run; no framing (clickjacking).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def protect(response: Response) -> Response:
    """``response`` with the pages' security headers (:data:`CSP`, no framing, no sniffing)."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


# -- pages -----------------------------------------------------------------------------------------
def _login_page(request: Request, next_url: str, error: str | None, status: int) -> HTMLResponse:
    from labvault.server.ui import render

    nonce = secrets.token_hex(16)
    response = render(
        request,
        "login.html",
        status_code=status,
        next_url=next_url,
        error=error,
        login_csrf=_mac(request, "login", nonce),
    )
    response.set_cookie(
        _LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", secure=_secure(request), path="/login"
    )
    protect(response)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in page: a form that takes an API token."""
    if _state(request).no_auth:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, safe_next(next), None, 200)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/runs",
) -> Response:
    """Check the token; on success set the session cookie and go to ``next``."""
    target = safe_next(next)
    state = _state(request)
    if state.no_auth:
        return RedirectResponse(target, status_code=303)
    nonce = request.cookies.get(_LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(_mac(request, "login", nonce), csrf):
        return _login_page(request, target, "the sign-in form expired; try again", 403)
    try:
        found = state.vault.access.authenticate(token.strip())
    except NotAllowed as err:
        return _login_page(request, target, f"{err.message}", 401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        _session_value(request, found.id, int(time.time())),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(_LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str | None, Form(max_length=100)] = None) -> Response:
    """Sign out (POST with the CSRF token): clear the session cookie."""
    check_csrf(request, csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))
    return response


# -- errors on pages -------------------------------------------------------------------------------
#: Paths of programs, not people (health checks, Prometheus): their failures stay JSON.
_MACHINE_PATHS = ("/api/", "/healthz", "/readyz", "/metrics")


def _is_page(request: Request) -> bool:
    return not request.url.path.startswith(_MACHINE_PATHS)


def install_handlers(app: FastAPI) -> None:
    """Pages answer failures with HTML (the JSON API keeps its own handler): sign-in redirects, and
    an error page with the message and the hint for every :class:`LabvaultError`."""
    api_handler: Any = app.exception_handlers[LabvaultError]

    def sign_in(request: Request, err: Exception) -> Response:
        target = err.next_url if isinstance(err, SignInRequired) else "/runs"
        if request.headers.get("sec-fetch-site") == "cross-site" and request.method == "GET":
            # A link from another site (chat, mail) comes without the SameSite=Strict cookie: load
            # the page again from this site, which sends it, before asking to sign in.
            return HTMLResponse(
                f'<!doctype html><meta http-equiv="refresh" content="0;url={html.escape(target)}">'
                f'<title>labvault</title><a href="{html.escape(target)}">continue</a>'
            )
        if request.headers.get("hx-request"):  # htmx follows a redirect in place: send the whole page there
            return Response(status_code=204, headers={"HX-Redirect": f"/login?next={quote(target, safe='')}"})
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def labvault_error(request: Request, err: Exception) -> Response:
        if not _is_page(request) or not isinstance(err, LabvaultError):
            response: JSONResponse = api_handler(request, err)
            return response
        from labvault.server.errors import STATUS_OF_EXIT_CODE
        from labvault.server.ui import render

        status = err.status if isinstance(err, NotAllowed) else STATUS_OF_EXIT_CODE.get(err.exit_code, 500)
        page = render(request, "error.html", status_code=status, message=err.message, hint=err.hint, status=status)
        return protect(page)

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(LabvaultError, labvault_error)
