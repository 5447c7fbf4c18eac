"""The write side of :class:`~labvault.client.objects.HttpObjectStore` (a mixin).

Uploads are named by the digest hashed here; the server hashes them again and refuses a mismatch.
A file larger than ``chunk_size`` goes up in pieces of one upload session (``client/uploads.py``):
an interrupted upload resumes by asking the server what it holds and sending only the rest.
Inside ``batch()`` puts are only hashed and queued; the batch asks the server once which objects it
lacks and sends those (a re-snapshot of mostly unchanged data sends the changes only): objects up to
1 MiB in framed batches of up to 1,000 objects / 16 MiB (``POST /objects/batch``, stored all or
none, so a rerun after an interruption sends only what is still missing), bigger ones one by one.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from labvault.client import frames
from labvault.client.transport import Transport
from labvault.client.uploads import changed_error, upload_file
from labvault.errors import LabvaultError, ValidationError
from labvault.refs import Digest, parse_digest
from labvault.storage.objects.fileio import CHUNK

__all__ = ["PARALLEL_BATCHES", "ObjectWrites", "in_parallel"]

_T = TypeVar("_T")

PARALLEL_BATCHES = 4  # batch requests in flight (each carries up to 1,000 objects)
_PARALLEL = 8  # requests in flight for many small objects
_MISSING_BATCH = 10_000  # digests per POST /objects/missing (the server takes up to 100,000)
_QUEUED_BYTES = 64 << 20  # a batch sends what it queued once this much is held in memory


class _Queued:
    __slots__ = ("data", "path", "size")

    def __init__(self, data: bytes | None, path: Path | None, size: int) -> None:
        self.data, self.path, self.size = data, path, size


class ObjectWrites:
    """Needs the store's transport, sizes, counters and queue, which its ``__init__`` sets."""

    transport: Transport
    chunk_size: int
    piece_size: int
    uploads_dir: Path
    uploads: int
    batches: bool
    _queue: dict[str, _Queued] | None
    _queued_bytes: int
    _depth: int
    _count: threading.Lock

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

        in_parallel(lambda group: self._put_batch([(h, todo[h]) for h in group]), small, PARALLEL_BATCHES)
        in_parallel(send, big)

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
                    raise changed_error(item.path)
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
                raise changed_error(path)
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


def in_parallel(work: Callable[[_T], None], items: list[_T], parallel: int = _PARALLEL) -> None:
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


def _hash_file(path: Path) -> tuple[Digest, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(CHUNK):
            hasher.update(block)
            size += len(block)
    return Digest(hasher.hexdigest()), size
