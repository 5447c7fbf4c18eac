"""``runs artifacts``: write a run's artifacts (files and folders) to a folder, verified.

Every file is checked against its sha256 as it is written. Everything is planned before anything is
written: a file already there with the same content is kept, and any other file, folder or link in
the way is a conflict (exit 4) that leaves the destination untouched. Names read back from the vault
are validated again (no ``..``, no absolute paths), and nothing is written through a symbolic link.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from labvault.errors import Conflict, IntegrityError, NotFound, StorageError
from labvault.refs import Digest
from labvault.services.tracking.artifacts import artifact_name
from labvault.storage.contained import Dest
from labvault.storage.objects.fileio import sha256_file
from labvault.storage.objects.materialize import materialize_into
from labvault.storage.objects.tree import decode_tree

if TYPE_CHECKING:
    from labvault.entities import Artifact, Run
    from labvault.storage.objects.protocol import ObjectStore

__all__ = ["DownloadedFile", "download_artifacts"]


@dataclass(frozen=True, slots=True)
class DownloadedFile:
    path: str  # relative to the destination folder
    kind: Literal["file", "link"]
    sha256: Digest | None  # None for a link
    size: int
    target: str | None = None  # a link's target, as recorded
    written: bool = True  # False: already there with this content

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.path, "type": self.kind, "written": self.written}
        if self.kind == "file":
            doc.update(sha256=str(self.sha256), size=self.size)
        else:
            doc["target"] = self.target
        return doc


def _entries(store: ObjectStore, artifact: Artifact) -> list[DownloadedFile]:
    base = artifact_name(artifact.name)  # names read back are untrusted
    if artifact.kind == "file":
        return [DownloadedFile(base, "file", artifact.digest, artifact.size)]
    out: list[DownloadedFile] = []
    stack = [(base, artifact.digest)]
    while stack:
        prefix, tree = stack.pop()
        try:  # read, not asked about first: through a server that is one request, not two
            data = store.get_bytes(tree, verify=True)
        except NotFound as exc:
            raise IntegrityError(f"artifact {artifact.name}: tree {tree} is missing from the vault") from exc
        for entry in decode_tree(data, digest=tree):
            if not entry.name or "/" in entry.name or "\\" in entry.name or entry.name in (".", ".."):
                raise IntegrityError(f"artifact {artifact.name}: tree {tree} holds an invalid name {entry.name!r}")
            rel = f"{prefix}/{entry.name}"
            if entry.type == "dir" and entry.digest is not None:
                stack.append((rel, entry.digest))
            elif entry.type == "file" and entry.digest is not None:
                out.append(DownloadedFile(rel, "file", entry.digest, entry.size))
            elif entry.type == "link" and entry.target is not None:
                out.append(DownloadedFile(rel, "link", None, 0, target=entry.target))
    return sorted(out, key=lambda f: f.path)


def _check_parents(dest: Path, rel: str) -> None:
    """Every folder between ``dest`` and ``rel`` is a real folder or absent: never a link or a file."""
    here = dest
    for part in rel.split("/")[:-1]:
        here = here / part
        if here.is_symlink() or (os.path.lexists(here) and not here.is_dir()):
            raise Conflict(f"{here} is in the way of {dest / rel}", hint="remove it, or choose another -o folder")


def _already_there(dest: Path, item: DownloadedFile) -> bool:
    """True if ``item`` is in place; False if the path is free; Conflict if something else is there."""
    out = dest / item.path
    _check_parents(dest, item.path)
    if not os.path.lexists(out):
        return False
    if item.kind == "link":
        same = out.is_symlink() and os.readlink(out) == item.target
    else:
        same = (
            out.is_file()
            and not out.is_symlink()
            and item.sha256 is not None
            and out.stat().st_size == item.size
            and sha256_file(out) == item.sha256.hex
        )
    if same:
        return True
    raise Conflict(f"{out} exists with other content", hint="remove it, or choose another -o folder")


def download_artifacts(
    store: ObjectStore,
    run: Run,
    dest: Path,
    *,
    name: str | None = None,
    prefetch: Callable[[list[Digest]], object] | None = None,
) -> list[DownloadedFile]:
    """Write the run's artifacts (or the one called ``name``) under ``dest``, each at its name;
    ``prefetch`` is handed the digests of the files to write before the first is written."""
    artifacts = list(run.artifacts)
    if name is not None:
        wanted = artifact_name(name)
        artifacts = [a for a in artifacts if a.name == wanted]
        if not artifacts:
            have = ", ".join(sorted(a.name for a in run.artifacts)) or "none"
            raise NotFound(f"{run.ref} has no artifact {name!r} (it has: {have})", hint=f"labvault runs show {run.id}")
    planned = [item for a in artifacts for item in _entries(store, a)]
    done = [item if not _already_there(dest, item) else _kept(item) for item in planned]
    if prefetch is not None:
        prefetch([item.sha256 for item in done if item.written and item.sha256 is not None])
    try:
        with Dest.open(dest) as into:
            for item in done:
                if not item.written:
                    continue
                if item.kind == "link":
                    into.symlink(item.path, cast(str, item.target))  # a link entry always has its target
                    continue
                digest = cast(Digest, item.sha256)  # a file entry always has its digest
                try:
                    materialize_into(store, digest, into, item.path)
                except NotFound as exc:
                    raise IntegrityError(f"{dest / item.path}: object {digest} is missing from the vault") from exc
    except (FileExistsError, NotADirectoryError) as exc:
        raise Conflict(f"{exc.filename} is in the way", hint="remove it, or choose another -o folder") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc
    return done


def _kept(item: DownloadedFile) -> DownloadedFile:
    return DownloadedFile(item.path, item.kind, item.sha256, item.size, item.target, written=False)
