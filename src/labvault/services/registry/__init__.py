"""The model registry (``vault.registry``): immutable versions, aliases under policies, the audit log.

>>> vault.registry.register("fraud/detector", Path("model/"))           # -> (ModelVersion, created)
>>> vault.registry.promote("fraud/detector@0.1.0", "staging")            # -> Decision, or PromotionRefused
>>> vault.registry.get("fraud/detector@staging")                         # -> Path of a verified copy

The package names load lazily (PEP 562): the lean read path imports :mod:`.layout` to show a version's
files without the :class:`Registry` and its SQLAlchemy repos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labvault.services.registry.aliases import PromotionRefused
    from labvault.services.registry.service import Registry

__all__ = ["PromotionRefused", "Registry"]


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from labvault.services.registry.service import Registry

        return Registry
    if name == "PromotionRefused":
        from labvault.services.registry.aliases import PromotionRefused

        return PromotionRefused
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
