"""The web UI: pages rendered on the server from the service layer (Jinja2), htmx for partial updates.

Each group of pages is a router in its own module (``runs_pages``, ``data_pages``, ``registry_pages``,
``lineage_pages``); :data:`PAGE_MODULES` lists them and :func:`install` mounts them with the static
assets (bundled, no CDN) under ``/static``. Pages take their caller from
:func:`labvault.server.ui.session.page_caller`, which reads the session cookie set by the sign-in page.
"""

from __future__ import annotations

from importlib import import_module, resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

__all__ = ["PAGE_MODULES", "install", "render", "templates"]

_HERE = resources.files("labvault.server.ui")
templates = Jinja2Templates(directory=str(_HERE.joinpath("templates")))

#: The page routers, mounted in this order.
PAGE_MODULES: tuple[str, ...] = (
    "labvault.server.ui.session",
    "labvault.server.ui.runs_pages",
    "labvault.server.ui.data_pages",
    "labvault.server.ui.registry_pages",
    "labvault.server.ui.lineage_pages",
    "labvault.server.ui.audit_pages",
)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render the template ``name`` with the caller's user and CSRF token in ``context``."""
    from labvault.server.ui.session import template_context

    return templates.TemplateResponse(request, name, {**template_context(request), **context}, status_code=status_code)


def install(app: FastAPI) -> None:
    from labvault.server.ui.chart_data import Envelopes

    app.state.ui_envelopes = Envelopes()
    app.mount("/static", StaticFiles(directory=str(_HERE.joinpath("static"))), name="static")
    for module in PAGE_MODULES:
        app.include_router(import_module(module).router)
