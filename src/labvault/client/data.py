"""``ServerData``: ``vault.data`` through a server, file work on this machine.

It is the local :class:`~labvault.services.snapshots.service.DataService` with its metadata calls
answered by the server: ``add`` scans and hashes the files here, sends only the objects the server
lacks (``HttpObjectStore.batch``), then asks the server to record the snapshot
(``POST /api/v1/data/{name}``), which checks every object and builds the same tree; checkout,
status, show, ls, diff and open read trees and files through the verified object cache. The stat
cache, tree cache and lock-file locks that live in ``.labvault/`` locally live in a per-project
folder under the user's cache folder here; ``labvault.lock`` stays at the project root.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from labvault.client.fetch import write_tree
from labvault.client.objects import HttpObjectStore
from labvault.client.settings import spool_dir
from labvault.entities import Snapshot
from labvault.errors import Conflict, ExternalError, LabvaultError, NotFound, ValidationError
from labvault.refs import DataRef, Digest, parse_digest, parse_ref, validate_name
from labvault.services.snapshots import checkout as _checkout
from labvault.services.snapshots.build import Built
from labvault.services.snapshots.flat import FlatTree, load_flat
from labvault.services.snapshots.lockfile import LOCK_NAME, read_lock
from labvault.services.snapshots.service import DataService, Progress
from labvault.storage.contained import write_text

if TYPE_CHECKING:
    from labvault.client.vault import ServerVault
    from labvault.storage.meta.store import MetaStore

__all__ = ["ServerData", "decode_snapshot", "project_root", "work_dir"]

_PROJECT_MARKERS = (LOCK_NAME, "labvault.yaml")


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding ``labvault.lock`` or ``labvault.yaml``, else ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any(os.path.isfile(folder / marker) for marker in _PROJECT_MARKERS):
            return folder
    return start


def work_dir(root: Path) -> Path:
    """The per-project folder (under the user's cache folder) for the stat and tree caches."""
    key = hashlib.sha256(os.fsencode(root)).hexdigest()[:20]
    path = spool_dir().parent / "work" / key
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class ServerData(DataService):
    """``vault.data`` of a :class:`~labvault.client.vault.ServerVault`."""

    def __init__(self, owner: ServerVault) -> None:
        root = project_root(owner.root)
        super().__init__(
            objects=owner.objects, meta=self._no_meta, root=root, vault_dir=work_dir(root), user=lambda: ""
        )
        self.owner = owner
        self.transport = owner.transport
        self.http = owner.objects

    def _no_meta(self) -> MetaStore:
        raise ValidationError(
            "this data operation needs the vault's database, which is on the server's machine",
            hint="run it there (unset LABVAULT_URI)",
        )

    # -- writes ---------------------------------------------------------------------------------
    def add_objects(
        self,
        name: str,
        files: Mapping[str, Digest],
        *,
        message: str = "",
        kind: str = "dir",
        storage_uri: str | None = None,
        links: Mapping[str, str] | None = None,
        dirs: Iterable[str] = (),
    ) -> tuple[Snapshot, bool]:
        """Snapshot objects already uploaded (``files``: relative path -> digest), with ``links``
        (relative path -> target) and ``dirs`` (folders kept even when empty)."""
        validate_name(name, what="dataset name")
        body = _snapshot_body({p: str(d) for p, d in files.items()}, dict(links or {}), list(dirs))
        body.update(message=message, kind=kind, path=storage_uri)
        return _created(self.transport.request("POST", f"/data/{name}", json=body))

    def _referenced_digests(self, name: str, storage_uri: str) -> tuple[set[bytes], Digest | None]:
        # The stat cache may vouch for files of the tree labvault.lock pins when the server has
        # that tree: the server's snapshot of it holds every file, and it checks each one again.
        entry = read_lock(self.root).get(storage_uri)
        if entry is None or not self.objects.has(entry.content_hash):
            return set(), None
        return load_flat(self.objects, self.vault_dir, entry.content_hash, prefetch=self.http.prefetch).shas(), None

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
        files = {rel: f"sha256:{sha}" for rel, (sha, _, _) in built.flat.files.items()}
        body = _snapshot_body(files, built.flat.links, built.flat.dirs)
        body.update(message=message, kind=kind, path=storage_uri)
        return _created(self.transport.request("POST", f"/data/{name}", json=body))

    def import_(
        self, name: str, url: str, *, message: str = "", progress: Progress | None = None
    ) -> tuple[Snapshot, bool]:
        _server_side("data import")

    def write_output(self, path: str | os.PathLike[str], text: str) -> None:
        """Write a file the user asked for (``--output``), as a local vault does."""
        write_text(Path(path), text)

    # -- reads ----------------------------------------------------------------------------------
    def resolve(self, ref: str | DataRef) -> Snapshot:
        parsed = parse_ref(ref, expect=DataRef) if isinstance(ref, str) else ref
        if not isinstance(parsed, DataRef):
            raise ValidationError(f"expected data:<name>@<version>, got {ref!r}")
        validate_name(parsed.name, what="dataset name")
        if parsed.version is None:
            return self.log(parsed.name)[0]
        try:
            return decode_snapshot(self.transport.request("GET", f"/data/{parsed.name}/{parsed.version}"))
        except NotFound:
            self.log(parsed.name)  # "no dataset named ..." when the dataset itself is unknown
            raise NotFound(
                f"{parsed} does not exist", hint=f"list versions with `labvault data log {parsed.name}`"
            ) from None

    def flat(self, snapshot: Snapshot) -> FlatTree:
        """The snapshot's file list: from the tree cache, else its folders fetched a level per request."""
        return load_flat(self.objects, self.vault_dir, snapshot.content_hash, prefetch=self.http.prefetch)

    def write_tree(self, snapshot: Snapshot, dest: Path, rel: str) -> Path:
        """``get data:``: the snapshot's tree written at ``rel`` below ``dest``, fetched in batches."""
        return write_tree(self.http, snapshot.content_hash, dest, rel)

    def datasets(self) -> list[tuple[Snapshot, int]]:
        answer = self.transport.request("GET", "/data")
        return [(decode_snapshot(doc), _int(doc, "versions")) for doc in _docs(answer)]

    def log(self, name: str) -> list[Snapshot]:
        validate_name(name, what="dataset name")
        try:
            answer = self.transport.request("GET", f"/data/{name}")
        except NotFound:
            raise NotFound(f"no dataset named {name!r}", hint="list datasets with `labvault data list`") from None
        versions = [decode_snapshot(doc) for doc in _docs(answer)]
        if not versions:
            raise NotFound(f"no dataset named {name!r}", hint="list datasets with `labvault data list`")
        return versions

    # -- working copy ---------------------------------------------------------------------------
    def checkout(
        self,
        ref: str | DataRef | None = None,
        dest: str | os.PathLike[str] | None = None,
        *,
        force: bool = False,
        progress: Progress | None = None,
        cache_stats: bool = True,
        fetch: bool = True,  # through a server, objects always come from it: nothing else to fetch from
    ) -> list[_checkout.CheckoutResult]:
        if ref is not None:
            self._prefetch(self.resolve(ref), dest)
            return _checkout.checkout(self, ref, dest, force=force, progress=progress, cache_stats=cache_stats)
        if dest is not None:
            raise ValidationError("a PATH needs a REF", hint="labvault data checkout data:NAME@vN PATH")
        entries = sorted(read_lock(self.root).values(), key=lambda e: e.path)
        if not entries:
            raise NotFound("labvault.lock names no datasets", hint="snapshot one with `labvault data add NAME PATH`")
        pinned = []
        for entry in entries:  # every entry checked before anything is written
            snapshot = self.resolve(entry.ref)
            if snapshot.content_hash != entry.content_hash:
                raise Conflict(
                    f"labvault.lock says {entry.ref} is {entry.content_hash}, but the server's {entry.ref} is "
                    f"{snapshot.content_hash}",
                    hint="the lock file comes from another vault; push that vault's snapshots to the server first",
                )
            pinned.append((entry, snapshot))
        for entry, snapshot in pinned:
            self._prefetch(snapshot, self.root / entry.path)
        results: list[_checkout.CheckoutResult] = []
        for entry, snapshot in pinned:
            results += _checkout.checkout(
                self, snapshot.ref, self.root / entry.path, force=force, progress=progress, cache_stats=cache_stats
            )
        return results

    def _prefetch(self, snapshot: Snapshot, dest: str | os.PathLike[str] | None) -> None:
        """Download, several at a time, the objects of files that are missing or of another size at
        the destination (checkout itself writes one file after the other, and then finds them cached)."""
        if not isinstance(self.objects, HttpObjectStore):
            return
        if dest is None:
            if snapshot.source_url is not None:
                return  # checkout refuses it
            target = self.root / snapshot.storage_uri
        else:
            target = Path(os.path.abspath(Path(dest).expanduser()))
        flat = self.flat(snapshot)
        wanted = []
        for rel, (sha, size, _) in flat.files.items():
            local = target if snapshot.kind == "file" else target / rel
            try:
                same = os.lstat(local).st_size == size
            except (OSError, ValueError):
                same = False
            if not same:
                wanted.append(Digest(sha))
        self.objects.prefetch(wanted)


def _snapshot_body(files: dict[str, str], links: dict[str, str], dirs: list[str]) -> dict[str, Any]:
    """The files, links and folders of a snapshot as ``POST /data/{name}`` takes them: a folder only
    when nothing below it names it (an empty one), and the keys only when they hold something, so
    that a snapshot of files alone is the body an older server knows."""
    implied = {rel.rsplit("/", 1)[0] for rel in (*files, *links) if "/" in rel}
    implied |= {d.rsplit("/", 1)[0] for d in dirs if "/" in d}
    body: dict[str, Any] = {"files": files}
    if links:
        body["links"] = dict(links)
    empty = sorted(d for d in dirs if d not in implied)
    if empty:
        body["dirs"] = empty
    return body


def _created(answer: object) -> tuple[Snapshot, bool]:
    if not isinstance(answer, dict) or not isinstance(answer.get("created"), bool):
        raise _malformed("a snapshot")
    return decode_snapshot(answer), bool(answer["created"])


def decode_snapshot(doc: object) -> Snapshot:
    """A :class:`Snapshot` from the server's JSON (untrusted: every field checked)."""
    if not isinstance(doc, dict):
        raise _malformed("a snapshot")
    try:
        version = _str(doc, "version")
        if not version.startswith("v") or not version[1:].isdigit():
            raise ValueError(version)
        name = _str(doc, "dataset_name")
        validate_name(name, what="dataset name")
        schema = doc.get("schema_hash")
        record_count = doc.get("record_count")
        notes = doc.get("notes", [])
        kind = doc.get("kind", "dir")
        if kind not in ("file", "dir") or not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("kind or notes")
        if record_count is not None and (not isinstance(record_count, int) or isinstance(record_count, bool)):
            raise ValueError("record_count")
        if not isinstance(doc.get("tabular"), bool):
            raise ValueError("tabular")
        return Snapshot(
            name=name,
            version=int(version[1:]),
            content_hash=Digest(parse_digest(_str(doc, "content_hash"), allow_prefix=False).prefix),
            kind=kind,
            storage_uri=_str(doc, "storage_uri"),
            file_count=_int(doc, "file_count"),
            total_bytes=_int(doc, "total_bytes"),
            tabular=bool(doc["tabular"]),
            record_count=record_count,
            schema_hash=parse_digest(schema, allow_prefix=False).prefix if isinstance(schema, str) else None,
            created_at=datetime.fromisoformat(_str(doc, "created_at").replace("Z", "+00:00")),
            created_by=_str(doc, "created_by"),
            message=_str(doc, "message"),
            source_url=_opt_str(doc, "source_url"),
            source_version=_opt_str(doc, "source_version"),
            notes=tuple(notes),
        )
    except (ValueError, KeyError, TypeError, LabvaultError):
        raise _malformed("a snapshot") from None


def _docs(answer: object) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(d, dict) for d in answer):
        raise _malformed("a list of snapshots")
    return answer


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(key)
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _malformed(f"{key!r}")
    return value


def _malformed(what: str) -> ExternalError:
    return ExternalError(
        f"the server sent a malformed {what}", hint="is LABVAULT_URI a labvault server of this labvault's version?"
    )


def _server_side(what: str) -> NoReturn:
    raise ValidationError(
        f"`{what}` runs on the server's machine, not through a server",
        hint=f"run `labvault {what}` where the server's vault is (unset LABVAULT_URI)",
    )
