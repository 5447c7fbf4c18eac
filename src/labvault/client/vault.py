"""``ServerVault``: a vault whose parts talk to a labvault server.

It has the attributes the CLI and the Python API use on a local :class:`~labvault.vault.Vault`
(``objects``, ``data``, ``registry``, ``runs``, ``lineage``, ``audit``), each built on first use
from its own module of this package over one :class:`~labvault.client.transport.Transport`.
Where a command needs files on this machine (checkout, add, get), the file work is done here and
only objects and records cross the network. A part the server does not offer (fsck, gc, tokens)
raises a usage error (exit 2) saying so.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from labvault.client.settings import ServerTarget
from labvault.client.transport import Transport
from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.client.objects import HttpObjectStore

__all__ = ["ServerVault", "server_only"]


def server_only(what: str, url: str) -> NoReturn:
    """Refuse a command that runs only where the vault's stores are (exit 2)."""
    raise ValidationError(
        f"`{what}` runs on the server's machine, not through {url}",
        hint=f"run it where the server's vault is (unset LABVAULT_URI to use a local vault), e.g. `labvault {what}`",
    )


class ServerVault:
    """A vault reached through a server. ``root`` is the local project folder (for file work)."""

    is_server = True

    def __init__(self, target: ServerTarget, root: Path | None = None, *, transport: Transport | None = None) -> None:
        self.target = target
        self.url = target.url
        self.root = (root or Path.cwd()).resolve()
        self.transport = transport or Transport(target)
        self._closed = False

    @classmethod
    def open(cls, target: ServerTarget, root: str | os.PathLike[str] | None = None) -> ServerVault:
        vault = cls(target, Path(root) if root is not None else None)
        vault.transport.check_version()
        return vault

    # -- parts ------------------------------------------------------------------------------
    @cached_property
    def objects(self) -> HttpObjectStore:
        from labvault.client.objects import HttpObjectStore

        return HttpObjectStore(self.transport)

    @cached_property
    def data(self) -> Any:
        from labvault.client.data import ServerData

        return ServerData(self)

    @cached_property
    def registry(self) -> Any:
        from labvault.client.registry import ServerRegistry

        return ServerRegistry(self)

    @cached_property
    def runs(self) -> Any:
        from labvault.client.runs import ServerRuns

        return ServerRuns(self)

    @cached_property
    def tracking(self) -> Any:
        return self.runs

    @cached_property
    def lineage(self) -> Any:
        from labvault.client.registry import ServerLineage

        return ServerLineage(self)

    @cached_property
    def audit(self) -> Any:
        from labvault.client.registry import ServerAudit

        return ServerAudit(self)

    def write_output(self, path: str | os.PathLike[str], text: str) -> None:
        """Write a file the user asked for (``--output``) on this machine, through the contained writer."""
        from labvault.storage.contained import write_text

        write_text(Path(path), text)

    @property
    def maintenance(self) -> NoReturn:
        server_only("fsck", self.url)

    @property
    def access(self) -> NoReturn:
        server_only("server token", self.url)

    @property
    def meta(self) -> NoReturn:
        server_only("this command", self.url)

    # -- life ---------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if "objects" in self.__dict__:  # built on first use: its cache holds a folder open
                self.objects.close()
            self.transport.close()

    def __enter__(self) -> ServerVault:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServerVault({self.url!r})"
