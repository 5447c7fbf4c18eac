"""The model registry (``vault.registry``): immutable versions, aliases under policies, the audit log.

>>> vault.registry.register("fraud/detector", Path("model/"))           # -> (ModelVersion, created)
>>> vault.registry.promote("fraud/detector@0.1.0", "staging")            # -> Decision, or PromotionRefused
>>> vault.registry.get("fraud/detector@staging")                         # -> Path of a verified copy
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from labvault.entities import AliasMove, AuditReport, Decision, ModelVersion, RegisteredModel
from labvault.services.audit import AuditLog
from labvault.services.registry import aliases as _aliases
from labvault.services.registry import moves as _moves
from labvault.services.registry import read as _read
from labvault.services.registry.aliases import PromotionRefused
from labvault.services.registry.context import DataSource, RegistryContext, RunSource
from labvault.services.registry.layout import FileEntry
from labvault.services.registry.policy import PolicyFile
from labvault.services.registry.register import register_version
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["PromotionRefused", "Registry"]


class Registry:
    def __init__(
        self,
        *,
        objects: ObjectStore,
        meta: MetaStore,
        root: Path,
        vault_dir: Path,
        user: Callable[[], str],
        runs: Callable[[], RunSource | None] = lambda: None,
        data: Callable[[], DataSource | None] = lambda: None,
    ) -> None:
        self.audit = AuditLog(meta=meta, vault_dir=vault_dir)
        self._ctx = RegistryContext(
            objects=objects,
            meta=meta,
            audit=self.audit,
            root=root,
            vault_dir=vault_dir,
            user=user,
            runs=runs,
            data=data,
        )

    # -- versions -----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        path: Path | str | None = None,
        *,
        run: str | None = None,
        artifact: str | None = None,
        version: str | None = None,
        bump: str | None = None,
        message: str | None = None,
        allow_modified: bool = False,
        follow_links: bool = False,
    ) -> tuple[ModelVersion, bool]:
        """Register ``path`` (or a run's artifact) as ``name@version``; returns ``(version, created)``.

        Links in the folder stay links; one pointing outside is refused unless ``follow_links``."""
        return register_version(
            self._ctx,
            name,
            Path(path) if path is not None else None,
            run=run,
            artifact=artifact,
            version=version,
            bump=bump,
            message=message,
            allow_modified=allow_modified,
            follow_links=follow_links,
        )

    def resolve(self, ref: str) -> ModelVersion:
        """``project/model@version|alias`` -> the version it names."""
        return _read.resolve(self._ctx, ref)

    def models(self) -> list[RegisteredModel]:
        return _read.list_models(self._ctx)

    def versions(self, name: str, *, include_archived: bool = False) -> list[ModelVersion]:
        return _read.list_versions(self._ctx, name, include_archived=include_archived)

    def aliases(self, name: str) -> dict[str, str]:
        return _read.aliases(self._ctx, name)

    def files(self, ref: str | ModelVersion) -> list[FileEntry]:
        version = ref if isinstance(ref, ModelVersion) else self.resolve(ref)
        return _read.files_of(self._ctx, version)

    def metrics(self, ref: str | ModelVersion) -> dict[str, object] | None:
        version = ref if isinstance(ref, ModelVersion) else self.resolve(ref)
        return _read.read_metrics(self._ctx, version)[0]

    def materialize(self, ref: str, dest: Path | str, *, flat: bool = False) -> tuple[ModelVersion, Path]:
        """Write a verified copy at ``dest/PROJECT/MODEL/VERSION`` (or into ``dest`` with ``flat``)."""
        version = self.resolve(ref)
        return version, _read.materialize(self._ctx, version, Path(dest), flat=flat)

    def get(self, ref: str) -> Path:
        """The local path of a verified, cached copy of the version ``ref`` names."""
        return _read.cached_copy(self._ctx, self.resolve(ref))

    def archive(self, ref: str, *, reason: str | None = None) -> tuple[ModelVersion, bool]:
        return _aliases.archive(self._ctx, ref, reason=reason)

    # -- aliases ------------------------------------------------------------------------------
    def promote(
        self,
        ref: str,
        alias: str,
        *,
        reason: str | None = None,
        waive_rollback_plan: str | None = None,
        raise_on_refusal: bool = True,
    ) -> Decision:
        """Move ``alias`` to the version if its policy's gates pass; else refuse (audited)."""
        return _aliases.promote(
            self._ctx,
            ref,
            alias,
            reason=reason,
            waive_rollback_plan=waive_rollback_plan,
            raise_on_refusal=raise_on_refusal,
        )

    def check(self, ref: str, alias: str, *, waive_rollback_plan: str | None = None) -> Decision:
        """Evaluate ``alias``'s gates for the version without moving anything."""
        return _aliases.check(self._ctx, ref, alias, waive_rollback_plan=waive_rollback_plan)

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> Decision:
        return _moves.rollback(self._ctx, name, alias, reason=reason)

    def unset_alias(self, name: str, alias: str, *, reason: str | None = None) -> Decision:
        return _moves.unset(self._ctx, name, alias, reason=reason)

    def approve(self, ref: str, alias: str, *, message: str | None = None) -> bool:
        return _aliases.approve(self._ctx, ref, alias, message=message)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        return _aliases.history(self._ctx, name, alias)

    def policy(self) -> PolicyFile:
        """The parsed ``labvault.yaml`` (raises a line-numbered ValidationError if it is invalid)."""
        return self._ctx.policy()

    # -- audit --------------------------------------------------------------------------------
    def verify_audit(self) -> AuditReport:
        return self.audit.verify()
