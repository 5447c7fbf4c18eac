"""``Vault.open()``: the composition root. It builds the stores and hands them to the services.

The CLI, the server and users all start here; the parts (``vault.objects``, ``vault.meta``,
``vault.maintenance``, ...) are the API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from labvault.config import Settings, VaultConfig, acting_user, parse_size
from labvault.errors import ValidationError
from labvault.storage.contained import write_text
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.vault.folder import init_vault, open_config, update_config

if TYPE_CHECKING:
    from labvault.services.access import Access
    from labvault.services.lineage import LineageService
    from labvault.services.maintenance import Maintenance
    from labvault.services.pipelines.service import Pipelines
    from labvault.services.registry import Registry
    from labvault.services.remotes import Remotes
    from labvault.services.remotes.server import ServerTransfers
    from labvault.services.remotes.side import Side
    from labvault.services.reproduce import ReproduceReport
    from labvault.services.reproduce.environments import Environments
    from labvault.services.snapshots.service import DataService
    from labvault.services.tracking import Tracking
    from labvault.services.vault_info import VaultInfo
    from labvault.storage.meta.lean import LeanReader as LeanReader  # re-exported for the CLI's types
    from labvault.storage.meta.store import MetaStore
    from labvault.vault.remote_vaults import RemoteVaults

__all__ = ["Vault"]

T = TypeVar("T")


class Vault:
    """An open vault: the project root, its ``.labvault`` folder, the object and metadata stores."""

    def __init__(
        self,
        vault_dir: Path,
        config: VaultConfig,
        settings: Settings,
        *,
        migrate: bool = True,
        objects: ObjectStore | None = None,
    ) -> None:
        self.dir = vault_dir
        self.root = vault_dir.parent
        self.config = config
        self.settings = settings
        self.objects: ObjectStore = objects if objects is not None else self._build_objects()
        self._migrate = migrate
        #: How ``vault.remotes`` reaches a server remote: set by ``labvault.open()``, which can import
        #: the client layer (this vault cannot); None refuses server remotes (exit 2).
        self.server_transfers: ServerTransfers | None = None

    def _build_objects(self) -> ObjectStore:
        """The store config.json names (the vault folder's own by default); with the metadata in
        PostgreSQL, writers and gc on every machine take the database's advisory gc lock."""
        store: ObjectStore
        if self.config.objects_url:
            from labvault.storage.team_store import open_objects

            store = open_objects(
                self.config.objects_url, cache_dir=self.dir / "cache" / "objects", cache_size=self.config.cache_size
            )
        else:
            store = LocalObjectStore(self.dir)
        if self.config.database_url and not self.config.database_url.startswith("sqlite"):
            from labvault.storage.locked_store import LockedObjectStore
            from labvault.storage.meta.repos.gc_lock import AdvisoryGcLock

            store = LockedObjectStore(store, AdvisoryGcLock(lambda: self.meta))
        return store

    @cached_property
    def meta(self) -> MetaStore:
        """The metadata store, opened (and migrated if needed) on first use.

        Opened lazily because SQLAlchemy takes longer to import than most object-store commands
        take to run (``labvault object put``, ``object cat``).
        """
        from labvault.storage.meta.store import MetaStore

        url = self.config.database_url or f"sqlite:///{self.dir / 'meta.db'}"
        meta = MetaStore(url)
        if self._migrate and not meta.schema_is_current():
            meta.migrate(lock_path=self.dir / "locks" / "migrate.lock")
        return meta

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        objects: ObjectStore | None = None,
    ) -> Vault:
        """Open the vault at ``path`` (a project root or a ``.labvault`` folder), else find it by walking up.

        ``objects`` backs the vault with another object store (memory, fsspec) instead of the local
        one in the vault folder.
        """
        settings = settings or Settings.from_env()
        if settings.uri and path is None:
            raise ValidationError(
                f"LABVAULT_URI={settings.uri} names a server, and Vault.open() opens a local vault",
                hint="use labvault.open() to work through the server, or unset LABVAULT_URI",
            )
        vault_dir, config = open_config(path, settings)
        return cls(vault_dir, config, settings, objects=objects)

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        objects_url: str | None = None,
        cache_size: int | None = None,
        settings: Settings | None = None,
    ) -> tuple[Vault, bool]:
        """Create a vault in ``path/.labvault`` (or ``LABVAULT_DIR``); returns ``(vault, created)``.

        ``database_url`` (PostgreSQL) and ``objects_url`` (``s3://bucket/prefix``, ``file://``, a
        folder) make a team vault: the same call on every machine joins it. Credentials never go in
        either URL (ValidationError); the object store is reached before anything is written.

        Safe to run concurrently: the first process creates the vault under a lock, the others
        find it made and return ``created=False``. ``config.json`` is written last, so a vault
        whose init was interrupted is simply initialised again.
        """
        settings = settings or Settings.from_env()
        return init_vault(
            cls, path, settings, database_url=database_url, objects_url=objects_url, cache_size=cache_size
        )

    # -- parts --------------------------------------------------------------------------------
    @cached_property
    def maintenance(self) -> Maintenance:
        from labvault.services.maintenance import Maintenance

        return Maintenance(objects=self.objects, meta=self.meta, vault_dir=self.dir)

    @cached_property
    def registry(self) -> Registry:
        from labvault.services.registry import Registry

        return Registry(
            objects=self.objects,
            meta=self.meta,
            root=self.root,
            vault_dir=self.dir,
            user=lambda: self.user,
            runs=lambda: getattr(self, "runs", None),
            data=lambda: getattr(self, "data", None),
            shared_audit_head=bool(self.config.objects_url) and not self.meta.is_sqlite,
        )

    @cached_property
    def runs(self) -> Tracking:
        """Tracking: create, log to, find, export runs (docs/tracking.md)."""
        from labvault.services.tracking import Tracking

        def resolve_input(ref: str) -> str | None:
            # A data input's manifest hash: the content hash of the snapshot it names.
            if not ref.startswith("data:"):
                return None
            return str(self.data.resolve(ref).content_hash)

        tracking = Tracking(
            objects=self.objects,
            meta=self.meta,
            user=self.user,
            default_project=self.project,
            root=self.root,
            resolve_input=resolve_input,
        )
        tracking.pin_input = lambda ref: self.data.resolve(ref).ref
        return tracking

    @cached_property
    def data(self) -> DataService:
        """Data snapshots: ``vault.data.add/get/checkout/open/diff/...``."""
        from labvault.services.snapshots.service import DataService

        return DataService(
            objects=self.objects,
            meta=lambda: self.meta,
            root=self.root,
            vault_dir=self.dir,
            user=lambda: self.user,
            fetching=self.fetching,
        )

    def fetching(self, refs: Sequence[str], action: Callable[[], T]) -> T:
        """Run ``action`` (a checkout, a get) after fetching from the default remote the records and
        trees it needs that this vault lacks; when a read then misses an object, fetch the objects too
        and rerun ``action`` once. With no remote configured, just run it."""
        from labvault.vault.remote_vaults import fetching

        return fetching(self.remotes, refs, action)

    @cached_property
    def pipelines(self) -> Pipelines:
        """Pipelines: ``vault.pipelines.status/run/checkout/dag/show/tag/log`` (docs/pipelines.md)."""
        from labvault.services.pipelines.service import Pipelines

        return Pipelines(
            objects=self.objects,
            meta=lambda: self.meta,
            root=self.root,
            vault_dir=self.dir,
            user=lambda: self.user,
            runs=lambda: self.runs,
            data=lambda: self.data,
        )

    def lean_reader(self) -> contextlib.AbstractContextManager[LeanReader | None]:
        """A read-only ``sqlite3`` reader for the read commands that must start fast, in one read
        transaction; None when it cannot answer exactly (PostgreSQL, a schema to migrate)."""
        from labvault.storage.meta.lean import open_reader

        return open_reader(self.config.database_url, self.dir)

    @cached_property
    def lineage(self) -> LineageService:
        """Lineage both ways: ``vault.lineage.upstream(ref)``, ``.downstream(ref)`` (docs/lineage.md)."""
        from labvault.services.lineage import DiffSources, LineageService

        return LineageService(
            meta=lambda: self.meta,
            resolve_run=self.runs.resolve,
            resolve_data=self.data.resolve,
            resolve_model=self.registry.resolve,
            diff_sources=lambda: DiffSources(
                objects=self.objects,
                root=self.root,
                get_run=self.runs.get,
                resolve_model=self.registry.resolve,
                version_metrics=self.registry.metrics,
                diff_data=self.data.diff,
            ),
        )

    @cached_property
    def environments(self) -> Environments:
        """Recorded environments: ``show``, ``diff``, ``export`` (docs/reproduce.md)."""
        from labvault.services.reproduce.environments import Environments

        return Environments(runs=self.runs, root=self.root)

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
        """Rerun a run (or a model version's source run) on a clean workspace and judge it (docs/reproduce.md)."""
        from labvault.services.reproduce import reproduce
        from labvault.vault.rerun import rerun_pipeline

        return reproduce(
            runs=self.runs,
            data=self.data,
            registry=self.registry,
            project_root=self.root,
            envs_dir=self.dir / "envs",
            vault_env={"LABVAULT_DIR": str(self.dir.resolve())},
            ref=ref,
            env=env,
            rtol=rtol,
            atol=atol,
            ignore_metrics=ignore_metrics,
            ignore_artifacts=ignore_artifacts,
            twice=twice,
            workdir=workdir,
            keep=keep,
            pipeline_rerun=partial(rerun_pipeline, self),
        )

    def describe(self) -> VaultInfo:
        """Where the metadata and objects are (no credentials), the format, the object count and bytes, the cache."""
        from labvault.services.vault_info import describe_vault

        return describe_vault(vault_dir=self.dir, config=self.config, objects=self.objects)

    def set_config(self, key: str, value: str) -> VaultConfig:
        """Change one setting of ``config.json``; only ``objects.cache_size`` can be set."""
        if key != "objects.cache_size":
            raise ValidationError(
                f"{key!r} cannot be set",
                hint="settable: objects.cache_size (the store's location and database are fixed at init)",
            )
        size = parse_size(value)
        config = update_config(self.dir, lambda now: dataclasses.replace(now, cache_size=size))
        self.config = config
        return config

    @cached_property
    def access(self) -> Access:
        """The team server's API tokens and idempotent requests (docs/server.md)."""
        from labvault.services.access import Access

        return Access(meta=lambda: self.meta, user=lambda: self.user)

    def as_user(self, user: str) -> Vault:
        """This vault acting as ``user`` (the server's authenticated identity): the same stores, its own
        services, so the audit chain and the runs name ``user``. Close the vault it came from, not this."""
        view = Vault(self.dir, self.config, self.settings, migrate=False, objects=self.objects)
        view.__dict__["meta"] = self.meta
        view.__dict__["user"] = user
        return view

    @cached_property
    def user(self) -> str:
        return acting_user(self.settings)

    @property
    def project(self) -> str:
        """The default project name: the project root's folder name."""
        return self.root.name

    def write_output(self, path: str | os.PathLike[str], text: str) -> None:
        """Write a file the user asked for (``--output``): atomically, through the contained writer
        (links in the typed path are followed; a link at the file itself is replaced, not written through)."""
        write_text(Path(path), text)

    @cached_property
    def remotes(self) -> Remotes:
        """Remotes and the transfers to them: ``vault.remotes.push(...)``, ``.pull(...)`` (docs/remotes.md)."""
        from labvault.services.remotes import Remotes

        return Remotes(
            here=lambda: self._side("this vault"),
            vault_dir=self.dir,
            root=self.root,
            config=lambda: VaultConfig.load(self.dir),
            open_remote=self._remote_vaults.open,
            server=lambda: self.server_transfers,
        )

    def _side(self, where: str) -> Side:
        """This vault as one end of a transfer (server remotes and the server's transfer routes too)."""
        from labvault.vault.remote_vaults import side_of

        return side_of(self, where)

    @cached_property
    def _remote_vaults(self) -> RemoteVaults:
        from labvault.vault.remote_vaults import RemoteVaults

        return RemoteVaults(self)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        if "_remote_vaults" in self.__dict__:
            self._remote_vaults.close()
        closer = getattr(self.objects, "close", None)  # a held pack is skipped by gc and recovery
        if callable(closer):
            closer()
        if "runs" in self.__dict__:  # its metric connection is checked out: dispose() would leave it open
            self.runs.close()
        if "meta" in self.__dict__:
            self.meta.dispose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vault({str(self.dir)!r})"
