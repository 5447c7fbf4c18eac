"""Opening the vault for a command; imported lazily so that ``--help`` stays light.

With ``LABVAULT_URI`` set (or a ``labvault login``), commands work through that server: the vault
they get is a :class:`~labvault.client.vault.ServerVault` with the same parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labvault.vault import Vault

__all__ = ["open_here", "open_local_vault", "open_project_vault", "open_vault", "through_server"]


def through_server() -> bool:
    """True when this process works through a server rather than a local vault."""
    from labvault.client.settings import server_target

    return server_target() is not None


def open_vault() -> Vault | Any:
    from labvault.client.settings import server_target

    target = server_target()
    if target is not None:
        from labvault.client.vault import ServerVault

        return ServerVault.open(target)
    return open_here()


def open_local_vault(what: str) -> Vault:
    """The local vault, for commands that run only where the stores are (fsck, gc, server token):
    through a server they are a usage error (exit 2) saying so."""
    from labvault.client.settings import server_target

    target = server_target()
    if target is not None:
        from labvault.client.vault import server_only

        server_only(what, target.url)
    return open_here()


def open_project_vault(what: str) -> Vault:
    """The local vault, for commands that work against a local vault only (pipelines): through a
    server they are a usage error (exit 2) saying so, never a silent use of another vault."""
    from labvault.client.settings import server_target

    target = server_target()
    if target is not None:
        from labvault.client.vault import local_only

        local_only(what, target.url)
    return open_here()


def open_here() -> Vault:
    """The vault found from the current folder, able to reach its server remotes: as
    ``labvault.open()`` does, it is handed a ``ServerRemotes``, so ``vault.remotes`` (push, pull,
    status, the fetch of checkout and get) goes through a server's API when the remote is one."""
    from labvault.remote_api import open_local

    return open_local()
