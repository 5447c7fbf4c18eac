"""A registered version's tree: ``PROJECT/MODEL/VERSION/`` holding the model files and the files
labvault generates (``metrics.json``, ``run.json``, ``data_manifest.json``, ``checksum.txt``).

``checksum.txt`` lists the sha256 of every other file in ``sha256sum -c`` format, sorted by path,
so ``cd PROJECT/MODEL/VERSION && sha256sum -c checksum.txt`` checks a copy with standard tools.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.errors import Conflict, IntegrityError, NotFound, ValidationError
from labvault.refs import Digest, check_utf8
from labvault.storage.contained import Dest
from labvault.storage.folding import fold_collisions
from labvault.storage.objects.materialize import materialize_into
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import TreeEntry, decode_tree, put_tree

__all__ = [
    "CHECKSUM",
    "GENERATED",
    "FileEntry",
    "build_version_tree",
    "checksum_text",
    "collect_path",
    "dump_json",
    "parse_checksums",
    "version_files",
    "wrap_version",
    "write_version",
]

CHECKSUM = "checksum.txt"
GENERATED = ("metrics.json", "run.json", "data_manifest.json")
_MAX_FILES = 1_000_000


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative, '/'-separated
    digest: Digest
    size: int


def dump_json(doc: Any) -> bytes:
    """Stable, sorted, indented JSON: generated files diff well."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _check_rel(rel: str) -> str:
    check_utf8(rel, what="file name")
    if "\n" in rel or "\\" in rel or "\r" in rel:
        raise ValidationError(
            f"cannot register a file named {rel!r}", hint="rename files whose names hold newlines or backslashes"
        )
    return rel


def collect_path(path: Path, *, follow_links: bool = False) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """The regular files under ``path`` (or ``path`` itself) as (relative path, absolute path), and
    the links as {relative path: target}.

    A link is recorded as a link, as ``data add`` does, when it stays inside the folder; one that
    points outside is refused (exit 2, naming it) unless ``follow_links`` says to copy its target.
    """
    if not path.exists():
        raise NotFound(f"{path} does not exist", hint="give the folder (or file) that holds the model")
    if path.is_file():
        return [(_check_rel(path.name), path)], {}
    if not path.is_dir():
        raise ValidationError(f"{path} is neither a file nor a folder", hint="give the model's folder or file")
    out: list[tuple[str, Path]] = []
    links: dict[str, str] = {}
    for folder, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
            full = base / name
            rel = _check_rel(full.relative_to(path).as_posix())
            if full.is_symlink():
                target = os.readlink(full)
                if _stays_inside(rel, target):
                    links[rel] = target
                    continue
                if not follow_links:
                    raise ValidationError(
                        f"{full} is a link to {target}, outside {path}",
                        hint="copy the file in, or pass --follow-links to store what the link points at",
                    )
                if full.is_dir():
                    raise ValidationError(f"{full} is a link to a folder", hint="copy the folder in instead")
            if not full.is_file():  # a dangling link, a socket, a fifo...
                raise ValidationError(f"{full} is not a regular file", hint="remove it or replace the link by the file")
            out.append((rel, full))
        if len(out) > _MAX_FILES:
            raise ValidationError(f"{path} holds more than {_MAX_FILES} files", hint="register a smaller folder")
    if not out:
        raise ValidationError(f"{path} holds no files: there is no model to register", hint="check the path")
    return out, links


def _stays_inside(rel: str, target: str) -> bool:
    """Whether a link at ``rel`` pointing at ``target`` resolves inside the folder, by its text alone
    (every link on the way is itself checked, so a chain cannot leave either)."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../")


def parse_checksums(text: str, *, where: str) -> dict[str, str]:
    """``<hex>  <path>`` lines (``*`` binary marker accepted) -> {path: hex}."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        hexd, sep, rel = line.partition(" ")
        rel = rel[1:] if rel[:1] in (" ", "*") else rel
        if not sep or len(hexd) != 64 or not rel:
            raise ValidationError(f"{where}:{n}: not a sha256sum line", hint="lines are '<sha256>  <path>'")
        out[rel.removeprefix("./")] = hexd.lower()
    return out


