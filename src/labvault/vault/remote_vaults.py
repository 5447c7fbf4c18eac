"""How a vault reaches its remotes: the two ends of a transfer as ``vault.remotes`` sees them (this
vault's stores and resolvers as a :class:`~labvault.services.remotes.side.Side`, and a remote folder or
team vault opened as one, made by a first push and kept open until the vault that opened it closes),
and ``vault.fetching``: a read that first fetches from the default remote what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from labvault.config import CONFIG_NAME, VAULT_DIRNAME, Settings
from labvault.errors import IntegrityError, LabvaultError, NotFound
from labvault.services.remotes.side import Side

if TYPE_CHECKING:
    from labvault.services.remotes import Remotes, RemoteSpec
    from labvault.vault import Vault

__all__ = ["RemoteVaults", "fetching", "side_of"]

T = TypeVar("T")


def side_of(vault: Vault, where: str) -> Side:
    """``vault`` as one end of a transfer; ``where`` names it in messages."""

    def resolve_model(ref: str) -> tuple[str, str, str]:
        found = vault.registry.resolve(ref)
        return found.project, found.model, found.version

    return Side(
        meta=vault.meta,
        objects=vault.objects,
        dir=vault.dir,
        where=where,
        user=vault.user,
        resolve_run=vault.runs.resolve,
        resolve_model=resolve_model,
    )


class RemoteVaults:
    """The remote vaults one vault opened for its pushes and pulls, closed with it."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._opened: list[Vault] = []

    def open(self, spec: RemoteSpec, create: bool) -> Side | None:
        """The remote's vault (made on a first push when ``create``); None when there is no vault there yet."""
        folder = spec.path
        vault_dir = folder if folder.name == VAULT_DIRNAME else folder / VAULT_DIRNAME
        settings = Settings(user=self._vault.user)
        cls = type(self._vault)
        if spec.kind == "team":  # a local folder that joins the team vault: its config and its cache
            remote = cls.init(folder, database_url=spec.database_url, objects_url=spec.objects_url, settings=settings)[
                0
            ]
        elif (vault_dir / CONFIG_NAME).is_file():
            remote = cls.open(vault_dir, settings=settings)
        elif create:
            remote = cls.init(vault_dir.parent, settings=settings)[0]
        else:
            return None
        self._opened.append(remote)
        return side_of(remote, f"remote {spec.name!r} ({spec.url})")

    def close(self) -> None:
        for remote in self._opened:
            remote.close()


def fetching(remotes: Remotes, refs: Sequence[str], action: Callable[[], T]) -> T:
    """``vault.fetching``: ``action`` after fetching the records and trees ``refs`` need, then the
    objects too (and ``action`` once more) when a read misses one; with no remote, just ``action``."""
    if not remotes.list():
        return action()
    remotes.fetch(refs, blobs=False)
    try:
        return action()
    except (IntegrityError, NotFound) as exc:
        try:
            fetched = remotes.fetch(refs)
        except LabvaultError:
            raise exc from None
        if not fetched:
            raise
    return action()
