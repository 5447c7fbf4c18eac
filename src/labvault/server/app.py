"""``create_app(vault)``: the FastAPI application over one open vault.

The OpenAPI schema is at ``/api/v1/openapi.json`` and a page that renders it, served from this
package (no CDN), at ``/api/docs``. ``app_from_env`` is the factory ``labvault server`` hands to
uvicorn, so that each worker process opens the vault itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute

from labvault.server.deps import Caller, ServerState, caller
from labvault.server.errors import install_handlers
from labvault.server.metrics import Metrics
from labvault.server.middleware import MAX_JSON_BODY, LimitAndLog, LoopbackOnly
from labvault.server.routes import audit, data, models, object_batch, objects, runs, transfer, uploads
from labvault.server.routes.run_log import FastLog
from labvault.vault import Vault

__all__ = ["ENV_NO_AUTH", "ENV_VAULT", "MAX_JSON_BODY", "app_from_env", "create_app"]

ENV_VAULT = "LABVAULT_SERVER_VAULT"
ENV_NO_AUTH = "LABVAULT_SERVER_NO_AUTH"
#: Threads that run requests, per process. Each may hold two database connections at once (its
#: metric appender's, kept per thread, and a transaction's), and the connection pool has 5 + 10: with
#: the framework's default of 40 threads, 16 or more concurrent writers exhausted the pool and every
#: request waited 30 s for a connection. Beyond the cap, requests queue for a thread instead.
REQUEST_THREADS = 6


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
    try:
        yield
    finally:
        app.state.labvault.close()  # the points still queued are committed first


def create_app(vault: Vault, *, no_auth: bool = False) -> FastAPI:
    """The application serving ``vault``; ``no_auth`` treats every request as the vault's own user (admin)."""
    app = FastAPI(
        title="labvault",
        version="1",
        description="The labvault team server: runs, data snapshots, objects, models, audit and lineage.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.labvault = ServerState(vault=vault, no_auth=no_auth)
    install_handlers(app)
    metrics = Metrics()
    for module in (runs, object_batch, uploads, objects, data, models, audit, transfer):
        app.include_router(module.router, prefix="/api/v1")

    from labvault.server import ui
    from labvault.server.ui import session

    ui.install(app)
    session.install_handlers(app)
    app.add_middleware(FastLog, state=app.state.labvault, route=_route(runs.router, "POST", "/runs/{ref}/log"))
    if no_auth:  # no token to ask for: the browser's Host and Origin are what keep other pages out
        app.add_middleware(LoopbackOnly)
    app.add_middleware(LimitAndLog, metrics=metrics)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/runs", status_code=303)

    @app.get("/api/v1/version", tags=["server"])
    def version() -> dict[str, str]:
        """The API version this server speaks (clients refuse another) and its labvault version."""
        from labvault import __version__

        return {"api": "1", "labvault": __version__}

    @app.get("/api/v1/whoami", tags=["server"])
    def whoami(who: Annotated[Caller, Depends(caller("reader"))]) -> dict[str, str]:
        """The caller's user, role and token id (``labvault login`` checks a token with it)."""
        return {"user": who.token.user, "role": who.token.role, "token": who.token.id}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        from labvault.refs import Digest

        vault.runs.list(limit=1)
        vault.objects.has(Digest("0" * 64))
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/api/docs", include_in_schema=False)
    def docs_page() -> HTMLResponse:
        page = resources.files("labvault.server").joinpath("ui/static/docs.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    return app


def _route(router: APIRouter, method: str, path: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ()))


def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker: the vault named by LABVAULT_SERVER_VAULT."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    vault = Vault.open(os.environ[ENV_VAULT])
    return create_app(vault, no_auth=os.environ.get(ENV_NO_AUTH) == "1")
