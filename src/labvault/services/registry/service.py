"""The :class:`Registry` (``vault.registry``): the registry's use cases bound as methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from labvault.entities import AuditReport, ModelVersion
from labvault.services.audit import AuditLog
from labvault.services.registry import aliases as _aliases
from labvault.services.registry import moves as _moves
from labvault.services.registry import read as _read
from labvault.services.registry.context import DataSource, RegistryContext, RunSource
from labvault.services.registry.layout import FileEntry
from labvault.services.registry.register import register_version
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["Registry"]


class Registry(RegistryContext):
    """The registry's use cases, each a function of ``services/registry/`` taking the context first.

    Bound here as methods, so that each signature and docstring lives in one place.
    """

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
        shared_audit_head: bool = False,
    ) -> None:
        super().__init__(
            objects=objects,
            meta=meta,
            audit=AuditLog(meta=meta, vault_dir=vault_dir, shared_head=shared_audit_head),
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
        source_path: str | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Register ``path`` (or a run's artifact) as ``name@version``; returns ``(version, created)``.

        Links in the folder stay links; one pointing outside is refused unless ``follow_links``."""
        return register_version(
            self,
            name,
            Path(path) if path is not None else None,
            run=run,
            artifact=artifact,
            version=version,
            bump=bump,
            message=message,
            allow_modified=allow_modified,
            follow_links=follow_links,
            source_path=source_path,
        )

    resolve = _read.resolve
    models = _read.list_models
    versions = _read.list_versions
    aliases = _read.aliases
    archive = _aliases.archive

    def files(self, ref: str | ModelVersion) -> list[FileEntry]:
        version = ref if isinstance(ref, ModelVersion) else self.resolve(ref)
        return _read.files_of(self, version)

    def metrics(self, ref: str | ModelVersion) -> dict[str, object] | None:
        version = ref if isinstance(ref, ModelVersion) else self.resolve(ref)
        return _read.read_metrics(self, version)[0]

    def materialize(self, ref: str, dest: Path | str, *, flat: bool = False) -> tuple[ModelVersion, Path]:
        """Write a verified copy at ``dest/PROJECT/MODEL/VERSION`` (or into ``dest`` with ``flat``)."""
        version = self.resolve(ref)
        return version, _read.materialize(self, version, Path(dest), flat=flat)

    def get(self, ref: str) -> Path:
        """The local path of a verified, cached copy of the version ``ref`` names."""
        return _read.cached_copy(self, self.resolve(ref))

    # -- aliases (``policy()``, the parsed ``labvault.yaml``, comes with the context) ---------------
    promote = _aliases.promote
    check = _aliases.check
    rollback = _moves.rollback
    unset_alias = _moves.unset
    approve = _aliases.approve
    history = _aliases.history

    # -- audit --------------------------------------------------------------------------------
    def verify_audit(self, *, against: str | None = None) -> AuditReport:
        """Re-hash the audit chain; ``against`` is a head kept elsewhere that must be an event of it."""
        return self.audit.verify(against=against)
