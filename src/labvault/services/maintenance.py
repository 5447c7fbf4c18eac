"""fsck and gc: prove the vault is consistent, and reclaim what nothing refers to."""

from __future__ import annotations

import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labvault.entities import FsckReport, GcReport, ObjectInfo
from labvault.errors import IntegrityError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.snapshots.flat import check_tree_caches
from labvault.services.snapshots.sizes import manifest_size_problems
from labvault.storage.meta.repos.object_refs import iter_refs
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import iter_reachable

__all__ = ["DEFAULT_GRACE", "Maintenance", "parse_duration"]

#: Objects younger than this are never collected: it covers any command still between writing its
#: objects and committing the metadata that refers to them (as git's gc.pruneExpire does).
DEFAULT_GRACE = "14d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")

Progress = Callable[[int, int], None]  # (done, total)


def parse_duration(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``14d``, ``1w`` or plain seconds."""
    m = _DURATION_RE.match(text.strip().lower())
    if not m:
        raise ValidationError(f"invalid duration {text!r}", hint="write e.g. 0, 90s, 30m, 12h, 14d or 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class _Live:
    digests: set[str]
    owners: dict[str, list[str]]  # digest -> owners, for what references it
    missing: list[Digest]
    # Trees the metadata reaches but that cannot be walked: below them, what is live is unknown.
    missing_trees: list[Digest]
    unreadable_trees: list[Digest]


def _unique(digests: list[Digest]) -> list[Digest]:
    return sorted({d.hex: d for d in digests}.values(), key=lambda d: d.hex)


class Maintenance:
    def __init__(self, *, objects: ObjectStore, meta: MetaStore, vault_dir: Path) -> None:
        self._objects = objects
        self._meta = meta
        self._vault_dir = vault_dir  # its caches (cache/trees) are checked by fsck

    def _live(self) -> _Live:
        with self._meta.read() as conn:
            refs = list(iter_refs(conn))
        digests: set[str] = set()
        owners: dict[str, list[str]] = defaultdict(list)
        missing_trees: list[Digest] = []
        unreadable: list[Digest] = []
        for owner, digest, kind in refs:
            owners[digest.hex].append(owner)
            if kind == "tree":
                walk = iter_reachable(self._objects, digest, missing=missing_trees, unreadable=unreadable)
                digests.update(d.hex for d in walk)
            else:
                digests.add(digest.hex)
        missing = {h: Digest(h) for h in digests if not self._objects.has(Digest(h))}
        return _Live(
            digests,
            dict(owners),
            sorted(missing.values(), key=lambda d: d.hex),
            _unique(missing_trees),
            _unique(unreadable),
        )

    def fsck(self, *, progress: Progress | None = None, workers: int = 2) -> FsckReport:
        """Re-hash every object, quarantine corrupt ones, and check every referenced object is present."""
        infos = list(self._objects.iter_objects())
        total = len(infos)
        corrupt: list[Digest] = []
        done = 0
        nbytes = 0
        # hashlib releases the GIL on large buffers, so two threads use both cores on big objects.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for info, ok in zip(infos, pool.map(self._verify, infos), strict=True):
                done += 1
                nbytes += info.size
                if not ok:
                    corrupt.append(info.digest)
                if progress:
                    progress(done, total)
        pack_problems, pack_corrupt = self._objects.check_packs()
        corrupt += [d for d in map(Digest, pack_corrupt) if d not in corrupt]
        live = self._live()
        problems = [f"tree {d} cannot be read: it is corrupt or not a tree" for d in live.unreadable_trees]
        problems += pack_problems
        problems += [f"pack {name} is missing: the objects it held are lost" for name in self._objects.lost_packs()]
        with self._meta.read() as conn:
            trees = [digest for _, digest, kind in iter_refs(conn) if kind == "tree"]
        problems += manifest_size_problems(self._objects, trees)
        verdict = self._meta.quick_check()
        if verdict != "ok":
            problems.append(f"metadata database: {verdict}")
        stale_files, stale_bytes = self._objects.sweep_dead_temp_files(remove=False)
        problems += check_tree_caches(self._objects, self._vault_dir)
        quarantine_files, quarantine_bytes = self._objects.sweep_quarantine(cutoff=None, remove=False)
        return FsckReport(
            stale_temp_files=stale_files,
            stale_temp_bytes=stale_bytes,
            quarantine_files=quarantine_files,
            quarantine_bytes=quarantine_bytes,
            checked=total,
            bytes_checked=nbytes,
            corrupt=tuple(corrupt),
            missing=tuple(d for d in live.missing if d not in corrupt),
            quarantined=tuple(corrupt),
            problems=tuple(problems),
        )

    def _verify(self, info: ObjectInfo) -> bool:
        try:
            return self._objects.verify(info.digest)
        except NotFound:  # gone since it was listed: a concurrent gc, or an index row found wrong and dropped
            return True

    def owners_of(self, digest: Digest) -> list[str]:
        return self.owners_of_each([digest])[digest.hex]

    def owners_of_each(self, digests: list[Digest]) -> dict[str, list[str]]:
        """Which metadata records point at each digest directly (one pass over the references)."""
        owners = self._live().owners if digests else {}
        return {d.hex: sorted(owners.get(d.hex, [])) for d in digests}

    def gc(
        self, *, grace: float, dry_run: bool = False, quarantine: bool = False, lock_timeout: float = 60.0
    ) -> GcReport:
        """Delete unreferenced objects older than ``grace`` seconds, and stale temp files.

        Temp files no live writer holds go at any age; other entries of ``tmp/`` (an older
        labvault's temp files) once older than ``grace``. With ``quarantine``, files set aside in
        the quarantine more than ``grace`` ago go too.

        Holds the gc lock exclusively: a writer that re-puts (and so refreshes) an object holds it
        shared, so it can never be deleted between the check and the delete.
        """
        with self._objects.gc_lock(timeout=lock_timeout):
            cutoff = time.time() - grace
            live = self._live()
            blind = live.missing_trees + live.unreadable_trees
            if blind:
                raise IntegrityError(
                    f"gc cannot tell what tree {blind[0]} refers to (it is missing or unreadable), so it "
                    f"deleted nothing ({len(blind)} such trees)",
                    hint="run `labvault fsck`, then restore the tree from a backup before collecting garbage",
                )
            deleted: list[Digest] = []
            freed = 0
            young = 0
            referenced = 0
            for info in self._objects.iter_objects():
                if info.digest.hex in live.digests:
                    referenced += 1
                elif info.mtime > cutoff:
                    young += 1
                else:
                    deleted.append(info.digest)
                    freed += info.size
                    if not dry_run:
                        self._objects.delete(info.digest)
            reclaimed = 0 if dry_run else self._objects.compact()
            temps, _ = self._objects.sweep_dead_temp_files(remove=not dry_run)  # dead writers' temp files, at any age
            for path, mtime in self._objects.iter_temp_files():
                if mtime <= cutoff:
                    temps += 1
                    if not dry_run and path.is_dir():  # an import's staging folder
                        shutil.rmtree(path, ignore_errors=True)
                    elif not dry_run:
                        path.unlink(missing_ok=True)
            cleared = (0, 0)
            if quarantine:
                cleared = self._objects.sweep_quarantine(cutoff=cutoff, remove=not dry_run)
        return GcReport(
            dry_run=dry_run,
            deleted=tuple(deleted),
            bytes_freed=freed,
            kept_referenced=referenced,
            kept_young=young,
            temp_files_removed=temps,
            pack_bytes_reclaimed=reclaimed,
            quarantine_removed=cleared[0],
            quarantine_bytes_removed=cleared[1],
        )
