"""Transfers with a remote that is a labvault server, as ``vault.remotes`` sees them.

A server is reached over HTTP by the client layer, which sits above the service layer: the service
cannot import it. The layer that can (``labvault.open()``) hands the vault a :class:`ServerTransfers`;
``vault.remotes.push/pull/status/fetch`` then go through it for a server remote. A vault opened with
``Vault.open()`` has none, and refuses a server remote (ValidationError, exit 2) with a hint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from labvault.services.remotes import TransferResult
    from labvault.services.remotes.fetch import Status
    from labvault.services.remotes.settings import RemoteSpec

__all__ = ["ServerTransfers"]

Progress = Callable[[int, int, int], None]


class ServerTransfers(Protocol):
    """``push``, ``pull``, ``status`` and ``fetch`` of ``vault.remotes``, with a server remote ``spec``."""

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
    ) -> TransferResult: ...

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
    ) -> TransferResult: ...

    def status(self, spec: RemoteSpec, refs: Sequence[str]) -> Status: ...

    def fetch(
        self, spec: RemoteSpec, refs: Sequence[str], *, blobs: bool, jobs: int, progress: Progress | None
    ) -> int: ...
