"""The one middleware: body limits (413), the JSON request log and the Prometheus counts; and, on a
server without authentication, the Host and Origin checks that keep other web pages from driving it.

Plain ASGI rather than ``@app.middleware``: it adds no task and no stream copy per request, and it
counts a body sent without a Content-Length as it arrives.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labvault.errors import LabvaultError
from labvault.server.errors import error_response
from labvault.server.metrics import Metrics

__all__ = ["MAX_JSON_BODY", "LimitAndLog", "LoopbackOnly"]

#: JSON bodies larger than this are refused with 413; objects have their own limit (routes/objects.py).
MAX_JSON_BODY = 16 << 20

_access_log = logging.getLogger("labvault.server.access")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the body is over {limit} bytes")


class LimitAndLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        # An object upload is streamed and limited by its route; everything else is JSON.
        limit = None if method == "PUT" and path.startswith("/api/v1/objects/") else MAX_JSON_BODY
        status = 500
        answered = False  # the response's head is sent
        broken_off: str | None = None
        received = 0
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            if limit is not None and length is not None and (not length.isdigit() or int(length) > limit):
                bad = not length.isdigit()
                response = error_response(
                    400 if bad else 413,
                    "invalid Content-Length" if bad else f"the body is {length.decode()} bytes; the limit is {limit}",
                    "" if bad else "send less per request",
                    2,
                )
                await response(scope, receive, recording_send)
                return
            await self.app(scope, counting_receive, recording_send)
        except Exception as exc:
            cause = exc.__cause__ or exc
            if not answered or not isinstance(cause, LabvaultError):  # the error handlers log what was unexpected
                raise
            # The body broke off after its head was sent (an object found corrupt as it was read, say):
            # all this client can be told is a short body, which uvicorn gives by closing the connection.
            # One line in the log, not a traceback: the cause is known.
            broken_off = " ".join(cause.message.split())[:300]
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(method, _route_label(scope), status, seconds)
            user = scope.get("state", {}).get("user")
            entry = {"method": method, "path": path, "status": status, "ms": round(seconds * 1000, 2), "user": user}
            if broken_off is not None:
                entry["broken_off"] = broken_off
            _access_log.info(json.dumps(entry))


def _route_label(scope: Scope) -> str:
    """The route's template, not the path: a label per run id would grow without bound."""
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    # Routers mounted under /api/v1 may know their template without the prefix.
    if scope["path"].startswith("/api/v1/") and not template.startswith("/api/v1"):
        return "/api/v1" + template
    return template


def _loopback_authority(authority: str, port: int, *, default_port: int) -> bool:
    """True when ``authority`` (``host[:port]``) names a loopback address and ``port``."""
    host, sep, given = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if not sep:
        host, given = authority, str(default_port)
    if not given.isdigit() or int(given) != port:
        return False
    host = host.lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """On a server with ``--no-auth`` (``labvault ui``): refuse (403) a request whose ``Host`` is not a
    loopback name with the server's own port (DNS rebinding: evil.example resolving to 127.0.0.1) or
    whose ``Origin``, when sent, is not the server itself (a form or fetch from another web page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        port = server[1] if server and server[1] is not None else 80
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in (b"host", b"origin")}
        host = headers.get("host", "")
        origin = headers.get("origin")
        reason = None
        if not _loopback_authority(host, port, default_port=80):
            reason = f"the Host {host[:100]!r} is not this server on a loopback address"
        elif origin is not None and not (
            origin.startswith("http://") and _loopback_authority(origin[7:], port, default_port=80)
        ):
            reason = f"a request from {origin[:100]!r} is not accepted"
        if reason is None:
            await self.app(scope, receive, send)
            return
        response = error_response(403, reason, f"open http://127.0.0.1:{port}/ in the browser", 8)
        await response(scope, receive, send)
