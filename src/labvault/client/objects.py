"""``HttpObjectStore``: the object store protocol over a server's ``/api/v1/objects``.

Uploads are named by the digest hashed here; the server hashes them again and refuses a mismatch.
A file larger than ``chunk_size`` goes up in pieces of one upload session (``client/uploads.py``):
an interrupted upload resumes by asking the server what it holds and sending only the rest.
Inside ``batch()`` puts are only hashed and queued; the batch asks the server once which objects it
lacks and sends those (a re-snapshot of mostly unchanged data sends the changes only): objects up to
1 MiB in framed batches of up to 1,000 objects / 16 MiB (``POST /objects/batch``, stored all or
none, so a rerun after an interruption sends only what is still missing), bigger ones one by one.

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
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from labvault.client import frames
from labvault.client.settings import spool_dir
from labvault.client.transport import Transport
from labvault.client.uploads import PIECE, upload_file
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

_T = TypeVar("_T")

#: Files above this size are uploaded in pieces of an upload session (client/uploads.py).
CHUNK_SIZE = 8 << 20
#: The bound of the local object cache (least recently used entries are evicted first).
CACHE_BYTES = 20 << 30
_MISSING_BATCH = 10_000  # digests per POST /objects/missing (the server takes up to 100,000)
_QUEUED_BYTES = 64 << 20  # a batch sends what it queued once this much is held in memory
_PARALLEL = 8  # requests in flight for many small objects
_PARALLEL_BATCHES = 4  # batch requests in flight (each carries up to 1,000 objects)
_WHOLE_READ = 64 << 20  # cached entries up to this size are read and verified before they are returned


def object_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/labvault/objects`` (or ``~/.cache/labvault/objects``)."""
    return spool_dir().parent / "objects"


class _Queued:
    __slots__ = ("data", "path", "size")

    def __init__(self, data: bytes | None, path: Path | None, size: int) -> None:
        self.data, self.path, self.size = data, path, size


