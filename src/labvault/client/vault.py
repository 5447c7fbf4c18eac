"""``ServerVault``: a vault whose parts talk to a labvault server.

It has the attributes the CLI and the Python API use on a local :class:`~labvault.vault.Vault`
(``objects``, ``data``, ``registry``, ``runs``, ``lineage``, ``audit``), each built on first use
from its own module of this package over one :class:`~labvault.client.transport.Transport`.
Where a command needs files on this machine (checkout, add, get, reproduce), the file work is done
here and only objects and records cross the network. A part the server does not offer (fsck, gc,
tokens) or that works on a local vault only (pipelines) raises a usage error (exit 2) saying so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from labvault.client.settings import ServerTarget
from labvault.client.transport import Transport
from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.client.objects import HttpObjectStore
    from labvault.services.reproduce import ReproduceReport

__all__ = ["ServerVault", "local_only", "server_only"]


def server_only(what: str, url: str) -> NoReturn:
    """Refuse a command that runs only where the vault's stores are (exit 2)."""
    raise ValidationError(
        f"`{what}` runs on the server's machine, not through {url}",
        hint=f"run it where the server's vault is (unset LABVAULT_URI to use a local vault), e.g. `labvault {what}`",
    )


def local_only(what: str, url: str) -> NoReturn:
    """Refuse a command that works against a local vault only (exit 2)."""
    raise ValidationError(
        f"`labvault {what}` runs against a local vault, not through {url}",
        hint="unset LABVAULT_URI and run it in a project with a vault (`labvault init`; `labvault pull` "
        "brings records from the server)",
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

    @cached_property
    def environments(self) -> Any:
        from labvault.services.reproduce.environments import Environments

        return Environments(runs=self.runs, root=self.data.root)

    @property
    def pipelines(self) -> NoReturn:
        # A pipeline's stage cache, lock and tags are records of the vault the stages run against.
        local_only("pipeline", self.url)

    def reproduce(
        self,
        ref: str,
        *,
        env: str = "auto",
        rtol: float | None = None,
        atol: float | None = None,
        ignore_metrics: Sequence[str] = (),
        ignore_artifacts: Sequence[str] = (),
        twice: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        keep: bool = False,
    ) -> ReproduceReport:
        """Rerun a run on a clean workspace on this machine and judge it, as a local vault does: the
        rerun is recorded on the server and the objects compared come from it. Rebuilt environments
        are kept in the user's cache folder. A pipeline run is refused (its stages need a local vault)."""
        from labvault.client.settings import spool_dir
        from labvault.services.reproduce import reproduce

        return reproduce(
            runs=self.runs,
            data=self.data,
            registry=self.registry,
            project_root=self.data.root,
            envs_dir=spool_dir().parent / "envs",
            vault_env={"LABVAULT_URI": self.url},  # the token: LABVAULT_TOKEN, inherited, or the saved login
            ref=ref,
            env=env,
            rtol=rtol,
            atol=atol,
            ignore_metrics=ignore_metrics,
            ignore_artifacts=ignore_artifacts,
            twice=twice,
            workdir=workdir,
            keep=keep,
        )

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
