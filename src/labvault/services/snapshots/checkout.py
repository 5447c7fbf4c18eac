"""``data checkout``: restore a snapshot's exact, verified bytes to a folder (or file).

Two phases: first every destination is compared with the snapshot (and with the snapshot the lock
file says it was at), and if any local modification would be lost the whole checkout is refused,
listing them, before anything is written. Then files are written atomically (temp + rename) from
verified object reads; a corrupt object stops the checkout with exit 5 and names it.

Every write goes through :class:`~labvault.storage.contained.Dest`: paths from the snapshot and from
``labvault.lock`` are resolved below the destination without following links (a link where a folder
must be is a file in the way, exit 4); only links in a PATH the user typed are followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.entities import CheckoutResult, Snapshot
from labvault.errors import Conflict, IntegrityError, NotFound, ValidationError
from labvault.refs import DataRef, Digest
from labvault.services.snapshots.flat import FlatTree, load_flat
from labvault.services.snapshots.lockfile import LockEntry, read_lock, relative_key, update_lock
from labvault.services.snapshots.scan import Scan, scan_path
from labvault.services.snapshots.statcache import StatCache, fs_clock_ns
from labvault.services.snapshots.status import compare
from labvault.storage.contained import Dest
from labvault.storage.contained_paths import split_rel
from labvault.storage.folding import fold_collisions
from labvault.storage.objects.fileio import SMALL
from labvault.storage.objects.materialize import materialize_into, read_verified

if TYPE_CHECKING:
    from labvault.services.snapshots.service import DataService, Progress

__all__ = ["CheckoutResult", "checkout"]

_SHOWN = 20
_READ_BATCH = 2048  # files of a new folder whose bytes are read at once


@dataclass(slots=True)
class _Plan:
    snapshot: Snapshot
    anchor: Path  # the folder the user named (links in it followed), or the project root
    rel: str  # dest below ``anchor``: a stored path (lock key, storage_uri) or the typed last part
    key: str | None  # lock key when dest is inside the project
    target: FlatTree
    scan: Scan | None = None
    cache: StatCache | None = None
    delete: tuple[list[str], ...] = ()
    write: list[str] | None = None

    @property
    def dest(self) -> Path:
        return self.anchor / self.rel


def _as_file_flat(flat: FlatTree, name: str) -> FlatTree:
    """A single-file snapshot, renamed to the destination file's name."""
    (only,) = flat.files.values()
    return FlatTree.from_files({name: only})


def _plans(svc: DataService, ref: str | DataRef | None, dest: str | os.PathLike[str] | None) -> list[_Plan]:
    if ref is None:
        if dest is not None:
            raise ValidationError("a PATH needs a REF", hint="labvault data checkout data:NAME@vN PATH")
        entries = read_lock(svc.root)
        if not entries:
            raise NotFound("labvault.lock names no datasets", hint="snapshot one with `labvault data add NAME PATH`")
        out = []
        for entry in sorted(entries.values(), key=lambda e: e.path):
            snapshot = _locked_snapshot(svc, entry)
            if snapshot.content_hash != entry.content_hash:
                raise Conflict(
                    f"labvault.lock says {entry.ref} is {entry.content_hash}, but this vault's {entry.ref} is "
                    f"{snapshot.content_hash}",
                    hint="the lock file comes from another vault; pull that vault's snapshots first",
                )
            out.append(_plan(svc, snapshot, svc.root, entry.path))
        return out
    snapshot = svc.resolve(ref)
    if dest is None:
        if snapshot.source_url is not None:
            raise ValidationError(f"{snapshot.ref} was imported from a URL", hint="give a PATH to check it out to")
        return [_plan(svc, snapshot, svc.root, snapshot.storage_uri)]
    typed = Path(os.path.abspath(Path(dest).expanduser()))
    return [_plan(svc, snapshot, typed.parent, typed.name)]


def _locked_snapshot(svc: DataService, entry: LockEntry) -> Snapshot:
    """The snapshot a lock entry pins, found by content: a pulled snapshot may have another number here."""
    from labvault.storage.meta.repos.snapshots import find_by_content

    with svc.meta.read() as conn:
        same = [s for s in find_by_content(conn, entry.content_hash) if s.name == entry.ref.name]
    if same:
        return next((s for s in same if s.version == entry.ref.number), same[-1])
    return svc.resolve(entry.ref)


