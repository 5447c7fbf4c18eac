"""``HttpObjectStore``: the object store protocol over a server's ``/api/v1/objects``.

Writes (hashed here, queued inside ``batch()`` and sent as the server lacks them, large files in
resumable upload sessions) are its write side, ``client/object_writes.py``.

Reads go through a local read-through cache under the user's cache folder
(``$XDG_CACHE_HOME/labvault/objects``, else ``~/.cache/labvault/objects``): every download and every
cache hit is verified by sha256 (a mismatch is IntegrityError, exit 5), so a second checkout of the
same data downloads nothing. ``prefetch`` fills the cache with many small objects per request
(``POST /objects/batch/get``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from labvault.client import frames
from labvault.client.object_writes import PARALLEL_BATCHES, ObjectWrites, in_parallel
from labvault.client.settings import spool_dir
from labvault.client.transport import CLIENT_VERIFIES, Transport
from labvault.client.uploads import PIECE
from labvault.entities import ObjectInfo
from labvault.errors import ExternalError, IntegrityError, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest, parse_digest
from labvault.storage.contained import Dest
from labvault.storage.objects.cache import ObjectCache
from labvault.storage.objects.fileio import CHUNK, VerifyingReader, write_all
from labvault.storage.objects.materialize import materialize_into
from labvault.storage.objects.protocol import BasicHousekeeping, MaterializeMode

if TYPE_CHECKING:
    import httpx  # only annotated here; transport.py imports it (and says how)

__all__ = ["CHUNK_SIZE", "HttpObjectStore", "object_cache_dir"]

#: Files above this size are uploaded in pieces of an upload session (client/uploads.py).
CHUNK_SIZE = 8 << 20
#: The bound of the local object cache (least recently used entries are evicted first).
CACHE_BYTES = 20 << 30
_WHOLE_READ = 64 << 20  # cached entries up to this size are read and verified before they are returned


def object_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/labvault/objects`` (or ``~/.cache/labvault/objects``)."""
    return spool_dir().parent / "objects"


