"""The model registry (``vault.registry``): immutable versions, aliases under policies, the audit log.

>>> vault.registry.register("fraud/detector", Path("model/"))           # -> (ModelVersion, created)
>>> vault.registry.promote("fraud/detector@0.1.0", "staging")            # -> Decision, or PromotionRefused
>>> vault.registry.get("fraud/detector@staging")                         # -> Path of a verified copy

The package names load lazily (PEP 562): the lean read path imports :mod:`.layout` to show a version's
files without the :class:`Registry` and its SQLAlchemy repos.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labvault.services.registry.aliases import PromotionRefused
    from labvault.services.registry.service import Registry

__all__ = ["PromotionRefused", "Registry"]

_LAZY = {
    "PromotionRefused": "labvault.services.registry.aliases",
    "Registry": "labvault.services.registry.service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labvault.services.registry' has no attribute {name!r}")