class HttpObjectStore(BasicHousekeeping):
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
        self._queue: dict[str, _Queued] | None = None
        self._queued_bytes = 0
        self._depth = 0
        self._count = threading.Lock()

    # -- writes -------------------------------------------------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Queue the puts made inside; on a clean exit send what the server lacks."""
        if self._depth == 0:
            self._queue, self._queued_bytes = {}, 0
        self._depth += 1
        try:
            yield
            if self._depth == 1:
                self._flush()
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._queue, self._queued_bytes = None, 0

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(hashlib.sha256(data).hexdigest())
        if self._queue is None:
            self._put_whole(digest, data)
        else:
            self._enqueue(digest, _Queued(data, None, len(data)))
        return digest

    def put_file(self, path: Path) -> Digest:
        digest, size = _hash_file(path)
        if self._queue is None:
            self._send([(digest, _Queued(None, Path(path), size))])
        else:
            self._enqueue(digest, _Queued(None, Path(path), size))
        return digest

    def _enqueue(self, digest: Digest, item: _Queued) -> None:
        if self._queue is None:
            raise RuntimeError("an upload queued outside a batch")  # a programming error, never input
        if digest.hex in self._queue:
            return
        self._queue[digest.hex] = item
        if item.data is not None:
            self._queued_bytes += item.size
            if self._queued_bytes > _QUEUED_BYTES:
                self._flush()

    def _flush(self) -> None:
        if not self._queue:
            return
        items = [(Digest(h), q) for h, q in self._queue.items()]
        self._queue, self._queued_bytes = {}, 0
        self._send(items)

    def _send(self, items: list[tuple[Digest, _Queued]]) -> None:
        lacking = set(self.missing(d for d, _ in items))
        todo = {d.hex: q for d, q in items if d.hex in lacking}
        limit = min(frames.MAX_OBJECT, self.chunk_size)  # what is chunked never goes in a batch
        small = frames.batches((h, q.size) for h, q in todo.items() if q.size <= limit)
        big = [(Digest(h), q) for h, q in todo.items() if q.size > limit]

        def send(pair: tuple[Digest, _Queued]) -> None:
            digest, item = pair
            if item.data is not None:
                self._put_whole(digest, item.data)
            elif item.path is not None:
                self._put_path(digest, item.path, item.size)

        _in_parallel(lambda group: self._put_batch([(h, todo[h]) for h in group]), small, _PARALLEL_BATCHES)
        _in_parallel(send, big)

    def _put_batch(self, group: list[tuple[str, _Queued]]) -> None:
        """One ``POST /objects/batch`` of small objects; the server stores all of them or none (an
        older server without the route gets them one by one)."""
        if self.batches:
            try:
                self._put_framed(group)
                return
            except LabvaultError as err:
                if not frames.no_batch_route(err):
                    raise
                self.batches = False
        for hexd, item in group:
            if item.data is not None:
                self._put_whole(Digest(hexd), item.data)
            elif item.path is not None:
                self._put_path(Digest(hexd), item.path, item.size)

    def _put_framed(self, group: list[tuple[str, _Queued]]) -> None:
        body = bytearray(frames.MAGIC)
        for hexd, item in group:
            data = item.data
            if data is None and item.path is not None:
                data = Path(item.path).read_bytes()
                if hashlib.sha256(data).hexdigest() != hexd:
                    raise _changed(item.path)
            body += frames.frame(hexd, data or b"")
        with self._count:
            self.uploads += 1
        # Safe to repeat (storing an object twice is a no-op): the key lets the transport retry it.
        self.transport.request(
            "POST",
            "/objects/batch",
            content=bytes(body),
            headers={"Content-Type": "application/octet-stream"},
            idempotency_key=uuid.uuid4().hex,
        )

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

        _in_parallel(fetch_group, groups, _PARALLEL_BATCHES)
        _in_parallel(fetch, alone)
        return len(wanted)

    def missing(self, digests: Iterable[Digest]) -> list[str]:
        """The hex digests of those the server does not store."""
        wanted = list(dict.fromkeys(d.hex for d in digests))
        out: list[str] = []
        for start in range(0, len(wanted), _MISSING_BATCH):
            part = wanted[start : start + _MISSING_BATCH]
            answer = self.transport.request("POST", "/objects/missing", json={"digests": part})
            out += [str(parse_digest(str(m), allow_prefix=False).prefix) for m in _list(answer, "missing")]
        return out

    def _put_whole(self, digest: Digest, data: bytes) -> None:
        with self._count:
            self.uploads += 1
        self.transport.request(
            "PUT", f"/objects/{digest.hex}", content=data, headers={"Content-Type": "application/octet-stream"}
        )

    def _put_path(self, digest: Digest, path: Path, size: int) -> None:
        if size <= self.chunk_size:
            data = Path(path).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest.hex:
                raise _changed(path)
            self._put_whole(digest, data)
            return
        self._put_chunked(digest, path)

    def _put_chunked(self, digest: Digest, path: Path) -> None:
        def sent() -> None:
            with self._count:
                self.uploads += 1

        upload_file(
            self.transport,
            digest,
            path,
            chunk_size=self.chunk_size,
            piece_size=self.piece_size,
            state_dir=self.uploads_dir,
            sent=sent,
        )

    # -- reads --------------------------------------------------------------------------------
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
        with self.transport.stream("GET", f"/objects/{digest.hex}") as response:
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
        response = self.transport.request("GET", f"/objects/{digest.hex}", raw=True)
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


def _in_parallel(work: Callable[[_T], None], items: list[_T], parallel: int = _PARALLEL) -> None:
    """``work`` on every item, a few requests in flight at once (small objects are latency-bound);
    the first failure is raised once the others in flight have finished."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=min(parallel, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _list(answer: object, key: str) -> list[object]:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, list):
        raise ValidationError(f"the server's answer has no {key!r} list", hint="is LABVAULT_URI a labvault server?")
    return value


def _length(response: httpx.Response) -> int | None:
    text = response.headers.get("content-length")
    return int(text) if text is not None and text.isdigit() else None


def _drain_verified(response: httpx.Response, fd: int, digest: Digest) -> None:
    hasher = hashlib.sha256()
    for block in response.iter_bytes(CHUNK):
        hasher.update(block)
        write_all(fd, block)
    if hasher.hexdigest() != digest.hex:
        raise _corrupt(digest, "as downloaded")


def _hash_file(path: Path) -> tuple[Digest, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(CHUNK):
            hasher.update(block)
            size += len(block)
    return Digest(hasher.hexdigest()), size


def _corrupt(digest: Digest, where: str) -> IntegrityError:
    return IntegrityError(
        f"object {digest} does not match its sha256 {where}",
        hint="run the command again; if it persists, run `labvault fsck` on the server's machine",
    )


def _changed(path: Path) -> ValidationError:
    return ValidationError(f"{path} changed while it was being uploaded", hint="run the command again")


def _server_side(what: str) -> ValidationError:
    return ValidationError(
        f"`{what}` runs on the server's machine, not through a server",
        hint=f"run `labvault {what}` where the server's vault is (unset LABVAULT_URI)",
    )
