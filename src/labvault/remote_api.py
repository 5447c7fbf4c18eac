"""``vault.remotes`` with a remote that is a labvault server, from Python.

The vault's remotes service moves records between vaults through their stores; a server is reached
through its API, by the client layer, which the vault (below it) cannot import. ``labvault.open()``
hands the vault a :class:`ServerRemotes`, so that ``vault.remotes.push/pull/status/fetch`` (and the
fetch of ``vault.data.checkout`` and ``vault.fetching``) work with a server remote as the CLI does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.services.remotes import RemoteSpec, TransferResult
    from labvault.services.remotes.fetch import Status
    from labvault.vault import Vault

__all__ = ["ServerRemotes", "open_local"]

Progress = Callable[[int, int, int], None]


class ServerRemotes:
    """The transfers of ``vault`` with server remotes, through :mod:`labvault.client.remote`."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def push(
        self,
        spec: RemoteSpec,
        refs: Sequence[str],
        *,
        everything: bool,
        jobs: int,
        no_data: bool,
        rename: bool,
        dry_run: bool,
        progress: Progress | None,
    ) -> TransferResult:
        from labvault.client import remote

        return remote.push(
            self._vault,
            spec,
            refs,
            everything=everything,
            jobs=jobs,
            no_data=no_data,
            rename=rename,
            dry_run=dry_run,
            progress=progress,
        )

    def pull(
        self,
        spec: RemoteSpec,
        refs: Sequence[str],
        *,
        jobs: int,
        no_data: bool,
        rename: bool,
        dry_run: bool,
        progress: Progress | None,
    ) -> TransferResult:
        from labvault.client import remote

        return remote.pull(
            self._vault, spec, refs, jobs=jobs, no_data=no_data, rename=rename, dry_run=dry_run, progress=progress
        )

    def status(self, spec: RemoteSpec, refs: Sequence[str]) -> Status:
        from labvault.client import remote

        return remote.status(self._vault, spec, refs)

    def fetch(self, spec: RemoteSpec, refs: Sequence[str], *, blobs: bool, jobs: int, progress: Progress | None) -> int:
        from labvault.client import remote

        return remote.fetch(self._vault, spec, refs, blobs=blobs, jobs=jobs, progress=progress)


def open_local(path: str | None = None) -> Vault:
    """The local vault at ``path`` (or found from the current folder), handed its ``ServerRemotes``:
    what ``labvault.open()`` and every CLI command that opens a local vault work with."""
    from labvault.vault import Vault

    vault = Vault.open(path)
    vault.server_transfers = ServerRemotes(vault)
    return vault
