"""Model files on this machine, for a vault reached through a server.

:func:`cached_copy` keeps a verified copy of each version fetched with ``lv.models.get`` in the
user's cache folder (``$XDG_CACHE_HOME/labvault/models/<server>/PROJECT/MODEL/VERSION``). A stamp
beside it records the version's content digest and each file's size and mtime, and carries a sha256
of itself: when the server still names the same content and no file changed, the copy is returned
with no download; anything else (another content, a touched file, a stamp that does not verify)
rebuilds it from verified objects.

:func:`upload_folder` sends a local model folder's objects (its files and their trees, in the
batches ``data add`` sends) so that the server can register it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.client.fetch import write_tree
from labvault.client.settings import spool_dir
from labvault.errors import StorageError
from labvault.refs import Digest
from labvault.services.registry.layout import FileEntry, build_version_tree, collect_path
from labvault.storage.contained import Dest
from labvault.storage.locks import file_lock

if TYPE_CHECKING:
    from labvault.client.objects import HttpObjectStore
    from labvault.entities import ModelVersion

__all__ = ["cache_root", "cached_copy", "upload_folder"]


def cache_root(url: str) -> Path:
    """The model cache for one server: its URL hashed, so that two servers' ``p/m@1.0.0`` never meet."""
    return spool_dir().parent / "models" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _stamp(folder: Path, files: list[FileEntry]) -> dict[str, list[int]]:
    out = {}
    for f in files:
        st = os.stat(folder / f.path)
        out[f.path] = [st.st_size, st.st_mtime_ns]
    return out


def _sealed(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, sort_keys=True)
    return json.dumps({"doc": doc, "sha256": hashlib.sha256(body.encode()).hexdigest()}, sort_keys=True).encode()


def _unsealed(data: bytes) -> dict[str, Any] | None:
    """The stamp's document if it verifies, else None (a hand-edited or torn stamp means: rebuild)."""
    try:
        outer = json.loads(data)
        doc = outer["doc"]
        ok = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest() == outer["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    return doc if ok and isinstance(doc, dict) else None


def _fresh(final: Path, stamp_path: Path, version: ModelVersion, files: list[FileEntry]) -> bool:
    try:
        doc = _unsealed(stamp_path.read_bytes())
        return (
            doc is not None and doc.get("content") == version.content.hex and doc.get("files") == _stamp(final, files)
        )
    except OSError:
        return False


def cached_copy(objects: HttpObjectStore, version: ModelVersion, files: list[FileEntry]) -> Path:
    """The local path of a verified copy of ``version`` (whose ``files`` the server listed), built
    from the server's objects (fetched in batches, through the verified object cache)."""
    base = cache_root(objects.transport.target.url) / version.project / version.model
    final = base / version.version
    stamp_path = base / f".{version.version}.stamp.json"
    if _fresh(final, stamp_path, version, files):  # the hot path: a few stats, no lock, no download
        return final
    top = base.parent.parent
    top.mkdir(parents=True, exist_ok=True, mode=0o700)
    with Dest.open(top) as models:
        models.sub(f"{version.project}/{version.model}").close()  # never through a link
    # One builder at a time per version: a concurrent reader never sees a half-replaced copy.
    with file_lock(base / f".{version.version}.lock", timeout=600, what=f"the cached copy of {version.ref}"):
        if _fresh(final, stamp_path, version, files):
            return final
        tmp = f".tmp-{secrets.token_hex(6)}"
        with Dest.open(base, create=False) as into:
            try:
                built = write_tree(objects, version.content, base, tmp)
                doc = {"content": version.content.hex, "files": _stamp(built, files)}
                into.remove(stamp_path.name)
                into.remove(version.version)
                into.rename(tmp, version.version)
                into.write_file(stamp_path.name, _sealed(doc))
            except OSError as exc:
                raise StorageError(f"cannot write the model cache {base}: {exc.strerror}") from exc
            finally:
                into.remove(tmp)
    return final


def upload_folder(objects: HttpObjectStore, path: Path, *, follow_links: bool) -> Digest:
    """Upload a model folder's files and trees as ``data add`` does (only what the server lacks: small
    objects in batches, big files in chunks); the folder tree's digest."""
    raw, links = collect_path(path, follow_links=follow_links)
    with objects.batch():  # each file is hashed here and read again (and checked) as it is sent
        files = [FileEntry(rel, objects.put_file(full), full.stat().st_size) for rel, full in raw]
        content, _ = build_version_tree(objects, files, links)
    return content
