"""``lv.models``: the model registry from Python without holding a vault.

>>> import labvault as lv
>>> path = lv.models.get("fraud/detector@prod")   # a verified, cached copy of the version's files
>>> model = load(path / "model.pt")

Each call opens the vault found from the current folder (or ``vault=``), delegates to
``vault.registry`` and closes it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.entities import ModelVersion

__all__ = ["Models", "models"]


class Models:
    def get(self, ref: str, *, vault: str | os.PathLike[str] | None = None) -> Path:
        """The local path of a verified, cached copy of ``project/model@version|alias``.

        Through a server (``LABVAULT_URI``, no ``vault=``), the server resolves the alias and the copy
        is kept in the user's cache folder; while the version's content is unchanged, a later call
        downloads nothing."""
        if vault is None:
            from labvault.client.settings import server_target

            target = server_target()
            if target is not None:
                from labvault.client.vault import ServerVault

                with ServerVault.open(target) as server:
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