def _plan(svc: DataService, snapshot: Snapshot, anchor: Path, rel: str) -> _Plan:
    """``rel`` is stored (a lock key, a storage_uri) or the last part of a typed path: it is resolved
    below ``anchor`` without following links, and a link where one of its folders must be is a
    file in the way (exit 4)."""
    if rel in ("", "."):  # the dataset is the anchor folder itself
        anchor, rel = anchor.parent, anchor.name
    split_rel(rel)
    if os.path.isdir(anchor):
        with Dest.open(anchor, create=False) as top:
            top.check_dirs(rel.rpartition("/")[0] or ".")
    dest = anchor / rel
    vault_dir = svc.vault_dir.resolve()
    real = dest.resolve()
    if real == vault_dir or vault_dir in real.parents:
        raise ValidationError(f"{dest} is inside the vault itself", hint="check out to a folder of your project")
    try:
        key: str | None = relative_key(svc.root, dest)
    except ValidationError:
        key = None
    target = svc.flat(snapshot)
    if snapshot.kind == "file":
        target = _as_file_flat(target, dest.name)
    return _Plan(snapshot, anchor, rel, key, target)


def _refuse_collisions(plan: _Plan, fold: Callable[[str], str] | None) -> None:
    """Two entries that this filesystem would store as one file (``a`` and ``A`` where case folds)."""
    t = plan.target
    clashes = fold_collisions([*t.files, *t.links, *t.dirs], plan.anchor, fold)
    if clashes:
        shown = "; ".join(clashes[:_SHOWN]) + (f" and {len(clashes) - _SHOWN} more" if len(clashes) > _SHOWN else "")
        raise Conflict(
            f"{plan.snapshot.ref} holds names that {plan.dest}'s filesystem stores as one file: {shown}",
            hint="check it out to a case-sensitive filesystem (ext4, xfs), or rename the files and add them again",
        )


def _examine(svc: DataService, plan: _Plan, baselines: dict[str, LockEntry]) -> list[str]:
    """Fill in what to write and delete; return local modifications that would be lost."""
    dest, kind = plan.dest, plan.snapshot.kind
    all_files = list(plan.target.files)
    if not os.path.lexists(dest):
        plan.write, plan.delete = all_files, ([], [])
        return []
    if os.path.islink(dest):  # a link where the dataset goes is in the way, never followed
        plan.write, plan.delete = all_files, (["."], [])
        return [f"{dest} (a link)"]
    is_dir = os.path.isdir(dest) and not os.path.islink(dest)
    if (kind == "dir") != is_dir:
        plan.write, plan.delete = all_files, (["."], [])
        return [str(dest)]
    vst = os.stat(svc.vault_dir)
    plan.scan = scan_path(dest, skip=(vst.st_dev, vst.st_ino))
    plan.cache = StatCache.for_dataset(svc.vault_dir, dest)
    added, removed, modified, changing = compare(plan.scan, plan.target, plan.cache)
    plan.write = sorted(p for p in {*removed, *modified, *changing} if p in plan.target.files)
    links_gone = [p for p in plan.scan.links if p not in plan.target.links or p in modified]
    plan.delete = (sorted(a for a in added if a in plan.scan.files), links_gone)
    at_risk = {*added, *modified, *changing}
    base = baselines.get(plan.key) if plan.key else None
    synced = Digest(plan.cache.synced) if plan.cache.synced else (base.content_hash if base else None)
    if synced is not None and svc.objects.has(synced):
        flat = load_flat(svc.objects, svc.vault_dir, synced)
        if kind == "file":
            flat = _as_file_flat(flat, dest.name)
        b_added, _, b_modified, b_changing = compare(plan.scan, flat, plan.cache)
        at_risk &= {*b_added, *b_modified, *b_changing}
    shown = plan.key if plan.key is not None else str(dest)
    return sorted(f"{shown}/{p}" if kind == "dir" else shown for p in at_risk)


def checkout(
    svc: DataService,
    ref: str | DataRef | None,
    dest: str | os.PathLike[str] | None,
    *,
    force: bool,
    progress: Progress | None = None,
    fold: Callable[[str], str] | None = None,
    cache_stats: bool = True,
) -> list[CheckoutResult]:
    """``fold`` says how the destination's filesystem compares names (default: probed when needed).

    ``cache_stats=False`` records no stat cache for the destination (a throwaway folder, as
    reproduce's workspace: its cache file would only pile up in ``cache/stat``)."""
    plans = _plans(svc, ref, dest)
    for plan in plans:
        _refuse_collisions(plan, fold)
    baselines = read_lock(svc.root)
    at_risk: list[str] = []
    for plan in plans:
        at_risk += _examine(svc, plan, baselines)
    if at_risk and not force:
        shown = ", ".join(at_risk[:_SHOWN]) + (f" and {len(at_risk) - _SHOWN} more" if len(at_risk) > _SHOWN else "")
        raise Conflict(
            f"checkout would overwrite {len(at_risk)} local modification(s): {shown}",
            hint="snapshot them first with `labvault data add`, or pass --force to discard them",
        )
    total = sum(len(p.write or []) for p in plans)
    done = 0
    results = []
    for plan in plans:
        stamp = fs_clock_ns(svc.vault_dir / "cache" / "stat")
        offset = done

        def advance(n: int, offset: int = offset) -> None:
            if progress:
                progress(offset + n, total)

        written = _apply(svc, plan, advance)
        done += written
        removed = sum(len(d) for d in plan.delete if d != ["."])
        unchanged = len(plan.target.files) - written
        if cache_stats:
            if plan.cache is None:
                plan.cache = StatCache.for_dataset(svc.vault_dir, plan.dest)
            plan.cache.synced = plan.snapshot.content_hash.hex
            plan.cache.save(stamp)
        if plan.key is not None and ref is not None:
            snap = plan.snapshot
            entry = LockEntry(plan.key, DataRef(snap.name, f"v{snap.version}"), snap.content_hash, snap.kind)
            update_lock(svc.root, svc.vault_dir, entry)
        results.append(CheckoutResult(plan.snapshot.ref, plan.key or str(plan.dest), written, removed, unchanged))
    return results