def checksum_text(files: list[FileEntry]) -> bytes:
    return "".join(f"{f.digest.hex}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)).encode()


def _put_nested(store: ObjectStore, files: list[FileEntry], links: dict[str, str]) -> tuple[Digest, int]:
    """Put the folder trees for a flat list of files and links; return the top tree and total size."""
    children: dict[str, tuple[list[FileEntry], dict[str, str]]] = {}
    entries: list[TreeEntry] = []
    for f in files:
        head, sep, rest = f.path.partition("/")
        if sep:
            children.setdefault(head, ([], {}))[0].append(FileEntry(rest, f.digest, f.size))
        else:
            entries.append(TreeEntry(head, "file", f.digest, f.size))
    for rel, target in links.items():
        head, sep, rest = rel.partition("/")
        if sep:
            children.setdefault(head, ([], {}))[1][rest] = target
        else:
            entries.append(TreeEntry(head, "link", target=target))
    total = sum(e.size for e in entries)
    for name, (sub, sub_links) in children.items():
        digest, size = _put_nested(store, sub, sub_links)
        entries.append(TreeEntry(name, "dir", digest, size))
        total += size
    return put_tree(store, entries), total


def build_version_tree(
    store: ObjectStore, files: list[FileEntry], links: dict[str, str] | None = None
) -> tuple[Digest, int]:
    """The VERSION folder's tree (the content identity) and its total size."""
    return _put_nested(store, files, links or {})


def wrap_version(store: ObjectStore, content: Digest, size: int, *, project: str, model: str, version: str) -> Digest:
    """Root tree ``PROJECT/MODEL/VERSION/`` around a version folder's tree."""
    inner = put_tree(store, [TreeEntry(version, "dir", content, size)])
    middle = put_tree(store, [TreeEntry(model, "dir", inner, size)])
    return put_tree(store, [TreeEntry(project, "dir", middle, size)])


def version_folder(store: ObjectStore, root: Digest, *, project: str, model: str, version: str) -> Digest:
    digest = root
    for name in (project, model, version):
        entry = next((e for e in decode_tree(store.get_bytes(digest), digest=digest) if e.name == name), None)
        if entry is None or entry.type != "dir" or entry.digest is None:
            raise IntegrityError(f"tree {root} does not hold {project}/{model}/{version}/")
        digest = entry.digest
    return digest


def iter_tree_files(store: ObjectStore, tree: Digest, prefix: str = "") -> Iterator[FileEntry]:
    for entry in decode_tree(store.get_bytes(tree), digest=tree):
        rel = f"{prefix}{entry.name}"
        if entry.type == "dir" and entry.digest is not None:
            yield from iter_tree_files(store, entry.digest, rel + "/")
        elif entry.type == "file" and entry.digest is not None:
            yield FileEntry(rel, entry.digest, entry.size)


def version_files(store: ObjectStore, content: Digest) -> list[FileEntry]:
    return sorted(iter_tree_files(store, content), key=lambda f: f.path)


def iter_tree_links(store: ObjectStore, tree: Digest, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(relative path, target)`` of every link below a tree (a registered link is kept a link)."""
    for entry in decode_tree(store.get_bytes(tree), digest=tree):
        rel = f"{prefix}{entry.name}"
        if entry.type == "dir" and entry.digest is not None:
            yield from iter_tree_links(store, entry.digest, rel + "/")
        elif entry.type == "link" and entry.target is not None:
            yield rel, entry.target


def write_version(
    store: ObjectStore,
    content: Digest,
    dest: Path,
    rel: str,
    *,
    fold: Callable[[str], str] | None = None,
    prefetch: Callable[[list[Digest]], object] | None = None,
) -> Path:
    """Write a version folder's verified files (and links) to ``rel`` below ``dest``; return the folder.

    ``dest`` was typed by the user (links in it are followed); ``rel`` (``PROJECT/MODEL/VERSION``
    or ``.``) and the file names come from stored data and are resolved without following links.
    Files already there with the right content are kept; a different file, a folder or a link in
    the way is a conflict (exit 4), found before anything is written, and so are two names that
    ``dest``'s filesystem (or ``fold``) would store as one file. ``prefetch`` is handed the digests
    of the files to write before the first is written (a server's client fetches them in batches).
    """
    files = version_files(store, content)
    links = dict(iter_tree_links(store, content))
    clashes = fold_collisions([*(f.path for f in files), *links], dest, fold)
    if clashes:
        raise Conflict(
            f"the version holds names that {dest}'s filesystem stores as one file: {'; '.join(clashes[:10])}",
            hint="get it onto a case-sensitive filesystem (ext4, xfs)",
        )
    todo, link_todo = list(files), dict(links)
    if os.path.isdir(dest):
        with Dest.open(dest, create=False) as top:
            top.check_dirs(rel)
            todo = [f for f in files if not _already_there(top, _under(rel, f.path), f)]
            link_todo = {p: t for p, t in links.items() if not _link_there(top, _under(rel, p), t)}
    if prefetch is not None:
        prefetch([f.digest for f in todo])
    with Dest.open(dest) as top, top.sub(rel) as into:
        for f in todo:
            materialize_into(store, f.digest, into, f.path)
        for path, target in link_todo.items():
            into.symlink(path, target)
    return dest / rel if rel != "." else dest


def _under(rel: str, path: str) -> str:
    return path if rel == "." else f"{rel}/{path}"


def _already_there(top: Dest, rel: str, f: FileEntry) -> bool:
    st = top.lstat(rel)
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "a link" if stat.S_ISLNK(st.st_mode) else "not a file"
        raise Conflict(f"{top.path / rel} is {what}, where the version has a file", hint="choose another -o folder")
    if st.st_size == f.size:
        with open(top.read_fd(rel), "rb") as existing:
            if hashlib.file_digest(existing, "sha256").hexdigest() == f.digest.hex:
                return True
    raise Conflict(f"{top.path / rel} exists with other content", hint="remove it, or choose another -o folder")


def _link_there(top: Dest, rel: str, target: str) -> bool:
    if top.lstat(rel) is None:
        return False
    if top.readlink(rel) == target:
        return True
    raise Conflict(f"{top.path / rel} is in the way of a link the version holds", hint="choose another -o folder")


def sha256_bytes(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())
