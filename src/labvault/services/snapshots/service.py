"""``vault.data``: immutable, checksummed dataset snapshots ``data:<name>@v<N>``.

Write order for ``add`` (the storage invariants): every file and tree object is put inside one
``objects.batch()`` (durable when the block exits), then one metadata transaction inserts the
snapshot row and its ``object_refs`` row for the root tree, then ``labvault.lock`` is updated. A
process killed at any point leaves either no snapshot or a complete one; orphan objects are
collected by ``gc``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from labvault.entities import DataDiff, DatasetStatus, Manifest, Snapshot, SnapshotFile, SnapshotLink, utcnow
from labvault.errors import NotFound, ValidationError
from labvault.refs import DataRef, Digest, parse_ref, validate_name
from labvault.services.snapshots import checkout as _checkout
from labvault.services.snapshots.build import Built, build_tree
from labvault.services.snapshots.flat import FlatTree, load_flat, save_flat
from labvault.services.snapshots.gitignore import GitIgnored, ignore_in_git
from labvault.services.snapshots.lockfile import LockEntry, read_lock, relative_key, update_lock
from labvault.services.snapshots.scan import scan_path
from labvault.services.snapshots.statcache import StatCache, fs_clock_ns
from labvault.services.snapshots.status import select_entries, working_status
from labvault.services.snapshots.tabular import schema_hash
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.storage.meta.store import MetaStore

__all__ = ["DataService", "Fetching"]

#: ``fetching(refs, action)``: run ``action`` after fetching what ``refs`` need from the default
#: remote, fetching again and rerunning it once when a read misses an object (the vault's own).
Fetching = Callable[[list[str], Callable[[], Any]], Any]

Progress = Callable[[int, int], None]


class DataService:
    def __init__(
        self,
        *,
        objects: ObjectStore,
        meta: Callable[[], MetaStore],
        root: Path,
        vault_dir: Path,
        user: Callable[[], str],
        fetching: Fetching | None = None,
    ) -> None:
        self.objects = objects
        self._fetching = fetching
        self._open_meta = meta
        self.root = root
        self.vault_dir = vault_dir
        self._user = user

    @cached_property
    def meta(self) -> MetaStore:
        """The metadata store, opened on first use."""
        return self._open_meta()

    # -- add ----------------------------------------------------------------------------------
    def add(
        self, name: str, path: str | os.PathLike[str], *, message: str = "", progress: Progress | None = None
    ) -> tuple[Snapshot, bool]:
        """Snapshot a file or folder as the next version of ``name``; ``(snapshot, created)``.

        Identical content to the latest version returns that version with ``created=False``.
        """
        validate_name(name, what="dataset name")
        target = self._local_path(path)
        key = relative_key(self.root, target)
        snapshot, created, kind = self._snapshot_local(name, target, key, message=message, progress=progress)
        update_lock(
            self.root,
            self.vault_dir,
            LockEntry(key, DataRef(name, f"v{snapshot.version}"), snapshot.content_hash, kind),
        )
        return snapshot, created

    def add_objects(
        self,
        name: str,
        files: Mapping[str, Digest],
        *,
        message: str = "",
        kind: str = "dir",
        storage_uri: str | None = None,
        links: Mapping[str, str] | None = None,
        dirs: Sequence[str] = (),
    ) -> tuple[Snapshot, bool]:
        """Snapshot uploaded objects as the next version of ``name`` (``files``: path -> digest;
        ``links``: path -> target; ``dirs``: folders kept even when empty), as ``data add`` of
        ``storage_uri`` (``kind="file"``: one file) would; identical content returns the latest."""
        from labvault.services.snapshots.uploaded import build_from_objects, check_rel_path

        validate_name(name, what="dataset name")
        one_file = len(files) == 1 and "/" not in next(iter(files)) and not links and not dirs
        if kind not in ("file", "dir") or (kind == "file" and not one_file):
            raise ValidationError("a file snapshot holds exactly one file, at its top", hint='send kind "dir"')
        if storage_uri is not None and storage_uri != ".":
            check_rel_path(storage_uri)
        with self.objects.batch():
            built = build_from_objects(self.objects, files, links, dirs)
        uri = storage_uri or f"upload:{name}"
        return self._record(name, built, kind, uri, message, source_url=None, source_version=None)

    def ignore_in_git(self, path: str | os.PathLike[str]) -> GitIgnored:
        """Keep a dataset path out of git: an anchored line in the project root's ``.gitignore``
        (unless git already ignores it), and the files below it that git still tracks, if any."""
        return ignore_in_git(self.root, self.vault_dir, relative_key(self.root, self._local_path(path)))

    def _local_path(self, path: str | os.PathLike[str]) -> Path:
        given = Path(path).expanduser()
        if not os.path.lexists(given):
            raise ValidationError(f"{given}: no such file or folder", hint="check the path")
        try:
            target = given.resolve(strict=True)  # a symlinked PATH argument is resolved
        except (OSError, RuntimeError) as exc:
            raise ValidationError(f"{given}: cannot resolve ({exc})", hint="check the link's target") from exc
        vault_dir = self.vault_dir.resolve()
        if target == vault_dir or vault_dir in target.parents:
            raise ValidationError(f"{given} is inside the vault itself", hint="snapshot your data, not .labvault")
        if not os.access(target, os.R_OK):
            raise ValidationError(f"{given}: permission denied", hint="check the permissions")
        return target

    def _snapshot_local(
        self,
        name: str,
        target: Path,
        storage_uri: str,
        *,
        message: str,
        progress: Progress | None,
        source_url: str | None = None,
        source_version: str | None = None,
        use_cache: bool = True,
    ) -> tuple[Snapshot, bool, str]:
        vst = os.stat(self.vault_dir)
        stamp = fs_clock_ns(self.vault_dir / "cache" / "stat")
        scan = scan_path(target, skip=(vst.st_dev, vst.st_ino))
        cache = StatCache.for_dataset(self.vault_dir, target) if use_cache else StatCache(Path(os.devnull))
        referenced, baseline = self._referenced_digests(name, storage_uri)
        with self.objects.batch():
            built = build_tree(self.objects, scan, cache, referenced=referenced, progress=progress)
        if baseline is not None and not self._referenced(baseline):
            # The files the stat cache vouched for were not re-put on the word of a snapshot that
            # this vault does not hold, so gc could take their objects: store every file again.
            with self.objects.batch():
                built = build_tree(self.objects, scan, cache, referenced=set(), progress=progress)
        if use_cache:
            cache.synced = built.root.hex
            cache.save(stamp)
        save_flat(self.vault_dir, built.root, built.flat)
        kind = "file" if scan.is_file else "dir"
        snapshot, created = self._record(
            name, built, kind, storage_uri, message, source_url=source_url, source_version=source_version
        )
        return snapshot, created, kind

    def _referenced_digests(self, name: str, storage_uri: str) -> tuple[set[bytes], Digest | None]:
        """Digests of the snapshot this path (or dataset) was last at, which gc keeps while a
        snapshot refers to them; and, when that snapshot came from ``labvault.lock`` unchecked,
        its content hash, which the caller checks with :meth:`_referenced` before relying on it.

        The lock file is read without the metadata store: the usual re-snapshot opens the
        metadata store once, at the end, and a snapshot the vault does not hold costs a second pass.
        """
        from labvault.storage.meta.repos import snapshots as repo

        entry = read_lock(self.root).get(storage_uri)
        digest = entry.content_hash if entry is not None else None
        unchecked = digest
        if digest is None:
            with self.meta.read() as conn:
                latest = repo.get_snapshot(conn, name)
            digest = latest.content_hash if latest else None
        if digest is None or not self.objects.has(digest):
            return set(), None
        return load_flat(self.objects, self.vault_dir, digest).shas(), unchecked

    def _referenced(self, digest: Digest) -> bool:
        """Whether a snapshot refers to this tree (so gc keeps every object below it)."""
        from labvault.storage.meta.repos import snapshots as repo

        with self.meta.read() as conn:
            return bool(repo.find_by_content(conn, digest))

    def _record(
        self,
        name: str,
        built: Built,
        kind: str,
        storage_uri: str,
        message: str,
        *,
        source_url: str | None,
        source_version: str | None,
    ) -> tuple[Snapshot, bool]:
        from labvault.storage.meta.repos import snapshots as repo

        tabular = built.tabular
        schemas = [schema for _, _, schema in tabular]
        with self.meta.transaction() as conn:
            latest = repo.get_snapshot(conn, name)
            if latest is not None and latest.content_hash == built.root and latest.kind == kind:
                return latest, False
            snapshot = Snapshot(
                name=name,
                version=repo.next_version(conn, name),
                content_hash=built.root,
                kind=kind,
                storage_uri=storage_uri,
                file_count=built.file_count,
                total_bytes=built.total_bytes,
                tabular=bool(tabular),
                record_count=sum(n for _, n, _ in tabular) if tabular else None,
                schema_hash=schema_hash(schemas) if tabular else None,
                created_at=utcnow(),
                created_by=self._user(),
                message=message,
                source_url=source_url,
                source_version=source_version,
                notes=tuple(built.notes),
            )
            repo.insert_snapshot(conn, snapshot)
            from labvault.storage.meta.repos.object_refs import add_refs

            add_refs(conn, snapshot.ref, [(built.root, "tree")])
        return snapshot, True

    # -- reading ------------------------------------------------------------------------------
    def resolve(self, ref: str | DataRef) -> Snapshot:
        """The snapshot a ``data:<name>[@vN]`` reference names (the latest without a version)."""
        from labvault.storage.meta.repos import snapshots as repo

        parsed = parse_ref(ref, expect=DataRef) if isinstance(ref, str) else ref
        if not isinstance(parsed, DataRef):
            raise ValidationError(f"expected data:<name>@<version>, got {ref!r}")
        with self.meta.read() as conn:
            found = repo.get_snapshot(conn, parsed.name, parsed.number)
            if found is None:
                exists = repo.get_snapshot(conn, parsed.name) is not None
        if found is None:
            if exists:
                raise NotFound(f"{parsed} does not exist", hint=f"list versions with `labvault data log {parsed.name}`")
            raise NotFound(f"no dataset named {parsed.name!r}", hint="list datasets with `labvault data list`")
        return found

    def flat(self, snapshot: Snapshot) -> FlatTree:
        return load_flat(self.objects, self.vault_dir, snapshot.content_hash)

    def get(self, ref: str | DataRef) -> Manifest:
        """The manifest of a snapshot: its summary and every file with its hash, size and schema."""
        return self.manifest(self.resolve(ref))

    def manifest(self, snapshot: Snapshot) -> Manifest:
        """The manifest of a snapshot already resolved (read from the object store only)."""
        flat = self.flat(snapshot)
        files = []
        for path, (sha, size, profile) in sorted(flat.files.items()):
            prof = profile or {}
            schema = prof.get("schema")
            files.append(
                SnapshotFile(
                    path,
                    _digest(sha),
                    size,
                    prof.get("record_count"),
                    tuple((c[0], c[1]) for c in schema) if schema is not None else None,
                    prof.get("note"),
                )
            )
        links = tuple(SnapshotLink(p, t) for p, t in sorted(flat.links.items()))
        return Manifest(snapshot, tuple(files), links)

    def datasets(self) -> list[tuple[Snapshot, int]]:
        """Every dataset's latest snapshot and its number of versions."""
        from labvault.storage.meta.repos import snapshots as repo

        with self.meta.read() as conn:
            return repo.latest_per_dataset(conn)

    def log(self, name: str) -> list[Snapshot]:
        """Every version of a dataset, newest first."""
        from labvault.storage.meta.repos import snapshots as repo

        validate_name(name, what="dataset name")
        with self.meta.read() as conn:
            versions = repo.list_versions(conn, name)
        if not versions:
            raise NotFound(f"no dataset named {name!r}", hint="list datasets with `labvault data list`")
        return versions

    def ls(self, ref: str | DataRef, subpath: str | None = None) -> list[dict[str, object]]:
        """The entries directly inside ``subpath`` of a snapshot (its root by default)."""
        snapshot = self.resolve(ref)
        flat = self.flat(snapshot)
        prefix = _clean_subpath(subpath)
        if prefix and prefix.rstrip("/") in flat.files:
            sha, size, _ = flat.files[prefix.rstrip("/")]
            return [{"path": prefix.rstrip("/"), "type": "file", "size": size, "sha256": f"sha256:{sha}"}]
        if prefix and prefix.rstrip("/") not in flat.dirs:
            raise NotFound(
                f"{snapshot.ref} has no folder {subpath!r}", hint=f"list it with `labvault data ls {snapshot.ref}`"
            )
        out: dict[str, dict[str, object]] = {}
        for path, (sha, size, _) in flat.files.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                out[path] = {"path": path, "type": "file", "size": size, "sha256": f"sha256:{sha}"}
        for path, target in flat.links.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                out[path] = {"path": path, "type": "link", "target": target}
        for d in flat.dirs:
            if d.startswith(prefix) and "/" not in d[len(prefix) :]:
                below = sum(v[1] for p, v in flat.files.items() if p.startswith(d + "/"))
                out[d] = {"path": d, "type": "dir", "size": below}
        return [out[k] for k in sorted(out)]

    def open(self, ref: str | DataRef, path: str) -> BinaryIO:
        """A verified read-only file object for one file of a snapshot (like ``dvc.api.open``).

        Reading it to the end raises :class:`~labvault.errors.IntegrityError` if the bytes are corrupt.
        """
        snapshot = self.resolve(ref)
        flat = self.flat(snapshot)
        rel = _clean_subpath(path).rstrip("/")
        if snapshot.kind == "file" and rel in ("", ".") and len(flat.files) == 1:
            rel = next(iter(flat.files))
        if rel not in flat.files:
            raise NotFound(
                f"{snapshot.ref} has no file {path!r}", hint=f"list its files with `labvault data ls {snapshot.ref}`"
            )
        return self.objects.open(_digest(flat.files[rel][0]), verify=True)

    # -- working copy -------------------------------------------------------------------------
    def status(self, name: str | None = None, path: str | os.PathLike[str] | None = None) -> list[DatasetStatus]:
        """How each pinned dataset's working copy differs from its snapshot in ``labvault.lock``."""
        entries = select_entries(self.root, name, Path(path) if path is not None else None)
        return [working_status(self.objects, self.root, self.vault_dir, e) for e in entries]

    def checkout(
        self,
        ref: str | DataRef | None = None,
        dest: str | os.PathLike[str] | None = None,
        *,
        force: bool = False,
        progress: Progress | None = None,
        cache_stats: bool = True,
        fetch: bool = True,
    ) -> list[_checkout.CheckoutResult]:
        """Restore verified bytes: one snapshot to ``dest`` (default: where it was added from), or,
        without ``ref``, every dataset to the snapshot ``labvault.lock`` names.

        Refuses (exit 4, listing them) to overwrite local modifications unless ``force``.
        ``cache_stats=False``: keep no stat cache for a throwaway ``dest``. With a default remote, what
        this vault lacks (records, trees, then any object a read misses) is fetched from it first,
        unless ``fetch=False``.
        """

        def run() -> list[_checkout.CheckoutResult]:
            return _checkout.checkout(self, ref, dest, force=force, progress=progress, cache_stats=cache_stats)

        if fetch and self._fetching is not None:
            results: list[_checkout.CheckoutResult] = self._fetching([str(ref)] if ref is not None else [], run)
            return results
        return run()

    def diff(self, a: str | DataRef, b: str | DataRef) -> DataDiff:
        """Files added/removed/modified from ``a`` to ``b``, and for tabular files the schema change,
        the record-count change and per-column drift (numeric PSI, categorical frequencies)."""
        from labvault.services.snapshots.diff import diff_snapshots

        return diff_snapshots(self, self.resolve(a), self.resolve(b))

    def import_(
        self, name: str, url: str, *, message: str = "", progress: Progress | None = None
    ) -> tuple[Snapshot, bool]:
        """Snapshot data from outside the project (http(s)://, s3://, gs://, a local path) via fsspec,
        recording the source URL and the version or ETag the source reports."""
        from labvault.services.snapshots.importer import import_url

        validate_name(name, what="dataset name")
        return import_url(self, name, url, message=message, progress=progress)


def _digest(sha: str) -> Digest:
    return Digest(sha)


def _clean_subpath(subpath: str | None) -> str:
    if not subpath or subpath in (".", "/"):
        return ""
    parts = [p for p in subpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValidationError(f"invalid path {subpath!r}", hint="give a path inside the snapshot, without '..'")
    return "/".join(parts) + "/"