def _apply(svc: DataService, plan: _Plan, advance: Any) -> int:
    files_gone, links_gone = plan.delete or ([], [])
    with Dest.open(plan.anchor) as top:
        if files_gone == ["."]:
            top.remove(plan.rel)
            files_gone = []
        if plan.scan is None and plan.snapshot.kind == "dir" and top.lstat(plan.rel) is None:
            # A new folder: built under a temp name, its files written straight (no temp file and
            # rename each), then renamed into place, so it is seen whole or not at all.
            with top.built_dir(plan.rel) as base:
                return _apply_below(svc, plan, base, [], [], advance, fresh=True)
        parent = plan.rel.rpartition("/")[0]
        with top.sub(plan.rel if plan.snapshot.kind == "dir" else parent or ".") as base:
            return _apply_below(svc, plan, base, files_gone, links_gone, advance)


def _shown(plan: _Plan, rel: str) -> Path:
    """Where a file goes, as the user knows it (not the temp name of a folder being built)."""
    return plan.dest / rel if plan.snapshot.kind == "dir" else plan.dest


def _read_small(svc: DataService, target: FlatTree, rels: list[str]) -> dict[str, bytes]:
    """The verified bytes of the small files among ``rels``, read in one pass; on a corrupt or
    missing object none, so that the file-by-file path names the file."""
    small = [Digest(target.files[r][0]) for r in rels if target.files[r][1] <= SMALL]
    try:
        return read_verified(svc.objects, small)
    except (IntegrityError, NotFound):
        return {}


def _apply_below(
    svc: DataService,
    plan: _Plan,
    base: Dest,
    files_gone: list[str],
    links_gone: list[str],
    advance: Any,
    *,
    fresh: bool = False,
) -> int:
    """Write the plan below ``base`` (the dataset folder, or a single file's folder); ``fresh``: a
    folder this checkout has just made, where files are created in place."""
    target = plan.target
    for rel in [*files_gone, *links_gone]:
        base.remove(rel)
    for d in sorted(target.dirs):
        base.mkdir(d)
    written = 0
    blobs: dict[str, bytes] = {}
    order = plan.write or []
    for i, rel in enumerate(order):
        sha = target.files[rel][0]
        if fresh and i % _READ_BATCH == 0:
            blobs = _read_small(svc, target, order[i : i + _READ_BATCH])
        if sha in blobs:
            base.create_file(rel, blobs[sha])
            written += 1
            if written % 256 == 0:
                advance(written)
            continue
        st = base.lstat(rel) if plan.scan is not None else None  # a fresh destination has nothing in the way
        if st is not None and stat.S_ISDIR(st.st_mode):
            base.remove(rel)
        try:
            materialize_into(svc.objects, Digest(sha), base, rel)
        except IntegrityError as exc:
            raise IntegrityError(f"{_shown(plan, rel)}: {exc.message}") from exc
        except NotFound as exc:
            raise IntegrityError(f"{_shown(plan, rel)}: object sha256:{sha} is missing from the vault") from exc
        st = base.lstat(rel) if plan.cache is not None else None
        if plan.cache is not None and st is not None:
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            plan.cache.put(rel, key, bytes.fromhex(sha), target.files[rel][2])
        written += 1
        if written % 256 == 0:
            advance(written)
    for rel, link_target in target.links.items():
        if base.readlink(rel) == link_target:
            continue
        base.remove(rel)
        base.symlink(rel, link_target)
    if plan.scan is not None and plan.snapshot.kind == "dir":
        # Folders the snapshot does not have, deepest first, if nothing (ignored) is left inside.
        for d in sorted((d for d in plan.scan.dirs if d not in set(target.dirs)), key=lambda p: -p.count("/")):
            base.rmdir(d)
    advance(written)
    return written
