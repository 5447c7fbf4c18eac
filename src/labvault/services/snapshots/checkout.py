"""``data checkout``: restore a snapshot's exact, verified bytes to a folder (or file).

Two phases: first every destination is compared with the snapshot (and with the snapshot the lock
file says it was at), and if any local modification would be lost the whole checkout is refused,
listing them, before anything is written. Then files are written atomically (temp + rename) from
verified object reads; a corrupt object stops the checkout with exit 5 and names it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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

if TYPE_CHECKING:
    from labvault.services.snapshots.service import DataService, Progress

__all__ = ["CheckoutResult", "checkout"]

_SHOWN = 20


@dataclass(slots=True)
class _Plan:
    snapshot: Snapshot
    dest: Path
    key: str | None  # lock key when dest is inside the project
    target: FlatTree
    scan: Scan | None = None
    cache: StatCache | None = None
    delete: tuple[list[str], ...] = ()
    write: list[str] | None = None


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
            snapshot = svc.resolve(entry.ref)
            if snapshot.content_hash != entry.content_hash:
                raise Conflict(
                    f"labvault.lock says {entry.ref} is {entry.content_hash}, but this vault's {entry.ref} is "
                    f"{snapshot.content_hash}",
                    hint="the lock file comes from another vault; pull that vault's snapshots first",
                )
            out.append(_plan(svc, snapshot, svc.root / entry.path))
        return out
    snapshot = svc.resolve(ref)
    if dest is None:
        if snapshot.source_url is not None:
            raise ValidationError(f"{snapshot.ref} was imported from a URL", hint="give a PATH to check it out to")
        return [_plan(svc, snapshot, svc.root / snapshot.storage_uri)]
    return [_plan(svc, snapshot, Path(dest).expanduser())]


def _plan(svc: DataService, snapshot: Snapshot, dest: Path) -> _Plan:
    dest = Path(os.path.abspath(dest))
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
    return _Plan(snapshot, dest, key, target)


def _examine(svc: DataService, plan: _Plan, baselines: dict[str, LockEntry]) -> list[str]:
    """Fill in what to write and delete; return local modifications that would be lost."""
    dest, kind = plan.dest, plan.snapshot.kind
    all_files = list(plan.target.files)
    if not os.path.lexists(dest):
        plan.write, plan.delete = all_files, ([], [])
        return []
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
) -> list[CheckoutResult]:
    plans = _plans(svc, ref, dest)
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


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _apply(svc: DataService, plan: _Plan, advance: Any) -> int:
    dest, target = plan.dest, plan.target
    files_gone, links_gone = plan.delete or ([], [])
    if files_gone == ["."]:
        _remove(dest)
        files_gone = []
    base = dest if plan.snapshot.kind == "dir" else dest.parent
    for rel in [*files_gone, *links_gone]:
        _remove(base / rel)
    base.mkdir(parents=True, exist_ok=True)
    for d in sorted(target.dirs):
        p = base / d
        if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
            os.unlink(p)
        p.mkdir(exist_ok=True)
    written = 0
    for rel in plan.write or []:
        sha = target.files[rel][0]
        out = base / rel
        if os.path.isdir(out) and not os.path.islink(out):
            shutil.rmtree(out)
        try:
            svc.objects.materialize(Digest(sha), out)
        except IntegrityError as exc:
            raise IntegrityError(f"{out}: {exc.message}") from exc
        except NotFound as exc:
            raise IntegrityError(f"{out}: object sha256:{sha} is missing from the vault") from exc
        if plan.cache is not None:
            st = os.stat(out)
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            plan.cache.put(rel, key, bytes.fromhex(sha), target.files[rel][2])
        written += 1
        if written % 256 == 0:
            advance(written)
    for rel, link_target in target.links.items():
        p = base / rel
        if os.path.islink(p) and os.readlink(p) == link_target:
            continue
        _remove(p)
        os.symlink(link_target, p)
    if plan.scan is not None and plan.snapshot.kind == "dir":
        # Folders the snapshot does not have, deepest first, if nothing (ignored) is left inside.
        for d in sorted((d for d in plan.scan.dirs if d not in set(target.dirs)), key=lambda p: -p.count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(base / d)
    advance(written)
    return written
