"""labvault: the lab notebook and the warehouse of a machine-learning team.

>>> import labvault as lv
>>> vault = lv.open()            # the vault found by walking up from the current folder

Heavy names are loaded lazily (PEP 562), so ``import labvault`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from labvault import fluent  # the module-level tracking API: light, an open vault loads the rest
from labvault.errors import (
    AmbiguousReference,
    CheckFailed,
    Conflict,
    ExternalError,
    IntegrityError,
    LabvaultError,
    LockedError,
    NotFound,
    StorageError,
    ValidationError,
    VaultNotFound,
)
from labvault.fluent import *  # noqa: F403 - its names are listed once, in fluent.__all__

if TYPE_CHECKING:
    from labvault.entities import Artifact, DataDiff, Manifest, MetricPoint, Run, Snapshot
    from labvault.model_api import models
    from labvault.refs import DataRef, Digest, ModelRef, RunRef, parse_ref
    from labvault.vault import Vault

__all__ = [
    "AmbiguousReference",
    "Artifact",
    "CheckFailed",
    "Conflict",
    "DataDiff",
    "DataRef",
    "Digest",
    "ExternalError",
    "IntegrityError",
    "LabvaultError",
    "LockedError",
    "Manifest",
    "MetricPoint",
    "ModelRef",
    "NotFound",
    "Run",
    "RunRef",
    "Snapshot",
    "StorageError",
    "ValidationError",
    "Vault",
    "VaultNotFound",
    "__version__",
    "models",
    "open",
    "parse_ref",
]
__all__ += fluent.__all__

__version__ = "0.1.0"

_LAZY = {
    "Vault": "labvault.vault",
    "DataDiff": "labvault.entities",
    "Manifest": "labvault.entities",
    "Snapshot": "labvault.entities",
    "DataRef": "labvault.refs",
    "Digest": "labvault.refs",
    "ModelRef": "labvault.refs",
    "RunRef": "labvault.refs",
    "parse_ref": "labvault.refs",
    "Artifact": "labvault.entities",
    "MetricPoint": "labvault.entities",
    "Run": "labvault.entities",
    "models": "labvault.model_api",
}


def open(path: str | None = None) -> Vault:
    """Open the vault at ``path`` or the one found by walking up from the current folder.

    With no ``path`` and a server targeted (``LABVAULT_URI`` or ``labvault login``), the vault is that
    server's: a :class:`~labvault.client.vault.ServerVault` with the same parts. A local vault reaches
    its server remotes too: ``vault.remotes.push/pull/status/fetch`` go through the server's API.
    """
    if path is None:
        from labvault.client.settings import server_target

        target = server_target()
        if target is not None:
            from labvault.client.vault import ServerVault

            return ServerVault.open(target)  # type: ignore[return-value]
    from labvault.remote_api import open_local

    return open_local(path)  # server remotes through the client, as the CLI does


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labvault' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
