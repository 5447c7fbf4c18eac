"""``lv.models``: the model registry from Python without holding a vault.

>>> import labvault as lv
>>> path = lv.models.get("fraud/detector@prod")   # a verified, cached copy of the version's files
>>> model = load(path / "model.pt")

Each call opens the vault found from the current folder (or ``vault=``), delegates to
``vault.registry`` and closes it again.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.client.settings import ServerTarget
    from labvault.client.vault import ServerVault
    from labvault.entities import ModelVersion

__all__ = ["Models", "models"]


class Models:
    def get(self, ref: str, *, vault: str | os.PathLike[str] | None = None) -> Path:
        """The local path of a verified, cached copy of ``project/model@version|alias``.

        Through a server (``LABVAULT_URI``, no ``vault=``), the server resolves the alias and the copy
        is kept in the user's cache folder; while the version's content is unchanged, a later call
        downloads nothing."""
        if vault is None:
            server = _server()
            if server is not None:
                return server.registry.get(ref)  # type: ignore[no-any-return]
        from labvault.vault import Vault

        with Vault.open(vault) as v:
            return v.registry.get(ref)

    def resolve(self, ref: str, *, vault: str | os.PathLike[str] | None = None) -> ModelVersion:
        """The version an alias or version reference names."""
        from labvault.vault import Vault

        with Vault.open(vault) as v:
            return v.registry.resolve(ref)

    def __repr__(self) -> str:
        return "labvault.models"


models = Models()

# One connection per server and process: a deployment job calling ``models.get`` in a loop pays the
# TLS setup and the API version check once, not per call (an httpx client builds an SSL context, about
# 15 ms, even for http://). Keyed by pid too, so a forked child never shares its parent's sockets.
_SERVERS: dict[tuple[int, ServerTarget], ServerVault] = {}


def _server() -> ServerVault | None:
    """The vault of the targeted server (``LABVAULT_URI`` or a saved login), or None for a local vault."""
    from labvault.client.settings import server_target

    target = server_target()
    if target is None:
        return None
    key = (os.getpid(), target)
    found = _SERVERS.get(key)
    if found is None:
        from labvault.client.vault import ServerVault

        if not _SERVERS:
            atexit.register(_close_servers)
        found = _SERVERS[key] = ServerVault.open(target)
    return found


def _close_servers() -> None:
    for server in _SERVERS.values():
        server.close()
    _SERVERS.clear()
