"""One vault of a transfer as the remotes service sees it (built by ``Vault``); light to import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.storage.meta.store import MetaStore
    from labvault.storage.objects.protocol import ObjectStore

__all__ = ["Side"]


@dataclass(frozen=True, slots=True)
class Side:
    """A vault's stores, how messages name it, and its resolvers of references."""

    meta: MetaStore
    objects: ObjectStore
    dir: Path
    where: str  # how messages name it: "this vault", "remote 'nas' (/mnt/nas/proj)"
    user: str
    resolve_run: Callable[[str], str]
    resolve_model: Callable[[str], tuple[str, str, str]]  # (project, model, version)
