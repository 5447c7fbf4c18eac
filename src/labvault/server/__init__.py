"""The team server: one REST API (``/api/v1``) over the vault's services, with tokens and roles.

``create_app(vault)`` builds the FastAPI application; ``labvault server`` runs it with uvicorn.
Needs the ``server`` extra: ``pip install 'labvault[server]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labvault.server.app import create_app as create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from labvault.server.app import create_app

        return create_app
    raise AttributeError(name)