class HttpObjectStore(ObjectWrites, BasicHousekeeping):
    """Objects of the vault behind a server; what the server does not offer (listing, deleting,
    prefixes) is a usage error saying to run it on the server's machine."""

    def __init__(
        self,
        transport: Transport,
        *,
        cache_dir: Path | None = None,
        cache_bytes: int = CACHE_BYTES,
        chunk_size: int = CHUNK_SIZE,
        piece_size: int = PIECE,
    ) -> None:
        self.transport = transport
        self.chunk_size = chunk_size
        self.piece_size = piece_size
        self.cache = ObjectCache(cache_dir or object_cache_dir(), cache_bytes)
        self.uploads_dir = self.cache.path.parent / "uploads"  # the ids of uploads in progress (client/uploads.py)
        self.downloads = 0  # objects fetched over the network by this process
        self.uploads = 0  # upload requests sent (PUTs of whole objects and chunks, and batches)
        self.batches = True  # False once the server says it has no batch routes (an older server)
        self._queue = None
        self._queued_bytes = 0
        self._depth = 0
        self._count = threading.Lock()

    # -- reads --------------------------------------------------------------------------------
    def prefetch(self, digests: Iterable[Digest]) -> int:
        """Download into the cache, several at a time, the objects it does not hold; how many."""
        wanted = [d for d in dict.fromkeys(digests) if not self.cache.has(d.hex)]
        groups = [wanted[i : i + frames.MAX_COUNT] for i in range(0, len(wanted), frames.MAX_COUNT)]
        alone: list[Digest] = []

        def fetch_group(group: list[Digest]) -> None:
            got: dict[str, bytes]
            skipped: list[str]
            if not self.batches:
                got, skipped = {}, [d.hex for d in group]
            else:
                try:
                    got, skipped = frames.fetch_batch(
                        self.transport, group, where=f"the server at {self.transport.target.url}"
                    )
                except LabvaultError as err:
                    if not frames.no_batch_route(err):
                        raise
                    self.batches = False
                    got, skipped = {}, [d.hex for d in group]
            for hexd, data in got.items():  # verified by the parser
                self.cache.put(hexd, data)
            with self._count:
                self.downloads += len(got)
                alone.extend(Digest(h) for h in skipped)

        def fetch(digest: Digest) -> None:
            self.open(digest).close()

        in_parallel(fetch_group, groups, PARALLEL_BATCHES)
        in_parallel(fetch, alone)
        return len(wanted)

    def has(self, digest: Digest) -> bool:
        try:
            self.transport.request("HEAD", f"/objects/{digest.hex}", raw=True)
        except NotFound:
            return False
        return True

    def info(self, digest: Digest) -> ObjectInfo:
        response = self.transport.request("HEAD", f"/objects/{digest.hex}", raw=True)
        return ObjectInfo(digest, int(response.headers.get("content-length", "0")), 0.0)

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        """The object's bytes from the cache, else downloaded into it; verified as they are read."""
        cached = self._open_cached(digest)
        if cached is not None:
            return cached
        with self.transport.stream("GET", f"/objects/{digest.hex}", headers=CLIENT_VERIFIES) as response:
            with self._count:
                self.downloads += 1
            size = _length(response)
            if size is not None and self.cache.fits(size):
                self.cache.fill(digest.hex, lambda fd: _drain_verified(response, fd, digest))
            else:
                spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
                try:
                    _drain_verified(response, spool.fileno(), digest)
                except BaseException:
                    spool.close()
                    raise
                spool.seek(0)
                return spool
        cached = self._open_cached(digest)
        if cached is None:  # evicted at once by another process: read it again, uncached
            return io.BytesIO(self._download(digest))
        return cached

    def _open_cached(self, digest: Digest) -> BinaryIO | None:
        raw = self.cache.open_entry(digest.hex)
        if raw is None:
            return None
        if os.fstat(raw.fileno()).st_size <= _WHOLE_READ:
            data = raw.readall()
            raw.close()
            if hashlib.sha256(data).hexdigest() != digest.hex:
                self.cache.remove(digest.hex)  # corrupt in the cache: fetched again
                return None
            return io.BytesIO(data)

        def mismatch() -> None:
            self.cache.remove(digest.hex)
            raise _corrupt(digest, "in the local cache (removed; run the command again)")

        return io.BufferedReader(VerifyingReader(raw, digest.hex, mismatch), CHUNK)  # type: ignore[return-value]

    def _download(self, digest: Digest) -> bytes:
        response = self.transport.request("GET", f"/objects/{digest.hex}", raw=True, headers=CLIENT_VERIFIES)
        with self._count:
            self.downloads += 1
        data = bytes(response.content)
        if hashlib.sha256(data).hexdigest() != digest.hex:
            raise _corrupt(digest, "as downloaded")
        return data

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        with self.open(digest, verify=verify) as f:
            return f.read()

    def materialize(self, digest: Digest, dest: Path, *, mode: MaterializeMode = "copy") -> None:
        with Dest.open(Path(dest).parent, create=False) as into:
            materialize_into(self, digest, into, Path(dest).name)

    def verify(self, digest: Digest) -> bool:
        try:
            self._download(digest)
        except IntegrityError:
            return False
        return True

    def touch(self, digest: Digest) -> None:
        """The server refreshes what it is sent; gc runs there."""

    def resolve_prefix(self, prefix: str) -> Digest:
        ref = parse_digest(prefix)
        if not ref.is_full:  # the server resolves it among its objects; its answer is checked here
            found = self.transport.request("GET", f"/objects/resolve/sha256:{ref.prefix}")
            text = found.get("digest") if isinstance(found, dict) else None
            hexd = text.removeprefix("sha256:") if isinstance(text, str) else ""
            if len(hexd) != 64 or not hexd.startswith(ref.prefix) or hexd.strip("0123456789abcdef"):
                raise ExternalError(
                    f"the server resolved sha256:{ref.prefix} to {text!r}", hint="is it a labvault server?"
                )
            return Digest(hexd)
        digest = Digest(ref.prefix)
        if not self.has(digest):
            raise NotFound(f"no object {digest}", hint="check the digest")
        return digest

    def iter_objects(self) -> Iterator[ObjectInfo]:
        raise _server_side("object ls")

    def delete(self, digest: Digest) -> None:
        raise _server_side("gc")

    def close(self) -> None:
        self.cache.close()


def _length(response: httpx.Response) -> int | None:
    text = response.headers.get("content-length")
    return int(text) if text is not None and text.isdigit() else None


def _drain_verified(response: httpx.Response, fd: int, digest: Digest) -> None:
    hasher = hashlib.sha256()
    for block in response.iter_bytes():  # as read (up to 1 MiB): joining them would copy each byte again
        hasher.update(block)
        write_all(fd, block)
    if hasher.hexdigest() != digest.hex:
        raise _corrupt(digest, "as downloaded")


def _corrupt(digest: Digest, where: str) -> IntegrityError:
    return IntegrityError(
        f"object {digest} does not match its sha256 {where}",
        hint="run the command again; if it persists, run `labvault fsck` on the server's machine",
    )


def _server_side(what: str) -> ValidationError:
    return ValidationError(
        f"`{what}` runs on the server's machine, not through a server",
        hint=f"run `labvault {what}` where the server's vault is (unset LABVAULT_URI)",
    )
