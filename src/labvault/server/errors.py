"""The server's one mapping from failures to HTTP: status from the exit code, body ``{error, hint, code}``.

Routes contain no ``try``: every expected failure is a :class:`~labvault.errors.LabvaultError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from labvault.errors import LabvaultError, NotAllowed

__all__ = [
    "STATUS_OF_EXIT_CODE",
    "error_for",
    "error_response",
    "http_error_body",
    "install_handlers",
    "validation_error_body",
]

#: Exit code -> HTTP status (docs/server.md); 8 is 401 or 403 as the refusal says.
STATUS_OF_EXIT_CODE = {1: 422, 2: 400, 3: 404, 4: 409, 5: 500, 6: 423, 7: 503, 8: 401}
_CODE_OF_STATUS = {400: 2, 401: 8, 403: 8, 404: 3, 405: 2, 409: 4, 413: 2, 422: 1, 423: 6, 503: 7}

log = logging.getLogger("labvault.server")


def error_response(status: int, message: str, hint: str, code: int) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint, "code": code}, status_code=status)


Answer = tuple[int, dict[str, Any], dict[str, str] | None]


def _body(status: int, message: str, hint: str, code: int) -> Answer:
    return status, {"error": message, "hint": hint, "code": code}, None


def error_for(err: LabvaultError) -> Answer:
    """A labvault error's status, body and headers (401 asks for a bearer token)."""
    status = err.status if isinstance(err, NotAllowed) else STATUS_OF_EXIT_CODE.get(err.exit_code, 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return status, {"error": err.message, "hint": err.hint, "code": err.exit_code}, headers


def validation_error_body(errors: Sequence[Any]) -> Answer:
    """A body that does not match the schema: 400, naming the first field that is wrong."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"invalid request: {where}: {first.get('msg', 'malformed')}" if where else "invalid request body"
    return _body(400, message, "see the schema at /api/v1/openapi.json", 2)


def http_error_body(err: HTTPException) -> Answer:
    hints = {404: "see the endpoints at /api/docs", 405: "see the endpoints at /api/docs"}
    status = err.status_code
    return _body(status, str(err.detail).lower(), hints.get(status, ""), _CODE_OF_STATUS.get(status, 5))


def _respond(answer: Answer) -> JSONResponse:
    status, doc, headers = answer
    return JSONResponse(doc, status_code=status, headers=headers)


def _labvault_error(_request: Request, err: Exception) -> JSONResponse:
    if not isinstance(err, LabvaultError):  # registered for this class only
        return _unexpected(_request, err)
    return _respond(error_for(err))


def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    return _respond(validation_error_body(err.errors() if isinstance(err, RequestValidationError) else []))


def _http_error(_request: Request, err: Exception) -> JSONResponse:
    if not isinstance(err, HTTPException):
        return _unexpected(_request, err)
    return _respond(http_error_body(err))


def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
    return error_response(500, "internal server error", "report it with the server's log", 5)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LabvaultError, _labvault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
