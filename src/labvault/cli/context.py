"""Opening the vault for a command; imported lazily so that ``--help`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.vault import Vault

__all__ = ["open_vault"]


def open_vault() -> Vault:
    from labvault.vault import Vault

    return Vault.open()
