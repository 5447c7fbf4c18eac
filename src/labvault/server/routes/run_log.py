"""``POST /api/v1/runs/{ref}/log``, the hottest route: a training loop sends one point per request.

:class:`FastLog` serves it below the framework: an ASGI layer that matches the one path, reads the
small body in the event loop and validates it with the same pydantic model the schema declares (the
framework's way is a thread for the token dependency, another for the endpoint, and a dependency
solver and body parser in between). Points with their steps and no key go to the process's writer
thread, which commits the points of every request waiting in one transaction, each behind its own
token and run-state check (services/tracking/point_queue.py); any other request runs in one worker
thread. Every rule stays: the token is read from the database on each request (a revocation counts
from the next request, in every server process), the writer role, the run's state, the idempotency
key, the body limit and the error body ``{error, hint, code}``. The route declared in ``runs.py`` is
the schema and the same behaviour through the framework; it stores through :func:`store_batch`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import anyio.to_thread
import pydantic
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labvault.entities.access import ApiToken
from labvault.errors import LabvaultError, ValidationError
from labvault.server.deps import ServerState, authenticate
from labvault.server.errors import Answer, error_for, http_error_body, validation_error_body
from labvault.services.access import Access
from labvault.services.tracking.batches import GatedPoints
from labvault.services.tracking.names import parse_run_id
from labvault.services.tracking.records import RunRecords

__all__ = ["MAX_BATCH", "FastLog", "LogBatch", "MetricIn", "store_batch"]

MAX_BATCH = 10_000
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_PATH = re.compile(r"/api/v1/runs/([^/]+)/log")
_FULL_ID = re.compile(r"(?:run:)?([0-9a-f]{12})")


class MetricIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=250)
    value: float | Literal["NaN", "Infinity", "-Infinity"]
    step: int | None = Field(None, ge=0)


class LogBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_BATCH)
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_BATCH)
    metrics: list[MetricIn] = Field(default_factory=list, max_length=MAX_BATCH)


def store_batch(runs: RunRecords, user: str, ref: str, body: LogBatch, key: str | None) -> Any:
    """Store one log request; a retry with the same ``key`` (per user and run) gets the first answer."""
    run_id = parse_run_id(ref)
    if len(run_id) != 12:  # a prefix; a full id is checked in the transaction (no read of its own)
        run_id = runs.resolve(ref)
    points: list[tuple[str, object, int]] = []
    next_step: dict[str, int] | None = None
    for m in body.metrics:
        value = _NON_FINITE[m.value] if isinstance(m.value, str) else m.value
        if m.step is None:
            if next_step is None:
                next_step = {k: v + 1 for k, v in runs.max_steps(run_id).items()}
            step = next_step.get(m.key, 0)
        else:
            step = m.step
        if next_step is not None:
            next_step[m.key] = max(next_step.get(m.key, 0), step + 1)
        points.append((m.key, value, step))
    return runs.log_batch(run_id, params=body.params, tags=body.tags, points=points, once=(f"{user}:run:{run_id}", key))


class FastLog:
    """Serves ``POST /api/v1/runs/{ref}/log``; passes every other request on."""

    def __init__(self, app: ASGIApp, state: ServerState, route: object) -> None:
        self.app = app
        self.state = state
        self.route = route  # the declared route, so the request log and the metrics label it as before

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        status, doc, headers = await self._answer(scope, receive, match.group(1))
        await JSONResponse(doc, status_code=status, headers=headers)(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, ref: str) -> Answer:
        try:
            raw = await _read_body(receive)
        except HTTPException as err:  # over the body limit (the LimitAndLog middleware counts it)
            return http_error_body(err)
        except ValidationError as err:
            return error_for(err)
        headers = {k: v for k, v in scope["headers"] if k in (b"authorization", b"idempotency-key")}
        key = headers.get(b"idempotency-key")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        seen: dict[str, Any] = scope.setdefault("state", {})
        try:
            body: LogBatch | None = LogBatch.model_validate_json(raw or b"null")
            invalid = None
        except pydantic.ValidationError as err:
            body, invalid = None, validation_error_body(err.errors())
        text = None if key is None else key.decode("latin-1")
        try:
            gated = self._gated(body, ref, auth, text, seen)
            if gated is not None:  # the common request: committed with the others waiting
                return 200, await asyncio.wrap_future(self.state.points().submit(gated)), None
            return await anyio.to_thread.run_sync(self._serve, body, invalid, ref, auth, text, seen)
        except LabvaultError as err:
            return error_for(err)

    def _gated(
        self, body: LogBatch | None, ref: str, auth: str, key: str | None, seen: dict[str, Any]
    ) -> GatedPoints | None:
        """Points with their steps and no key (what a training loop sends): appended behind a gate that
        reads the token and the run's status in the transaction that stores them. None: any other request."""
        state = self.state
        scheme, _, value = auth.partition(" ")
        value = value.strip() if scheme.lower() == "bearer" else ""
        full_id = _FULL_ID.fullmatch(ref)
        if body is None or not full_id or not value or state.no_auth or not _points_only(body, key):
            return None
        token_id, secret = Access.split_token(value)

        def authorize(found: tuple[ApiToken, str, str] | None) -> None:
            token = Access.verify_token(found, secret)
            Access.require(token, "writer")
            seen["user"] = token.user  # for the request log, as the framework's dependency does

        points = [
            (m.key, _NON_FINITE[m.value] if isinstance(m.value, str) else m.value, m.step or 0) for m in body.metrics
        ]
        return state.vault.runs.gate_points(full_id.group(1), points, token_id=token_id, authorize=authorize)

    def _serve(
        self,
        body: LogBatch | None,
        invalid: Answer | None,
        ref: str,
        auth: str,
        key: str | None,
        seen: dict[str, Any],
    ) -> Answer:
        """In a worker thread: the token, then the body, then the write (the framework's order)."""
        token = authenticate(self.state, auth, "writer")
        seen["user"] = token.user
        if body is None:
            return invalid or validation_error_body([])
        return 200, store_batch(self.state.vault_for(token.user).runs, token.user, ref, body, key), None


def _points_only(body: LogBatch, key: str | None) -> bool:
    return key is None and not body.params and not body.tags and all(m.step is not None for m in body.metrics)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ValidationError("the client went away before the whole body arrived", hint="send it again")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)
