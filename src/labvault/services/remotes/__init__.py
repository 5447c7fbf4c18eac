"""Push and pull between vaults: ``vault.remotes.push(...)``, ``.pull(...)`` (docs/remotes.md).

The order is the storage rule: objects first (in parallel, only those the other side lacks, each
verified on arrival), records last in one transaction on the receiving side. A push killed at any
point leaves the other side consistent (at worst orphan objects, which gc collects), and a rerun
sends only what is still missing. Aliases, approvals and the audit chain never travel; a received
model version appends a ``register`` event to the receiving vault's own chain.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.config import CONFIG_NAME, VAULT_DIRNAME, VaultConfig
from labvault.errors import NotFound, ValidationError
from labvault.services.remotes import settings
from labvault.services.remotes.settings import RemoteSpec
from labvault.services.remotes.side import Side
from labvault.services.snapshots.lockfile import read_lock
from labvault.storage.meta.lean import open_reader

if TYPE_CHECKING:
    from labvault.services.remotes.fetch import Status
    from labvault.services.remotes.server import ServerTransfers

__all__ = ["Moved", "RemoteSpec", "Remotes", "Side", "TransferResult"]

Progress = Callable[[int, int, int], None]  # (objects done, objects in all, bytes sent)
MAX_JOBS = 64


@dataclass(frozen=True, slots=True)
class Moved:
    """One record of a transfer: ``action`` is new | renamed | present."""

    ref: str
    kind: str
    action: str
    target: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "kind": self.kind, "action": self.action, "as": self.target}


@dataclass(frozen=True, slots=True)
class TransferResult:
    direction: str  # push | pull
    remote: str
    url: str
    records: tuple[Moved, ...]
    objects_sent: int
    bytes_sent: int
    objects_present: int
    dry_run: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.objects_sent > 0 or any(m.action != "present" for m in self.records)

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "remote": self.remote,
            "url": self.url,
            "dry_run": self.dry_run,
            "records": [m.to_json() for m in self.records],
            "objects": {"sent": self.objects_sent, "bytes": self.bytes_sent, "present": self.objects_present},
            "warnings": list(self.warnings),
        }


class Remotes:
    """The vault's remotes and the transfers to and from them."""

    def __init__(
        self,
        *,
        here: Callable[[], Side],
        vault_dir: Path,
        root: Path,
        config: Callable[[], VaultConfig],
        open_remote: Callable[[RemoteSpec, bool], Side | None],
        server: Callable[[], ServerTransfers | None] = lambda: None,
    ) -> None:
        self._here = here
        self._server = server
        self._vault_dir = vault_dir
        self._root = root
        self._config = config
        self._open_remote = open_remote

    # -- configuration --------------------------------------------------------------------------
    def add(
        self,
        name: str,
        location: str | None = None,
        *,
        database_url: str | None = None,
        objects_url: str | None = None,
        default: bool = False,
    ) -> RemoteSpec:
        """Add a folder remote (another vault's folder; made on the first push if absent), or a
        team-vault remote by its ``database_url`` (PostgreSQL) and ``objects_url`` (``s3://...``)."""
        return settings.add_remote(
            self._vault_dir,
            name=name,
            location=location,
            database_url=database_url,
            objects_url=objects_url,
            default=default,
        )

    def list(self) -> builtins.list[RemoteSpec]:
        return settings.list_remotes(self._config(), self._vault_dir)

    def remove(self, name: str) -> None:
        settings.remove_remote(self._vault_dir, name)

    def get(self, name: str | None = None) -> RemoteSpec:
        """The remote named ``name``, else the default one (or the only one)."""
        return settings.default_remote(self._config(), name, self._vault_dir)

    # -- transfers ------------------------------------------------------------------------------
    def push(
        self,
        refs: Sequence[str] = (),
        *,
        remote: str | None = None,
        everything: bool = False,
        jobs: int = 4,
        no_data: bool = False,
        rename: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Send records (the lock's snapshots when ``refs`` is empty) and their objects to a remote.

        Different content under a number the remote already has is a Conflict (exit 4) unless
        ``rename`` gives it the remote's next free number.
        """
        from labvault.services.remotes.plan import gather

        spec = self.get(remote)
        if server := self._server_for(spec):
            return server.push(
                spec,
                refs,
                everything=everything,
                jobs=jobs,
                no_data=no_data,
                rename=rename,
                dry_run=dry_run,
                progress=progress,
            )
        src = self._here()
        lock = [] if refs or everything else self._lock_entries()
        plan = gather(src, refs, lock=lock, everything=everything, no_data=no_data)
        there = spec.path if spec.path.name == VAULT_DIRNAME else spec.path / VAULT_DIRNAME
        fresh = spec.kind == "folder" and not (there / CONFIG_NAME).is_file()  # made by this push
        dst = self._open_remote(spec, not dry_run)
        return self._transfer(
            "push",
            spec,
            src,
            dst,
            plan.ordered(),
            plan.warnings,
            jobs=jobs,
            rename=rename,
            by_content=False,
            dry_run=dry_run,
            progress=progress,
            fresh=fresh,
        )

    def pull(
        self,
        refs: Sequence[str] = (),
        *,
        remote: str | None = None,
        jobs: int = 4,
        no_data: bool = False,
        rename: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Fetch records (the lock's snapshots, found by content hash, when ``refs`` is empty) and their objects.

        Everything read from the remote is validated before anything is written here.
        """
        from labvault.services.remotes.plan import gather

        spec = self.get(remote)
        if server := self._server_for(spec):
            return server.pull(
                spec, refs, jobs=jobs, no_data=no_data, rename=rename, dry_run=dry_run, progress=progress
            )
        src = self._open_remote(spec, False)
        if src is None:
            raise settings.unreachable(spec)
        lock = [] if refs else self._lock_entries()
        plan = gather(src, refs, lock=lock, no_data=no_data)
        dst = self._here()
        return self._transfer(
            "pull",
            spec,
            src,
            dst,
            plan.ordered(),
            plan.warnings,
            jobs=jobs,
            rename=rename,
            by_content=True,
            dry_run=dry_run,
            progress=progress,
        )

    def fetch(
        self, refs: Sequence[str] = (), *, blobs: bool = True, jobs: int = 4, progress: Progress | None = None
    ) -> int:
        """Pull from the default remote whatever ``refs`` (the lock's snapshots when empty) need and this
        vault lacks: records and objects, verified on arrival. Returns the objects fetched (0, with no
        remote asked, when everything is here). ``data checkout`` and ``get`` call it first with
        ``blobs=False`` (records and trees looked for, files' objects only when a read misses one)."""
        from labvault.services.remotes.copy import copy_objects, reachable
        from labvault.services.remotes.fetch import ADD_DEFAULT_HINT, missing

        here = self._here()
        lock = [] if refs else list(read_lock(self._root).values())
        lacking = missing(here, refs, lock, blobs=blobs)
        if not lacking:
            return 0
        try:
            spec = self.get(None)
        except NotFound:
            if lacking.looked_up and not lacking.lock:
                # The look-up's own words ("no alias 'prod'"), and where the ref could come from.
                first = lacking.looked_up[0]
                hint = f"{first.hint}; or {ADD_DEFAULT_HINT}" if first.hint else ADD_DEFAULT_HINT
                raise NotFound(first.message, hint=hint) from None
            if not lacking.records():
                # Objects missing under records that are here: the read reports them as an integrity
                # error (exit 5), as in a vault that has never had a remote.
                return 0
            raise NotFound(
                f"this vault lacks {lacking.describe()}, and has no remote to fetch them from", hint=ADD_DEFAULT_HINT
            ) from None
        if server := self._server_for(spec):
            return server.fetch(spec, refs, blobs=blobs, jobs=jobs, progress=progress)
        fetched = 0
        if lacking.refs or lacking.lock:
            pulled = self.pull(lacking.refs, remote=spec.name, jobs=jobs, no_data=True, progress=progress)
            fetched += pulled.objects_sent
            lacking = missing(here, refs, lock, blobs=blobs)
        if lacking.objects:
            src = self._open_remote(spec, False)
            if src is None:
                raise settings.unreachable(spec)
            wanted = reachable(src.objects, lacking.roots, src.where)
            stats = copy_objects(src.objects, here.objects, wanted, where=src.where, jobs=jobs, progress=progress)
            fetched += stats.objects
        return fetched

    def status(self, refs: Sequence[str] = (), *, remote: str | None = None) -> Status:
        """What the remote lacks and what this vault lacks of ``refs`` (the lock's snapshots when empty):
        records, and the objects they reach. Lock entries are found by content on both sides."""
        from labvault.services.remotes.fetch import Missing, Status, missing, status_of

        spec = self.get(remote)
        if server := self._server_for(spec):
            return server.status(spec, refs)
        lock = [] if refs else self._lock_entries()
        here = self._here()
        here_lacks = missing(here, refs, lock)
        there = self._open_remote(spec, False)
        if there is None:
            if spec.kind == "folder" and not spec.path.parent.is_dir():  # an unmounted disk, a wrong path
                raise settings.unreachable(spec)
            everything = Missing(refs=[r for r in refs if r not in here_lacks.refs])
            everything.lock = [str(e.ref) for e in lock if str(e.ref) not in here_lacks.lock]
            return Status(spec.name, spec.url, everything, here_lacks, reachable=False)
        return status_of(spec.name, spec.url, missing(there, refs, lock), here_lacks)

    def is_pushed(self, remote: str | None = None) -> TransferResult | None:
        """The no-op result when the remote already holds, under the same numbers, every snapshot labvault.lock
        names, as this vault does: a push with no REF would send nothing. Read with sqlite3 alone
        (no SQLAlchemy), so that the no-op push stays fast; None whenever it cannot tell."""
        spec = self.get(remote)
        if spec.kind != "folder":
            return None
        entries = read_lock(self._root)
        folder = spec.path
        there = folder if folder.name == VAULT_DIRNAME else folder / VAULT_DIRNAME
        if not entries or not (there / CONFIG_NAME).is_file():
            return None
        for vault_dir, config in ((self._vault_dir, self._config()), (there, VaultConfig.load(there))):
            with open_reader(config.database_url, vault_dir) as reader:
                if reader is None:
                    return None
                for entry in entries.values():
                    found = reader.snapshot(entry.ref.name, entry.ref.number)
                    if found is None or found.content_hash != entry.content_hash:
                        return None
        refs = sorted({str(entry.ref) for entry in entries.values()})
        return TransferResult(
            direction="push",
            remote=spec.name,
            url=spec.url,
            records=tuple(Moved(ref, "snapshot", "present", ref) for ref in refs),
            objects_sent=0,
            bytes_sent=0,
            objects_present=0,
        )

    def _server_for(self, spec: RemoteSpec) -> ServerTransfers | None:
        """What moves records with ``spec`` when it is a server remote; None for a vault remote. A
        server remote with nothing to reach it (``Vault.open()``, not ``labvault.open()``) is refused."""
        if spec.kind != "server":
            return None
        server = self._server()
        if server is None:
            settings.require_vault(spec)  # refuses it, with the hint
        return server

    def _lock_entries(self) -> builtins.list[Any]:
        entries = list(read_lock(self._root).values())
        if not entries:
            raise ValidationError(
                "labvault.lock names no datasets, and no REF was given",
                hint="give what to move: data:NAME@vN, run:ID, PROJECT/MODEL@VERSION, or --all",
            )
        return entries

    def _transfer(
        self,
        direction: str,
        spec: RemoteSpec,
        src: Side,
        dst: Side | None,
        records: builtins.list[Any],
        warnings: Iterable[str],
        *,
        jobs: int,
        rename: bool,
        by_content: bool,
        dry_run: bool,
        progress: Progress | None,
        fresh: bool = False,
    ) -> TransferResult:
        # Imported here, not at the top: SQLAlchemy comes with them, and `push` with nothing to send
        # (is_pushed) must answer without it.
        from labvault.services.remotes.apply import Landing, decide, merge_landings, renamed_inputs, write_records
        from labvault.services.remotes.copy import copy_objects, reachable

        if not 1 <= jobs <= MAX_JOBS:
            raise ValidationError(f"--jobs {jobs} is out of range", hint=f"give 1 to {MAX_JOBS}")
        if dst is None:  # a dry run towards a remote not made yet: everything would be sent
            landings = [Landing(record, "new", record.ref) for record in records]
        else:
            with dst.meta.read() as conn:
                landings = decide(conn, records, dst=dst, rename=rename, by_content=by_content)
        to_write = [landing.record for landing in landings if landing.writes]
        roots = [ref for record in to_write for ref in record.refs]
        wanted = reachable(src.objects, roots, src.where) if roots else []
        sent = size = present = 0
        if dst is None or dry_run:
            missing = [d for d in wanted if dst is None or not dst.objects.has(d)]
            sent, present = len(missing), len(wanted) - len(missing)
        else:
            stats = copy_objects(
                src.objects, dst.objects, wanted, where=src.where, jobs=jobs, progress=progress, fresh=fresh
            )
            sent, size, present = stats.objects, stats.bytes, stats.present
            if to_write:
                origin = f"{spec.name}:{spec.url}" if direction == "pull" else str(src.dir.parent)
                written = write_records(dst, to_write, rename=rename, by_content=by_content, origin=origin)
                landings = merge_landings(landings, written)
        notes = list(warnings) + renamed_inputs(landings)
        return TransferResult(
            direction=direction,
            remote=spec.name,
            url=spec.url,
            records=tuple(Moved(lg.record.ref, lg.record.kind, lg.action, lg.target) for lg in landings),
            objects_sent=sent,
            bytes_sent=size,
            objects_present=present,
            dry_run=dry_run,
            warnings=tuple(notes),
        )
